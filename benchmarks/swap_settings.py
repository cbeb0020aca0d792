"""Which settings of a swapped variant come closest to the softmax model it is swapped into.

For each trained softmax model given, puts each candidate setting of each swappable variant into
it (``Variant.swap``, as the ``evaluate_model`` rule does) and measures, on held-out prompts of the
model's task (their own seed), the mean squared distance between its predictions and the softmax
model's own, divided by the task's Var(y), over all positions and at k = 2d, beside its error at
k = 2d. The configs' ``swapped:`` settings are the closest ones.

    .venv/bin/python benchmarks/swap_settings.py results/models/linear_regression/softmax/seed0/model.safetensors [...]
        [--prompts 1024] [--variants combiner nystrom]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open

from iclbench.evaluate import make_prompts, squared_error
from iclbench.model import load_model
from iclbench.tasks import build_task
from iclbench.variants import get_variant
from iclbench.kernels.cpu import fast_inference

PROMPT_SEED = 4242


def candidates(n_tokens: int, landmarks: list[int] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
    """Candidate swapped settings per variant for prompts of ``n_tokens`` tokens (Nystrom's
    landmark counts: ``landmarks``, or 2, 4, 8, half the tokens and all of them)."""
    combiner = [{"block_size": b, "log_size_bias": bias}
                for b, bias in itertools.product([None, 2, 4, 6, 8], [False, True])]
    nystrom = [{"landmarks_source": "segments", "landmarks": m, **pinv}
               for m, pinv in itertools.product(
                   sorted(set(landmarks or {2, 4, 8, n_tokens // 2, n_tokens})),
                   [{"pinv": "iterative", "pinv_iterations": 6},
                    {"pinv": "iterative", "pinv_iterations": 12}, {"pinv": "exact"}])]
    return {"combiner": combiner, "nystrom": nystrom}


def model_task(path: str) -> tuple[str, dict[str, Any]]:
    """The task a model file was trained on, and its metadata."""
    with safe_open(path, framework="pt") as f:
        info = json.loads((f.metadata() or {})["iclbench"])
    return info["task"], info


def measure(path: str, n_prompts: int, variants: list[str],
            landmarks: list[int] | None = None) -> pd.DataFrame:
    torch.set_num_threads(2)
    task_name, _ = model_task(path)
    base = fast_inference(load_model(path))  # as evaluation runs it
    spec = base.spec
    task = build_task(task_name, spec.n_dims, json.loads(Path(path).with_name("config.json")
                                                         .read_text())["params"]["task"]["options"])
    n_points = spec.n_positions // 2
    prompts = make_prompts(task, task_name, n_prompts, n_points, PROMPT_SEED)
    xs, ys = prompts.xs[0], prompts.ys[0]
    k2d = min(2 * spec.n_dims, n_points - 1)

    def predict(model: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(xs[s:s + 256], ys[s:s + 256]) for s in range(0, n_prompts, 256)])

    ref = predict(base)
    rows = [{"task": task_name, "variant": "softmax", "options": "-", "distance": 0.0,
             "distance_k2d": 0.0,
             "error_k2d": float(squared_error(ref, ys)[:, k2d].mean() / task.normaliser)}]
    for variant, settings in candidates(spec.n_positions, landmarks).items():
        if variant not in variants:
            continue
        for opts in settings:
            model = get_variant(variant).swap(copy.deepcopy(base), opts)
            pred = predict(model)
            print(f"{task_name} {variant} {json.dumps(opts, sort_keys=True)}", flush=True)
            dist = (pred - ref).double().square() / task.normaliser  # (P, n)
            rows.append({"task": task_name, "variant": variant,
                         "options": json.dumps(opts, sort_keys=True),
                         "distance": float(dist.mean()), "distance_k2d": float(dist[:, k2d].mean()),
                         "error_k2d": float(squared_error(pred, ys)[:, k2d].mean()
                                            / task.normaliser)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="trained softmax model files")
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--variants", nargs="*", default=["combiner", "nystrom"])
    ap.add_argument("--landmarks", nargs="*", type=int, default=None,
                    help="Nystrom landmark counts to try (default: 2, 4, 8, T/2, T)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table = pd.concat([measure(p, args.prompts, args.variants, args.landmarks) for p in args.models],
                      ignore_index=True)
    with pd.option_context("display.width", 220, "display.max_rows", 500,
                           "display.max_colwidth", 90):
        for (task, variant), g in table.groupby(["task", "variant"], sort=False):
            print(f"\n{task} / {variant}")
            print(g.sort_values("distance").round(4).to_string(index=False))
        print("\nclosest setting per variant (over all models given, by mean distance):")
        mean = (table[table["variant"] != "softmax"].groupby(["variant", "options"])
                ["distance"].mean().reset_index().sort_values("distance")
                .groupby("variant").head(1))
        print(mean.to_string(index=False))
    if args.out:
        table.to_parquet(args.out)


if __name__ == "__main__":
    main()
