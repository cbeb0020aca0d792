"""Property-based fuzzing of the config: every generated config is either rejected when the DAG
is built, with a :class:`ConfigError` that names a config key, or runs the first job of each rule
without an unhandled exception.

Configs are the smoke config with one to four keys changed, to values drawn valid and invalid
(zero, negative, huge, NaN, infinite, wrong type, missing, unknown). Seeded (``derandomize``), with
a bounded number of examples by default; ``pytest -m fuzz`` runs many more
(``ICLBENCH_FUZZ_EXAMPLES``, default 2000 and 60).
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iclbench import jobs
from iclbench.config import (
    ConfigError,
    canonical,
    check,
    finetune_tasks,
    finetune_train,
    task_train,
    task_variants,
    validate_schema,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
TOP_KEYS = set(SCHEMA["properties"])
MANY = int(os.environ.get("ICLBENCH_FUZZ_EXAMPLES", "0"))

# values that are wrong for most keys
JUNK = st.sampled_from([0, -1, -(10**9), 10**15, 2**63, 2**200, 0.5, -0.5, 1e300, math.nan,
                        math.inf, -math.inf, "x", "", None, True, [], {}, [1, 2], {"a": 1}])


def ints(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(lo, hi), JUNK)


def floats(lo: float, hi: float) -> st.SearchStrategy[Any]:
    return st.one_of(st.floats(lo, hi, allow_nan=False), JUNK)


def small_int_lists(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(st.integers(lo, hi), min_size=0, max_size=3), JUNK)


#: (path, values); a path into the smoke config, values valid and invalid
KEYS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("seeds", st.one_of(st.lists(st.integers(0, 3), max_size=3), JUNK)),
    ("n_dims", ints(1, 10**6)),
    ("device", st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "tpu", "gpu", "", 3])),
    ("threads", ints(1, 4)),
    ("tasks.linear_regression.n_points", ints(1, 10**7)),
    ("tasks.linear_regression.points_curriculum.start", ints(1, 40)),
    ("tasks.linear_regression.points_curriculum.inc", ints(0, 10)),
    ("tasks.linear_regression.points_curriculum.interval", ints(1, 10**9)),
    ("tasks.linear_regression.variants", st.one_of(
        st.lists(st.sampled_from(["softmax", "relu", "nystrom", "combiner", "int8", "foo"]),
                 max_size=3), JUNK)),
    ("tasks.decision_tree.options.depth", ints(1, 80)),
    ("tasks.decision_tree.train.steps", ints(1, 10**12)),
    ("tasks.relu_2nn.options.hidden", ints(1, 10**9)),
    ("tasks.sparse_linear_regression.options.sparsity", ints(0, 10)),
    ("tasks.linear_regression.options.foo", ints(0, 1)),
    ("model.n_embd", ints(1, 10**6)),
    ("model.n_layer", ints(1, 10**4)),
    ("model.n_head", ints(1, 64)),
    ("train.steps", ints(1, 10**12)),
    ("train.batch_size", ints(1, 10**8)),
    ("train.lr", floats(1e-8, 10.0)),
    ("train.warmup_steps", ints(0, 10**6)),
    ("train.lr_schedule", st.sampled_from(["constant", "cosine", "linear", 1])),
    ("train.grad_clip", floats(0.0, 100.0)),
    ("train.log_every", ints(1, 100)),
    ("train.checkpoint_every", ints(1, 100)),
    ("train.dims_curriculum.start", ints(1, 20)),
    ("train.dims_curriculum.interval", ints(1, 100)),
    ("variants.nystrom.landmarks", ints(1, 10**5)),
    ("variants.nystrom.chunk", ints(1, 10**7)),
    ("variants.nystrom.pinv_iterations", ints(0, 10**4)),
    ("variants.combiner.block_size", st.one_of(st.none(), ints(1, 10**6))),
    ("variants.int8.weight_bits", ints(1, 64)),
    ("variants.int8.start_step", ints(0, 10**6)),
    ("variants.int8.ema_decay", floats(0.0, 1.0)),
    ("variants.relu.qk_norm", st.sampled_from([True, False, 1, "yes", None])),
    ("swapped.nystrom.landmarks", ints(1, 10**5)),
    ("swapped.nystrom.landmarks_source", st.sampled_from(["segments", "learned", "x"])),
    ("finetuned.nystrom.landmarks", ints(1, 10**5)),
    ("finetune.steps", ints(1, 10**9)),
    ("finetune.curve_every", ints(1, 20)),
    ("finetune.curve_prompts", ints(1, 10**9)),
    ("eval.n_prompts", ints(1, 10**10)),
    ("eval.n_prompts_ood", ints(1, 10**10)),
    ("eval.batch_size", ints(1, 10**9)),
    ("eval.bootstrap", ints(1, 10**11)),
    ("eval.confidence", floats(0.0, 1.0)),
    ("eval.seed", ints(0, 2**64)),
    ("baselines.knn3.k", ints(0, 10**6)),
    ("baselines.gd_2nn.hidden", ints(1, 10**8)),
    ("baselines.lasso.alpha", floats(0.0, 10.0)),
    ("baselines.xgboost.max_depth", ints(0, 100)),
    ("ood.shift.levels", st.one_of(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=3),
                                   JUNK)),
    ("ood.scale_y.levels", st.one_of(st.lists(st.floats(-10, 10), max_size=3), JUNK)),
    ("profile.context_tokens", small_int_lists(1, 10**7)),
    ("profile.batch_sizes", small_int_lists(1, 10**6)),
    ("profile.max_batch_tokens", ints(1, 10**9)),
    ("profile.min_run_time", floats(0.0, 10.0)),
    ("figures.icl_curves.dpi", ints(1, 10**5)),
    ("figures.icl_curves.panel_width", floats(0.0, 10**4)),
    ("figures.errors_at_k.n_examples", ints(-100, 100)),
    ("resources.train_model.mem_mb", ints(1, 10**6)),
]
DELETE, UNKNOWN = object(), object()


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is DELETE:
        node.pop(last, None)
    elif value is UNKNOWN:
        node[last + "_typo"] = 1
    else:
        node[last] = value


@st.composite
def mutations(draw: st.DrawFn, keys: list[tuple[str, st.SearchStrategy[Any]]] = KEYS
              ) -> list[tuple[str, Any]]:
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4,
                           unique_by=lambda kv: kv[0]))
    out = []
    for path, values in chosen:
        kind = draw(st.sampled_from(["value"] * 8 + ["delete", "unknown"]))
        out.append((path, draw(values) if kind == "value" else
                    DELETE if kind == "delete" else UNKNOWN))
    return out


def mutated(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    raw = copy.deepcopy(SMOKE)
    for path, value in changes:
        _set(raw, path, value)
    return raw


KEY_NAMED = re.compile(r"(^|[\s(`'])(" + "|".join(sorted(TOP_KEYS)) + r")(\b|_typo)")


def build_dag_checks(raw: dict[str, Any]) -> bool:
    """What ``common.smk`` does when the DAG is built; True if the config passes, else the
    error must be a ConfigError that names a config key."""
    try:
        validate_schema(raw, SCHEMA)
        check(raw)
    except ConfigError as err:
        assert KEY_NAMED.search(str(err)), f"no config key named in: {err}"
        return False
    return True


@settings(max_examples=MANY or 400, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_generated_configs_are_accepted_or_rejected_naming_a_key(
        changes: list[tuple[str, Any]]) -> None:
    build_dag_checks(mutated(changes))


@pytest.mark.fuzz
@settings(max_examples=max(MANY, 2000), derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_many_generated_configs(changes: list[tuple[str, Any]]) -> None:
    build_dag_checks(mutated(changes))


# ------------------------------------------------------------------ running the first jobs
#: keys that set sizes, with values small enough to run in a test (the rest of KEYS is the same)
SMALL: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("n_dims", st.integers(1, 8)),
    ("tasks.linear_regression.n_points", st.integers(1, 30)),
    ("tasks.linear_regression.points_curriculum.start", st.integers(1, 30)),
    ("tasks.linear_regression.points_curriculum.inc", st.integers(0, 5)),
    ("tasks.linear_regression.variants", st.lists(
        st.sampled_from(["softmax", "relu", "nystrom", "combiner", "int8"]), min_size=1,
        max_size=3, unique=True)),
    ("model.n_embd", st.sampled_from([4, 8, 12, 16, 24])),
    ("model.n_layer", st.integers(1, 2)),
    ("model.n_head", st.sampled_from([1, 2, 4])),
    ("train.batch_size", st.integers(1, 32)),
    ("train.lr", st.floats(1e-6, 1.0)),
    ("train.grad_clip", st.floats(0.0, 10.0)),
    ("variants.nystrom.landmarks", st.integers(1, 24)),
    ("variants.nystrom.chunk", st.integers(1, 64)),
    ("variants.nystrom.pinv_iterations", st.integers(0, 8)),
    ("variants.combiner.block_size", st.one_of(st.none(), st.integers(1, 40))),
    ("variants.int8.weight_bits", st.integers(1, 10)),
    ("variants.int8.ema_decay", st.floats(0.0, 1.0)),
    ("swapped.nystrom.landmarks", st.integers(1, 24)),
    ("finetuned.nystrom.landmarks", st.integers(1, 12)),
    ("finetune.curve_prompts", st.integers(1, 64)),
    ("eval.n_prompts", st.integers(1, 80)),
    ("eval.n_prompts_ood", st.integers(1, 80)),
    ("eval.batch_size", st.integers(1, 100)),
    ("eval.bootstrap", st.integers(1, 200)),
    ("eval.confidence", st.floats(0.0, 1.0)),
    ("baselines.knn3.k", st.integers(0, 20)),
    ("ood.shift.levels", st.lists(st.floats(-1e3, 1e3), max_size=3)),
    ("ood.scale_y.levels", st.lists(st.floats(-10, 10), max_size=3)),
    ("profile.context_tokens", st.lists(st.integers(1, 300), max_size=3)),
    ("profile.batch_sizes", st.lists(st.integers(1, 8), max_size=2)),
    ("figures.icl_curves.dpi", st.integers(1, 100)),
    ("figures.errors_at_k.n_examples", st.integers(-40, 40)),
]


def tiny_budget(raw: dict[str, Any]) -> dict[str, Any]:
    """The same config with its time (not its sizes) cut: a few steps, one timed run."""
    raw = copy.deepcopy(raw)
    raw["train"]["steps"] = min(raw["train"]["steps"], 3)
    for t in raw["tasks"].values():
        if "steps" in (t.get("train") or {}):
            t["train"]["steps"] = min(t["train"]["steps"], 3)
    if raw.get("finetune"):
        raw["finetune"]["steps"] = min(raw["finetune"]["steps"], 3)
    raw["profile"].update(min_run_time=0.001, replicates=1, warmup=0.0)
    for name, cap in (("gd_2nn", "steps"), ("xgboost", "n_estimators"), ("lasso", "max_iter")):
        if name in raw["baselines"]:
            raw["baselines"][name][cap] = min(int(raw["baselines"][name].get(cap, 3)), 3)
    return raw


def run_first_jobs(raw: dict[str, Any], out: Path) -> None:
    """The first job of each rule, called as the rules call them (``workflow/rules/*.smk``)."""
    from iclbench.baselines import BASELINES
    from iclbench.figures import FIGURES
    from iclbench.ood import IN_DISTRIBUTION, OOD

    raw = canonical(tiny_budget(raw))
    task = next(iter(raw["tasks"]))
    n_dims = raw["n_dims"]
    oods = [o for o in [IN_DISTRIBUTION, *raw["ood"]] if OOD.get(o).applies_to(task)]
    prompts = []
    for ood in oods:
        prompts.append(out / f"data-{ood}.safetensors")
        jobs.sample_eval_prompts(task, raw["tasks"][task], n_dims, raw["eval"], ood, prompts[-1],
                                 raw["ood"].get(ood))
    evals, models = [], {}
    for variant in task_variants(raw, task)[:1] + (["softmax"] if "softmax" in task_variants(
            raw, task) and task_variants(raw, task)[0] != "softmax" else []):
        models[variant] = out / f"{variant}.safetensors"
        params = {"task": raw["tasks"][task], "n_dims": n_dims, "model": raw["model"],
                  "train": task_train(raw, task), "variant_options": raw["variants"][variant],
                  "device": raw["device"]}
        jobs.train_model(task, variant, 0, params, 1, models[variant], out / f"{variant}.json",
                         out / f"{variant}-log.parquet", out / f"{variant}.ckpt")
    first = task_variants(raw, task)[0]
    runs = [(first, "trained", models[first], raw["variants"][first])]
    if "softmax" in models and raw["swapped"]:
        name = next(iter(raw["swapped"]))
        runs.append((name, "swapped", models["softmax"], raw["swapped"][name]))
    curves = []
    if "softmax" in models and task in finetune_tasks(raw):
        name = next(iter(raw["finetuned"]))
        params = {"task": raw["tasks"][task], "n_dims": n_dims,
                  "train": finetune_train(raw, task),
                  "curve": {k: raw["finetune"][k] for k in ("curve_every", "curve_prompts")},
                  "variant_options": raw["finetuned"][name], "device": raw["device"]}
        curves.append(out / "conversion.parquet")
        jobs.finetune_model(task, name, 0, params, 1, models["softmax"], out / "ft.safetensors",
                            out / "ft.json", out / "ft-log.parquet", curves[-1], out / "ft.ckpt")
        runs.append((name, "finetuned", out / "ft.safetensors", raw["finetuned"][name]))
    for variant, mode, model, options in runs:
        evals.append(out / f"eval-{variant}-{mode}.parquet")
        jobs.evaluate_model(task, variant, mode, 0, {"eval": raw["eval"],
                            "variant_options": options, "device": raw["device"]}, 1, model,
                            prompts, evals[-1])
    baseline = next((b for b in raw["baselines"] if BASELINES.get(b).applies_to(task)), None)
    if baseline is not None:
        evals.append(out / "eval-baseline.parquet")
        jobs.evaluate_baseline(task, baseline, {"eval": raw["eval"],
                               "options": raw["baselines"][baseline]}, 1, prompts, evals[-1])
    variant = next(iter(raw["variants"]))
    jobs.profile_model(variant, "trained", {
        "profile": raw["profile"], "n_dims": n_dims, "model": raw["model"],
        "train_tokens": [2 * t["n_points"] for t in raw["tasks"].values()],
        "variant_options": raw["variants"][variant]}, 1, out / "profile-one.parquet")
    tables = {"icl_errors": out / "icl_errors.parquet",
              "icl_errors_over_seeds": out / "over_seeds.parquet",
              "profile": out / "profile.parquet", "conversion": out / "conversion-all.parquet"}
    jobs.aggregate_results(evals, tables["icl_errors"], tables["icl_errors_over_seeds"])
    jobs.aggregate_profile([out / "profile-one.parquet"], tables["profile"])
    if curves:
        jobs.aggregate_conversion(curves, tables["conversion"])
    figure = next(f for f in raw["figures"] if all(tables[t].exists()
                                                    for t in FIGURES.get(f).tables))
    jobs.plot_figure(figure, raw["figures"][figure], {t: str(p) for t, p in tables.items()},
                     str(out / "figure.pdf"), str(out / "figure.png"))
    assert (out / "figure.png").stat().st_size > 0


def _run(tmp_path_factory: pytest.TempPathFactory, changes: list[tuple[str, Any]]) -> None:
    raw = mutated(changes)
    assume(build_dag_checks(raw))
    raw["device"] = "cpu"
    run_first_jobs(raw, tmp_path_factory.mktemp("fuzz"))


RUN_SETTINGS = dict(derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@settings(max_examples=5, **RUN_SETTINGS)
@given(changes=mutations(SMALL))
def test_accepted_configs_run_the_first_job_of_each_rule(
        tmp_path_factory: pytest.TempPathFactory, changes: list[tuple[str, Any]]) -> None:
    _run(tmp_path_factory, changes)


@pytest.mark.fuzz
@settings(max_examples=max(MANY // 30, 60), **RUN_SETTINGS)
@given(changes=mutations(SMALL))
def test_many_accepted_configs_run(tmp_path_factory: pytest.TempPathFactory,
                                   changes: list[tuple[str, Any]]) -> None:
    _run(tmp_path_factory, changes)
