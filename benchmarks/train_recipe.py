"""The training recipe, one measured change at a time.

Each recipe is a set of config overrides on top of a config file (default ``config/config.yaml``);
every (recipe, seed) trains one model with the project's own training code (``jobs.train_job`` and
``train.train``, as the ``train_model`` rule does) and is scored on the same held-out prompts (2048
by default, drawn from their own seed): the normalised error at k = 2d and at the last k, beside
the free references (predict 0, averaging, 3-NN, least squares). ``--curve-every N`` also scores
the model every N steps (on the first 512 prompts) while it trains.

    .venv/bin/python benchmarks/train_recipe.py --recipes old batch64 ... [--seeds 0 1 2]
        [--task linear_regression] [--variant softmax] [--jobs 2] [--curve-every 500]
        [--set train.lr=1e-3 --name mine] [--out results.parquet]

``--recipes`` names entries of :data:`LADDER` (each adds one change to the one before) or
:data:`SIDE` (``--list`` prints them); ``--set KEY=VALUE``
(dotted config keys, values parsed as YAML, ``task.`` for the trained task's section) defines one
more recipe named by ``--name``. Jobs run in parallel processes of one thread each (``--jobs``).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from iclbench.baselines import build_baseline
from iclbench.evaluate import make_prompts, squared_error
from iclbench.jobs import train_job
from iclbench.seeding import generator
from iclbench.train import train

EVAL_SEED = 2026
CURVE_PROMPTS = 512

#: the default recipe before this benchmark existed, stated in full so that the ladder does not
#: move when config/config.yaml does
OLD: dict[str, Any] = {
    "train.steps": 2500, "train.batch_size": 32, "train.lr": 5e-4, "train.warmup_steps": 500,
    "train.lr_schedule": "cosine", "train.grad_clip": 1.0,
    "model.n_embd": 64, "model.n_layer": 3, "model.n_head": 2,
    "train.dims_curriculum": {"start": 2, "inc": 1, "interval": 250},
    "task.points_curriculum": "stages of 250",  # resolved per task by _stages
    "init.read_in": "gpt2",
}


def _ladder() -> dict[str, dict[str, Any]]:
    """Named recipes; each row adds one change to the row before it."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("old", {}),
        ("steps6000", {"train.steps": 6000}),
        ("batch64", {"train.batch_size": 64}),
        ("read_in_linear", {"init.read_in": "linear"}),
        ("lr1e-3", {"train.lr": 1e-3}),
        ("heads4", {"model.n_head": 4}),
        # the model's own read-in initialisation: nn.Linear's weights, zero bias
        ("read_in_zero_bias", {"init.read_in": "default"}),
        ("lr2e-3", {"train.lr": 2e-3}),  # config/config.yaml's recipe
    ]
    ladder, current = {}, dict(OLD)
    for name, change in steps:
        current = {**current, **change}
        ladder[name] = dict(current)
    return ladder


LADDER = _ladder()
#: recipes off the ladder: (the ladder row they change, the change)
SIDE: dict[str, tuple[str, dict[str, Any]]] = {
    "heads4_read_in_gpt2": ("heads4", {"init.read_in": "gpt2"}),
    # with --variant relu: the config's relu has qk_norm; these take it away or change the init
    "relu_without_qk_norm": ("lr2e-3", {"variants.relu.qk_norm": False}),
    "relu_read_in_with_bias": ("lr2e-3", {"init.read_in": "linear"}),
    "relu_read_in_gpt2": ("lr2e-3", {"init.read_in": "gpt2"}),
    "steps12000": ("lr2e-3", {"train.steps": 12000}),
    "layers6": ("lr2e-3", {"model.n_layer": 6}),
    "heads8": ("heads4", {"model.n_head": 8}),
    "lr1e-3_steps12000": ("lr1e-3", {"train.steps": 12000}),
}
RECIPES = {**LADDER, **{name: {**LADDER[base], **change} for name, (base, change) in SIDE.items()}}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    node = tree
    for key in path:
        if key not in node or not isinstance(node[key], dict):
            raise KeyError(f"--set {dotted}: no config section {key!r}")
        node = node[key]
    node[leaf] = value


