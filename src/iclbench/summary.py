"""Errors over training seeds: one row per (task, model, mode, ood, ood_level, n_examples).

``icl_errors`` has one row per training seed, and its interval covers the sampling of the
evaluation prompts only. A difference between two variants is a finding only if it is larger than
what retraining with another seed moves, so this table puts both sources of uncertainty in one
interval:

- the seed part: a Student-t interval of the mean over the S seeds' errors,
  ``t_{(1 + c) / 2, S - 1} * sd / sqrt(S)`` (none with one seed);
- the prompt part: the mean over seeds of the half-widths of their bootstrap intervals over prompts.
  Every seed is scored on the same prompts, so their prompt errors are correlated and averaging
  over seeds does not shrink this part; the mean half-width is its conservative (fully correlated)
  value.

The interval is ``error ± sqrt(seed² + prompt²)``, the two half-widths added in quadrature (a
normal approximation; the per-prompt errors a joint bootstrap would need are not stored). The
prompt-only interval stays beside it (``prompt_lo``, ``prompt_hi``: the seeds' interval ends
averaged), so the two can be compared. Baselines are not trained: their rows pass through with
their prompt interval, ``n_seeds`` 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: ``icl_errors_over_seeds`` columns
OVER_SEEDS: dict[str, str] = {
    "task": "string",
    "model": "string",
    "kind": "string",
    "mode": "string",
    "ood": "string",
    "ood_level": "float64",
    "n_examples": "int64",
    "error": "float64",  # mean over seeds of the seeds' errors
    "error_lo": "float64",  # interval over seeds and prompts, lower end
    "error_hi": "float64",  # upper end
    "prompt_lo": "float64",  # the prompt-only interval (the seeds' ends averaged), lower end
    "prompt_hi": "float64",
    "seed_sd": "float64",  # standard deviation of the error over seeds (NaN below 2 seeds)
    "n_seeds": "int64",  # training seeds averaged; 0 for baselines
    "confidence": "float64",
    "norm": "float64",
    "n_prompts": "int64",
}

KEYS = ["task", "model", "kind", "mode", "ood", "ood_level", "n_examples"]


def seed_half_width(errors: np.ndarray, confidence: float) -> float:
    """Half-width of the Student-t interval of the mean of ``errors`` (0 for one value)."""
    n = len(errors)
    if n < 2:
        return 0.0
    t = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    return t * float(np.std(errors, ddof=1)) / np.sqrt(n)


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """``icl_errors`` rows (any number of seeds per key) to one row per key, see the module."""
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in OVER_SEEDS.items()})
    confidence = df["confidence"].unique()
    if len(confidence) != 1:
        raise ValueError(f"over_seeds: rows disagree on the interval's confidence ({sorted(confidence)})")
    conf = float(confidence[0])
    g = df.groupby(KEYS, sort=False, dropna=False)
    out = g.agg(error=("error", "mean"), prompt_lo=("error_lo", "mean"),
                prompt_hi=("error_hi", "mean"), norm=("norm", "first"),
                n_prompts=("n_prompts", "min"),
                n_seeds=("seed", "count")).reset_index()
    out["seed_sd"] = g["error"].std(ddof=1).to_numpy() if len(out) else []
    # the seed part, 0 where one seed (or a baseline)
    seed_hw = g["error"].apply(lambda e: seed_half_width(e.to_numpy(), conf)).to_numpy()
    prompt_hw = (g["error_hi"].mean() - g["error_lo"].mean()).to_numpy() / 2
    half = np.sqrt(seed_hw ** 2 + prompt_hw ** 2)
    several = out["n_seeds"].to_numpy() >= 2
    # one seed or a baseline: the prompt interval as it is (bootstrap intervals are not symmetric)
    out["error_lo"] = np.where(several, out["error"] - half, out["prompt_lo"])
    out["error_hi"] = np.where(several, out["error"] + half, out["prompt_hi"])
    out.loc[out["n_seeds"] < 2, "seed_sd"] = np.nan
    out["confidence"] = conf
    return out[list(OVER_SEEDS)].astype(OVER_SEEDS).reset_index(drop=True)
