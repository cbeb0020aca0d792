"""Reading the result tables: what the figures, the README block and the benchmarks compute from
``results/summary/``, apart from measuring anything.

It lives apart from :mod:`iclbench.profiling` (which measures, and so imports torch and the
model) so that drawing a figure or writing the README needs only pandas and numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import pandas as pd

#: how a mode shows in a label; a trained variant and a baseline show by name alone
MODE_SUFFIX = {"swapped": " (swapped)", "finetuned": " (finetuned)"}


@overload
def label(model: str, mode: str) -> str: ...
@overload
def label(model: pd.Series, mode: pd.Series) -> pd.Series: ...
def label(model: str | pd.Series, mode: str | pd.Series) -> str | pd.Series:
    """The name a (model, mode) goes by in every figure: ``relu`` for a trained variant or a
    baseline, ``nystrom (swapped)``, ``nystrom (finetuned)``. Works on two strings or on two
    aligned columns."""
    if isinstance(model, str) and isinstance(mode, str):
        return model + MODE_SUFFIX.get(mode, "")
    assert isinstance(model, pd.Series) and isinstance(mode, pd.Series)
    suffix = mode.astype(object).map(lambda m: MODE_SUFFIX.get(m, ""))
    return model + suffix


def total_ops(profile: pd.DataFrame) -> pd.Series:
    """Every counted operation of each profile row: floating-point (``flops``) plus integer
    (``int8_ops``; taken as 0 in a table without the column)."""
    int8 = profile["int8_ops"] if "int8_ops" in profile.columns else 0
    return profile["flops"] + int8


def crossovers(profile: pd.DataFrame, batch_size: int, reference: str = "softmax") -> pd.DataFrame:
    """Where each variant overtakes the trained ``reference`` in latency, at ``batch_size``.

    One row per (model, mode) other than the reference: ``crossover_tokens`` is the length from
    which the variant stays faster (interpolated log-log between the two measured lengths around
    it; NaN if it is never faster at the longest length, the shortest length if it always is),
    with the speed-up (reference latency / variant latency), FLOP ratio (reference FLOPs /
    variant FLOPs: floating-point only, so int8's counts only what stays float) and operations
    ratio (the same with int8 operations added, :func:`total_ops`) at the longest length. Against
    softmax the speed-up is paired: the variant's job timed softmax in turns with it
    (``softmax_latency_s``), so drift of the machine between jobs cancels; another ``reference``
    is compared with its own job's latencies.
    """
    df = profile[profile["batch_size"] == batch_size]
    df = df.assign(ops=total_ops(df))
    paired = reference == "softmax" and "softmax_latency_s" in df.columns
    cols = ["latency_s", "flops", "ops"] + (["softmax_latency_s"] if paired else [])
    df = df.groupby(["model", "mode", "context_tokens"], as_index=False)[cols].mean()
    ref = df[(df["model"] == reference) & (df["mode"] == "trained")].set_index("context_tokens")
    if ref.empty:
        raise ValueError(f"crossovers: no trained {reference!r} rows at batch size {batch_size}")
    rows = []
    for (model, mode), g in df.groupby(["model", "mode"], sort=True):
        if model == reference and mode == "trained":
            continue
        g = g.set_index("context_tokens").sort_index()
        common = g.index.intersection(ref.index).sort_values()
        if common.empty:
            continue
        ref_latency = g.loc[common, "softmax_latency_s"] if paired else ref.loc[common, "latency_s"]
        speedup = (ref_latency / g.loc[common, "latency_s"]).to_numpy()
        last = common[-1]
        rows.append({"model": model, "mode": mode,
                     "crossover_tokens": _crossing(common.to_numpy(dtype=float), speedup),
                     "longest_tokens": int(last), "speedup_at_longest": float(speedup[-1]),
                     "flop_ratio_at_longest": float(ref.loc[last, "flops"] / g.loc[last, "flops"]),
                     "ops_ratio_at_longest": float(ref.loc[last, "ops"] / g.loc[last, "ops"])})
    return pd.DataFrame(rows, columns=["model", "mode", "crossover_tokens", "longest_tokens",
                                       "speedup_at_longest", "flop_ratio_at_longest",
                                       "ops_ratio_at_longest"])


def _crossing(tokens: np.ndarray, speedup: np.ndarray) -> float:
    """The length from which ``speedup`` stays above 1 (log-log interpolation; NaN if it ends at
    or below 1, the first length if it never is)."""
    faster = speedup > 1.0
    if not faster[-1]:
        return float("nan")
    slower = np.flatnonzero(~faster)
    if slower.size == 0:
        return float(tokens[0])
    i = slower[-1]  # last slower length; the next one is faster and stays so
    x0, x1 = np.log(tokens[i]), np.log(tokens[i + 1])
    y0, y1 = np.log(speedup[i]), np.log(speedup[i + 1])
    return float(np.exp(x0 + (x1 - x0) * (-y0) / (y1 - y0)))


def fitted_exponent(tokens: Sequence[float], values: Sequence[float]) -> float:
    """Slope of log(values) against log(tokens) by least squares (2 = quadratic growth)."""
    return float(np.polyfit(np.log(np.asarray(tokens, float)), np.log(np.asarray(values, float)),
                            1)[0])
