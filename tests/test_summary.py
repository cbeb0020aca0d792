"""Errors over training seeds (iclbench.summary) and their table from aggregate_results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iclbench.jobs import aggregate_results
from iclbench.results import ICL_ERRORS, read_parquet, tidy, write_parquet
from iclbench.summary import OVER_SEEDS, over_seeds


def rows(model: str, kind: str, mode: str, seeds: list, errors: list[float],
         half: float = 0.0, k: int = 3) -> pd.DataFrame:
    return tidy(pd.DataFrame({
        "task": "linear_regression", "model": model, "kind": kind, "mode": mode,
        "seed": pd.array(seeds, dtype="Int64"), "ood": "none", "ood_level": 0.0,
        "n_examples": k, "error": errors, "error_lo": [e - half for e in errors],
        "error_hi": [e + 2 * half for e in errors], "confidence": 0.9, "norm": 5.0,
        "n_prompts": 64, "device": "cpu", "torch_version": "x"}), ICL_ERRORS)


def test_one_seed_keeps_the_prompt_interval() -> None:
    out = over_seeds(rows("softmax", "transformer", "trained", [0], [0.3], half=0.05))
    row = out.iloc[0]
    assert row["n_seeds"] == 1 and np.isnan(row["seed_sd"])
    assert row["error"] == pytest.approx(0.3)
    assert (row["error_lo"], row["error_hi"]) == pytest.approx((0.25, 0.40))
    assert (row["prompt_lo"], row["prompt_hi"]) == pytest.approx((0.25, 0.40))


def test_seed_spread_widens_the_interval_by_a_t_interval_in_quadrature() -> None:
    errors = [0.10, 0.20, 0.15]
    # prompt intervals [e - 0.02, e + 0.04]: half-width 0.03 each
    out = over_seeds(rows("nystrom", "transformer", "trained", [0, 1, 2], errors, half=0.02))
    row = out.iloc[0]
    seed_hw = stats.t.ppf(0.95, 2) * np.std(errors, ddof=1) / np.sqrt(3)
    half = np.hypot(seed_hw, 0.03)
    assert row["n_seeds"] == 3
    assert row["error"] == pytest.approx(0.15)
    assert row["seed_sd"] == pytest.approx(np.std(errors, ddof=1))
    assert (row["error_lo"], row["error_hi"]) == pytest.approx((0.15 - half, 0.15 + half))
    # the prompt-only interval is the seeds' ends averaged, narrower than the joint one
    assert (row["prompt_lo"], row["prompt_hi"]) == pytest.approx((0.13, 0.19))
    assert row["error_hi"] - row["error_lo"] > row["prompt_hi"] - row["prompt_lo"]


def test_identical_seeds_add_nothing_to_the_prompt_interval() -> None:
    out = over_seeds(rows("softmax", "transformer", "trained", [0, 1], [0.2, 0.2], half=0.01))
    row = out.iloc[0]
    assert row["seed_sd"] == 0.0
    # symmetric around the mean with the prompt half-width (0.015)
    assert (row["error_lo"], row["error_hi"]) == pytest.approx((0.185, 0.215))


def test_models_modes_and_baselines_stay_apart() -> None:
    df = pd.concat([
        rows("softmax", "transformer", "trained", [0, 1], [0.1, 0.3]),
        rows("nystrom", "transformer", "swapped", [0, 1], [0.8, 0.9]),
        rows("least_squares", "baseline", "baseline", [pd.NA], [0.0], half=0.001),
    ], ignore_index=True)
    out = over_seeds(df).set_index(["model", "mode"])
    assert list(out.columns) == [c for c in OVER_SEEDS if c not in ("model", "mode")]
    assert out.loc[("softmax", "trained"), "error"] == pytest.approx(0.2)
    assert out.loc[("nystrom", "swapped"), "error"] == pytest.approx(0.85)
    base = out.loc[("least_squares", "baseline")]
    assert base["n_seeds"] == 0 and (base["error_lo"], base["error_hi"]) == pytest.approx((-0.001, 0.002))


def test_rows_with_different_confidences_are_refused() -> None:
    df = pd.concat([rows("softmax", "transformer", "trained", [0], [0.1]),
                    rows("softmax", "transformer", "trained", [1], [0.2])], ignore_index=True)
    df.loc[1, "confidence"] = 0.95
    with pytest.raises(ValueError, match="confidence"):
        over_seeds(df)


def test_aggregate_results_writes_the_table_over_seeds(tmp_path) -> None:
    paths = []
    for seed, err in enumerate([0.1, 0.2, 0.3]):
        p = tmp_path / f"e{seed}.parquet"
        write_parquet(rows("softmax", "transformer", "trained", [seed], [err], half=0.01), p)
        paths.append(p)
    aggregate_results(paths, tmp_path / "errors.parquet", tmp_path / "over.parquet")
    assert len(read_parquet(tmp_path / "errors.parquet")) == 3
    over = read_parquet(tmp_path / "over.parquet")
    assert list(over.columns) == list(OVER_SEEDS)
    assert len(over) == 1 and over.loc[0, "n_seeds"] == 3
    assert over.loc[0, "error"] == pytest.approx(0.2)
