"""Evaluation: fixed prompt sets, per-position normalised errors, bootstrap intervals (SPEC 4).

A prompt file (safetensors) holds, for one task and one OOD setting, ``xs`` (L, P, n, d), ``ys``
(L, P, n) (or (L, P, n, m) for a task with vector outputs) and ``norm`` (L,) for L levels of the
setting (one level, 0, in distribution). Settings whose query comes from another distribution than
the examples before it (:mod:`iclbench.ood`) also hold ``query_xs`` (L, P, n, d) and ``query_ys``
(L, P, n). Every model and baseline is scored on the same file. The error at ``n_examples = i`` is
the squared error of the prediction of ``y_{i+1}`` from ``i`` examples, divided by ``norm`` and
averaged over the P prompts; its interval is the bootstrap percentile interval over prompts. For
vector outputs the squared error of a prediction is the mean over the m output coordinates of
their squared errors (``norm`` is then the per-coordinate Var(y)).

``norm`` is the task's in-distribution Var(y) at every level of every setting (SPEC section 1), so
errors share one unit across settings: always predicting 0 scores 1 in distribution and
``E[y^2] / Var_in(y)`` elsewhere (``c^2`` under ``scale_y``), which the ``zero`` baseline tabulates.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor

from iclbench.metadata import read_metadata
from iclbench.ood import IN_DISTRIBUTION, Transform, build_transform
from iclbench.results import ICL_ERRORS, tidy, write_with
from iclbench.seeding import generator
from iclbench.tasks import Task, sample_inputs


@dataclass(frozen=True)
class PromptSet:
    task: str
    ood: str
    levels: tuple[float, ...]
    xs: Tensor  # (L, P, n, d)
    ys: Tensor  # (L, P, n), or (L, P, n, m) for vector outputs
    norm: Tensor  # (L,)
    query_xs: Tensor | None = None  # (L, P, n, d): the query at position i, when not xs[:, :, i]
    query_ys: Tensor | None = None  # (L, P, n)

    def head(self, n_prompts: int) -> PromptSet:
        """The first ``n_prompts`` prompts of every level (all of them if there are fewer)."""
        cut = slice(0, n_prompts)
        return PromptSet(self.task, self.ood, self.levels, self.xs[:, cut], self.ys[:, cut],
                         self.norm,
                         None if self.query_xs is None else self.query_xs[:, cut],
                         None if self.query_ys is None else self.query_ys[:, cut])


def make_prompts(
    task: Task, task_name: str, n_prompts: int, n_points: int, seed: int,
    ood: str = IN_DISTRIBUTION, levels: tuple[float, ...] = (0.0,),
    transform: Transform | None = None,
) -> PromptSet:
    """Prompts of setting ``ood`` at each of ``levels``, fixed by ``seed`` (``eval.seed``).

    Every setting starts from the same in-distribution functions and inputs (one stream per task),
    so the ``none`` file and every level of every setting share their functions.
    """
    transform = transform if transform is not None else build_transform(ood)
    if not transform.applies_to(task_name):
        raise ValueError(f"OOD setting {ood!r} does not apply to task {task_name!r}")
    transform.check_levels(levels)
    rng = generator(seed, "eval", task_name)
    params = task.sample_functions(n_prompts, task.n_dims, rng)
    xs = sample_inputs(n_prompts, n_points, task.n_dims, task.n_dims, rng)
    out = [transform.apply(task, params, xs, float(c), generator(seed, "ood", ood, task_name))
           for c in levels]
    has_queries = out[0].query_xs is not None
    return PromptSet(
        task_name, ood, tuple(float(c) for c in levels),
        torch.stack([o.xs for o in out]), torch.stack([o.ys for o in out]),
        torch.full((len(levels),), task.normaliser, dtype=torch.float64),
        torch.stack([o.query_xs for o in out]) if has_queries else None,  # type: ignore[misc]
        torch.stack([o.query_ys for o in out]) if has_queries else None,  # type: ignore[misc]
    )


def save_prompts(prompts: PromptSet, path: str | Path) -> None:
    # one metadata key: safetensors writes metadata in hash order, so several keys are not
    # byte-stable across processes
    meta = {"iclbench": json.dumps({"task": prompts.task, "ood": prompts.ood,
                                    "levels": list(prompts.levels)}, sort_keys=True)}
    tensors = {"xs": prompts.xs.contiguous(), "ys": prompts.ys.contiguous(), "norm": prompts.norm}
    if prompts.query_xs is not None and prompts.query_ys is not None:
        tensors |= {"query_xs": prompts.query_xs.contiguous(),
                    "query_ys": prompts.query_ys.contiguous()}
    write_with(lambda tmp: save_file(tensors, str(tmp), metadata=meta), path)


#: safetensors' names of the dtypes a prompt file may store its tensors in
_PROMPT_DTYPES = {"F32": "float32", "F64": "float64"}
_PROMPT_TENSORS = ("xs", "ys", "norm")
_QUERY_TENSORS = ("query_xs", "query_ys")


def load_prompts(path: str | Path) -> PromptSet:
    """Read a prompt file written by :func:`save_prompts`; raises ValueError naming the file
    and what is wrong where it is not one: unreadable or truncated, metadata missing or not of
    the documented form, missing or extra tensors, other dtypes than float32/float64, shapes
    that disagree with each other or with the metadata's levels, or values that are not finite
    (``norm`` must also be positive). Shapes and dtypes are checked from the header before any
    tensor is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = _prompt_meta(path, f.metadata())
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                      for k in f.keys()}
            _check_prompt_header(path, header, len(meta["levels"]))
            tensors = {k: f.get_tensor(k) for k in header}
    except (SafetensorError, OSError) as err:
        raise _not_prompts(path, str(err)) from None
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise _not_prompts(path, f"tensor {name!r} holds NaN or infinite values")
    if not bool((tensors["norm"] > 0).all()):
        raise _not_prompts(path, f"norm must be positive, got {tensors['norm'].tolist()}")
    return PromptSet(meta["task"], meta["ood"], tuple(meta["levels"]),
                     tensors["xs"], tensors["ys"], tensors["norm"],
                     tensors.get("query_xs"), tensors.get("query_ys"))


