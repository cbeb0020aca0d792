"""Evaluation: fixed prompt sets, per-position normalised errors, bootstrap intervals (SPEC 4).

A prompt file (safetensors) holds, for one task and one OOD setting, ``xs`` (L, P, n, d), ``ys``
(L, P, n) and ``norm`` (L,) for L levels of the setting (one level, 0, in distribution), plus the
functions that produced them. Every model and baseline is scored on the same file. The error at
``n_examples = i`` is the squared error of the prediction of ``y_{i+1}`` from ``i`` examples,
divided by ``norm`` and averaged over the P prompts; its interval is the bootstrap percentile
interval over prompts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from iclbench.results import ICL_ERRORS, tidy, write_with
from iclbench.seeding import generator
from iclbench.tasks import Task, sample_inputs


@dataclass(frozen=True)
class PromptSet:
    task: str
    ood: str
    levels: tuple[float, ...]
    xs: Tensor  # (L, P, n, d)
    ys: Tensor  # (L, P, n)
    norm: Tensor  # (L,)


def make_prompts(task: Task, task_name: str, n_prompts: int, n_points: int, seed: int) -> PromptSet:
    """In-distribution prompts, fixed by ``seed`` (the config's ``eval.seed``)."""
    rng = generator(seed, "eval", task_name)
    params = task.sample_functions(n_prompts, task.n_dims, rng)
    xs = sample_inputs(n_prompts, n_points, task.n_dims, task.n_dims, rng)
    ys = task.evaluate(params, xs)
    return PromptSet(task_name, "none", (0.0,), xs[None], ys[None],
                     torch.tensor([task.normaliser], dtype=torch.float64))


def save_prompts(prompts: PromptSet, path: str | Path) -> None:
    # one metadata key: safetensors writes metadata in hash order, so several keys are not
    # byte-stable across processes
    meta = {"iclbench": json.dumps({"task": prompts.task, "ood": prompts.ood,
                                    "levels": list(prompts.levels)}, sort_keys=True)}
    tensors = {"xs": prompts.xs.contiguous(), "ys": prompts.ys.contiguous(), "norm": prompts.norm}
    write_with(lambda tmp: save_file(tensors, str(tmp), metadata=meta), path)


def load_prompts(path: str | Path) -> PromptSet:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["iclbench"])
        tensors = load_file(str(path))
        return PromptSet(meta["task"], meta["ood"], tuple(meta["levels"]),
                         tensors["xs"], tensors["ys"], tensors["norm"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a valid prompt file ({err})") from None


def error_table(
    sq_err: Tensor, norm: float, bootstrap: int, confidence: float, rng: torch.Generator
) -> pd.DataFrame:
    """Per-position mean of ``sq_err`` (P, n) / norm with a bootstrap percentile interval."""
    err = sq_err.double() / norm
    P, n = err.shape
    mean = err.mean(dim=0)
    idx = torch.randint(0, P, (bootstrap, P), generator=rng)
    boot = err[idx].mean(dim=1)  # (bootstrap, n)
    tail = (1.0 - confidence) / 2
    lo, hi = torch.quantile(boot, torch.tensor([tail, 1.0 - tail], dtype=torch.float64), dim=0)
    return pd.DataFrame({
        "n_examples": np.arange(n),
        "error": mean.numpy(),
        "error_lo": lo.numpy(),
        "error_hi": hi.numpy(),
        "confidence": confidence,
        "norm": norm,
        "n_prompts": P,
    })


Predictor = Callable[[Tensor, Tensor], Tensor]


def evaluate(
    predict: Predictor,
    prompts: PromptSet,
    labels: Mapping[str, Any],
    bootstrap: int,
    confidence: float,
    seed: int,
    batch_size: int,
) -> pd.DataFrame:
    """Score ``predict(xs, ys) -> preds`` on every level of ``prompts``; rows as ICL_ERRORS."""
    frames = []
    for j, level in enumerate(prompts.levels):
        xs, ys = prompts.xs[j], prompts.ys[j]
        preds = torch.cat([
            predict(xs[s : s + batch_size], ys[s : s + batch_size]).detach().cpu()
            for s in range(0, xs.shape[0], batch_size)
        ])
        rng = generator(seed, "bootstrap", prompts.task, prompts.ood, str(level), str(labels["model"]))
        table = error_table((preds.double() - ys.double()).square(), float(prompts.norm[j]),
                            bootstrap, confidence, rng)
        frames.append(table.assign(ood=prompts.ood, ood_level=float(level)))
    out = pd.concat(frames, ignore_index=True).assign(task=prompts.task, **labels,
                                                       torch_version=torch.__version__)
    return tidy(out, ICL_ERRORS)


def model_predictor(model: torch.nn.Module, device: torch.device) -> Predictor:
    """Wrap a decoder as a predictor: batches move to ``device``, no gradients."""

    @torch.inference_mode()
    def predict(xs: Tensor, ys: Tensor) -> Tensor:
        return model(xs.to(device), ys.to(device)).float()

    return predict