def _stages(task: Mapping[str, Any], interval: int) -> dict[str, int]:
    """The task's points curriculum with its stages ``interval`` steps long."""
    return {**task["points_curriculum"], "interval": interval}


def params_for(raw: Mapping[str, Any], task: str, variant: str,
               overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``train_model`` rule's params for ``task``/``variant`` with ``overrides`` applied,
    and the benchmark's own knobs (``init.*``)."""
    cfg = copy.deepcopy(dict(raw))
    knobs: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith("init."):
            knobs[key] = value
        elif key == "task.points_curriculum" and value == "stages of 250":
            cfg["tasks"][task]["points_curriculum"] = _stages(cfg["tasks"][task], 250)
        elif key.startswith("task."):
            _set(cfg["tasks"][task], key[len("task."):], value)
        else:
            _set(cfg, key, value)
    params = {"task": cfg["tasks"][task], "n_dims": cfg["n_dims"], "model": cfg["model"],
              "train": cfg["train"], "variant_options": cfg["variants"][variant],
              "device": cfg["device"]}
    return params, knobs


def _read_in(model: torch.nn.Module, how: str, rng: torch.Generator) -> torch.nn.Module:
    """Draw the read-in layer again (``default``: leave the model's own, nn.Linear's weights and
    a zero bias): ``gpt2`` N(0, 0.02) weights and zero bias, ``linear``,
    ``nn.Linear``'s own U(-1/sqrt(d), 1/sqrt(d)) for both (Garg et al.'s code), or
    ``linear_zero_bias``, those weights and a zero bias."""
    layer = model.read_in
    with torch.no_grad():
        if how == "gpt2":
            torch.nn.init.normal_(layer.weight, 0.0, 0.02, generator=rng)
            torch.nn.init.zeros_(layer.bias)
        elif how in ("linear", "linear_zero_bias"):
            bound = layer.in_features ** -0.5
            torch.nn.init.uniform_(layer.weight, -bound, bound, generator=rng)
            if how == "linear":
                torch.nn.init.uniform_(layer.bias, -bound, bound, generator=rng)
            else:
                torch.nn.init.zeros_(layer.bias)
        else:
            raise ValueError(f"init.read_in: {how!r}; known are gpt2, linear, linear_zero_bias")
    return model


def run_one(raw: Mapping[str, Any], task: str, variant: str, name: str,
            overrides: Mapping[str, Any], seed: int, n_prompts: int,
            curve_every: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    torch.set_num_threads(1)
    params, knobs = params_for(raw, task, variant, overrides)
    if curve_every:
        params["train"] = {**params["train"], "log_every": curve_every}
    job = train_job(task, variant, params)
    n_points = int(params["task"]["n_points"])
    prompts = make_prompts(job.task, task, n_prompts, n_points, EVAL_SEED)
    xs, ys = prompts.xs[0], prompts.ys[0]
    k2d = min(2 * int(params["n_dims"]), n_points - 1)
    kd1 = int(params["n_dims"]) - 1

    def errors(model: torch.nn.Module, count: int) -> torch.Tensor:
        with torch.inference_mode():
            preds = torch.cat([model(xs[s:s + 256], ys[s:s + 256]) for s in range(0, count, 256)])
        return squared_error(preds, ys[:count]).mean(0) / job.task.normaliser

    curve: list[dict[str, Any]] = []

    def on_log(step: int, model: torch.nn.Module) -> None:
        model.eval()
        err = errors(model, min(CURVE_PROMPTS, n_prompts))
        curve.append({"recipe": name, "seed": seed, "step": step, "k2d": float(err[k2d]),
                      "kd1": float(err[kd1]), "last": float(err[-1])})

    def prepare(model: torch.nn.Module) -> torch.nn.Module:
        if knobs.get("init.read_in", "default") != "default":
            model = _read_in(model, knobs["init.read_in"], generator(seed, "bench-read_in", task))
        return job.variant.prepare_training(model, job.options)

    start = time.perf_counter()
    model, log = train(job.task, job.model_spec, job.train, job.curriculum, seed, task, job.device,
                       progress=False, prepare=prepare,
                       on_log=on_log if curve_every else None)
    wall = time.perf_counter() - start
    model = job.variant.for_inference(model, job.options)
    err = errors(model, n_prompts)
    row = {"recipe": name, "task": task, "variant": variant, "seed": seed,
           "steps": job.train.steps, "batch": job.train.batch_size, "k": k2d,
           "error_kd1": float(err[kd1]), "error_k2d": float(err[k2d]), "error_last": float(err[-1]),
           "last_k": n_points - 1, "final_loss": float(log["loss"].iloc[-1]),
           "wall_s": round(wall, 1)}
    return row, curve


def references(raw: Mapping[str, Any], task: str, n_prompts: int) -> pd.DataFrame:
    """The free references on the benchmark's prompts, at k = 2d and the last k."""
    params, _ = params_for(raw, task, "softmax", {})
    job = train_job(task, "softmax", params)
    n_points = int(params["task"]["n_points"])
    prompts = make_prompts(job.task, task, n_prompts, n_points, EVAL_SEED)
    xs, ys = prompts.xs[0], prompts.ys[0]
    k2d = min(2 * int(params["n_dims"]), n_points - 1)
    kd1 = int(params["n_dims"]) - 1
    rows = []
    for name in ("zero", "averaging", "knn3", "least_squares"):
        err = squared_error(build_baseline(name).predict(xs, ys), ys).mean(0) / job.task.normaliser
        rows.append({"reference": name, "error_kd1": float(err[kd1]),
                     "error_k2d": float(err[k2d]), "error_last": float(err[-1])})
    d = int(params["n_dims"])
    if task == "linear_regression":  # one optimally sized gradient-descent step from w = 0
        rows.append({"reference": "one GD step", "error_kd1": (d + 1) / (kd1 + d + 1),
                     "error_k2d": (d + 1) / (k2d + d + 1),
                     "error_last": (d + 1) / (n_points - 1 + d + 1)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--task", default="linear_regression")
    ap.add_argument("--variant", default="softmax")
    ap.add_argument("--recipes", nargs="*", default=[])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", default="custom")
    ap.add_argument("--base", default=None, help="ladder recipe that --set starts from "
                    "(default: the config file as it is)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--prompts", type=int, default=2048)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--curve-every", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the rows (and curves) to this Parquet")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, recipe in RECIPES.items():
            print(name, recipe)
        return
    raw = yaml.safe_load(Path(args.config).read_text())
    recipes: dict[str, dict[str, Any]] = {}
    for name in args.recipes:
        if name not in RECIPES:
            sys.exit(f"unknown recipe {name!r}; known are: {', '.join(RECIPES)}")
        recipes[name] = RECIPES[name]
    if args.set:
        custom = dict(RECIPES[args.base]) if args.base else {}
        for item in args.set:
            key, _, value = item.partition("=")
            custom[key] = yaml.safe_load(value)
        recipes[args.name] = custom
    if not recipes:
        sys.exit("name --recipes or give --set")
    jobs = [(name, r, seed) for name, r in recipes.items() for seed in args.seeds]
    print(f"{len(jobs)} jobs on {args.task}/{args.variant}, {args.jobs} at a time", flush=True)
    rows, curves = [], []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(run_one, raw, args.task, args.variant, name, r, seed,
                               args.prompts, args.curve_every) for name, r, seed in jobs]
        for fut in futures:
            row, curve = fut.result()
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)
            rows.append(row)
            curves.extend(curve)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
        print(references(raw, args.task, args.prompts).to_string(index=False))
        if curves:
            print(pd.DataFrame(curves).pivot_table(index="step", columns=["recipe", "seed"],
                                                   values=["kd1", "k2d"]).round(3).to_string())
    if args.out:
        table.to_parquet(args.out)
        if curves:
            pd.DataFrame(curves).to_parquet(Path(args.out).with_suffix(".curves.parquet"))


if __name__ == "__main__":
    main()