def _not_prompts(path: str | Path, what: str) -> ValueError:
    """The error of a file that is not a valid prompt file, naming it and what is wrong."""
    return ValueError(f"{path}: not a valid prompt file ({what})")


def _prompt_meta(path: str | Path, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """The ``iclbench`` metadata of a prompt file: task and ood (strings), levels (numbers)."""
    bad = functools.partial(_not_prompts, path)
    meta = read_metadata(metadata, bad)
    missing = [k for k in ("task", "ood", "levels") if k not in meta]
    if missing:
        raise bad(f"metadata lacks key(s) {missing}")
    for key in ("task", "ood"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise bad(f"metadata {key} must be a non-empty string, got {meta[key]!r}")
    levels = meta["levels"]
    if (not isinstance(levels, list) or not levels
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                       and np.isfinite(c) for c in levels)):
        raise bad(f"metadata levels must be a non-empty list of finite numbers, got "
                  f"{str(levels)[:200]}")
    return meta


def _check_prompt_header(path: str | Path, header: Mapping[str, tuple[tuple[int, ...], str]],
                         n_levels: int) -> None:
    """Tensor names, dtypes and shapes of a prompt file against each other and the levels."""
    bad = functools.partial(_not_prompts, path)
    queries = [k for k in _QUERY_TENSORS if k in header]
    expected = [*_PROMPT_TENSORS, *(_QUERY_TENSORS if queries else ())]
    missing = [k for k in expected if k not in header]
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise bad("wrong tensors:" + (f" missing {missing}" if missing else "")
                  + (f" unexpected {extra}" if extra else ""))
    for name, (_, dtype) in header.items():
        if dtype not in _PROMPT_DTYPES:
            raise bad(f"tensor {name!r} has dtype {dtype}, expected float32 or float64")
    xs, ys, norm = (header[k][0] for k in _PROMPT_TENSORS)
    if len(xs) != 4 or min(xs) < 1:
        raise bad(f"xs must have shape (levels, prompts, points, dims) with every size at least "
                  f"1, got {xs}")
    if len(ys) not in (3, 4) or ys[:3] != xs[:3] or min(ys) < 1:
        raise bad(f"ys has shape {ys}, expected {xs[:3]} or {xs[:3]} + (outputs,) to match xs "
                  f"{xs}")
    if norm != (xs[0],):
        raise bad(f"norm has shape {norm}, expected ({xs[0]},): one per level of xs {xs}")
    if xs[0] != n_levels:
        raise bad(f"the metadata lists {n_levels} level(s), the tensors hold {xs[0]} (xs {xs})")
    if queries and (header["query_xs"][0] != xs or header["query_ys"][0] != ys):
        raise bad(f"query_xs {header['query_xs'][0]} and query_ys {header['query_ys'][0]} must "
                  f"have the shapes of xs {xs} and ys {ys}")


def error_table(
    sq_err: Tensor, norm: float, bootstrap: int, confidence: float, rng: torch.Generator
) -> pd.DataFrame:
    """Per-position mean of ``sq_err`` (P, n) / norm with a bootstrap percentile interval."""
    err = sq_err.double() / norm
    P, n = err.shape
    mean = err.mean(dim=0)
    idx = torch.randint(0, P, (bootstrap, P), generator=rng)
    # resample means as (how often each prompt is drawn) @ err: the same draws as err[idx].mean(1)
    # without materialising a (bootstrap, P, n) tensor, which dominated cheap evaluations
    counts = torch.zeros(bootstrap, P, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(bootstrap, P, dtype=torch.float64))
    boot = counts @ err / P  # (bootstrap, n)
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
    """Score ``predict(xs, ys) -> preds`` on every level of ``prompts``; rows as ICL_ERRORS.

    With separate queries, position ``i`` is predicted from the full-length prompt whose first
    ``i`` points are the examples ``xs[:, :i]`` and whose points from ``i`` on are the queries
    ``query_xs[:, i:]`` (labels likewise), and scored against ``query_ys[:, i]``: one call per
    position, as Garg et al.'s ``eval_batch`` builds ``xs_comb``. Not the prompt cut after the
    query: a causal predictor never reads past position ``i``, but variants whose layout depends on
    the prompt's length (Combiner's block size, Nystrom's segments) would see another layout
    there than in every other setting.
    """
    frames = []
    for j, level in enumerate(prompts.levels):
        xs, ys = prompts.xs[j], prompts.ys[j]
        if prompts.query_xs is None or prompts.query_ys is None:
            preds = _predict_batched(predict, xs, ys, batch_size)
        else:
            qxs, qys = prompts.query_xs[j], prompts.query_ys[j]
            preds = torch.stack([
                _predict_batched(predict, torch.cat([xs[:, :i], qxs[:, i:]], dim=1),
                                 torch.cat([ys[:, :i], qys[:, i:]], dim=1), batch_size)[:, i]
                for i in range(xs.shape[1])
            ], dim=1)
            ys = qys
        rng = generator(seed, "bootstrap", prompts.task, prompts.ood, str(level), str(labels["model"]))
        table = error_table(squared_error(preds, ys), float(prompts.norm[j]), bootstrap,
                            confidence, rng)
        frames.append(table.assign(ood=prompts.ood, ood_level=float(level)))
    out = pd.concat(frames, ignore_index=True).assign(task=prompts.task, **labels,
                                                       torch_version=torch.__version__)
    return tidy(out, ICL_ERRORS)


def squared_error(preds: Tensor, ys: Tensor) -> Tensor:
    """Squared errors (P, n) in float64; for vector outputs (P, n, m), the mean over the m."""
    if preds.shape != ys.shape:
        raise ValueError(f"predictions of shape {tuple(preds.shape)} for labels of shape "
                         f"{tuple(ys.shape)}")
    sq = (preds.double() - ys.double()).square()
    return sq.mean(dim=-1) if sq.dim() == 3 else sq


def _predict_batched(predict: Predictor, xs: Tensor, ys: Tensor, batch_size: int) -> Tensor:
    return torch.cat([
        predict(xs[s : s + batch_size], ys[s : s + batch_size]).detach().cpu()
        for s in range(0, xs.shape[0], batch_size)
    ])


def model_predictor(model: torch.nn.Module, device: torch.device) -> Predictor:
    """Wrap a decoder as a predictor: batches move to ``device``, no gradients."""

    @torch.inference_mode()
    def predict(xs: Tensor, ys: Tensor) -> Tensor:
        return model(xs.to(device), ys.to(device)).float()

    return predict
