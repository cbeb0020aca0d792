"""Figures drawn from a synthetic summary table (the workflow test draws them from a real run)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from iclbench.figures import FIGURES, save_figure


def summary() -> pd.DataFrame:
    rows = []
    for task, n in itertools.product(["linear_regression", "decision_tree"], range(5)):
        for model, kind, mode in [("softmax", "transformer", "trained"),
                                  ("relu", "transformer", "trained"),
                                  ("nystrom", "transformer", "trained"),
                                  ("nystrom", "transformer", "swapped"),
                                  ("combiner", "transformer", "swapped"),
                                  ("least_squares", "baseline", "baseline")]:
            err = 1.0 / (n + 1) + 0.1 * len(model)
            rows.append({"task": task, "model": model, "kind": kind, "mode": mode, "seed": 0,
                         "ood": "none", "n_examples": n, "error": err, "error_lo": 0.9 * err,
                         "error_hi": 1.1 * err, "ood_level": 0.0, "confidence": 0.9,
                         "norm": 1.0, "n_prompts": 64})
    return pd.DataFrame(rows)


def test_variants_figure_draws(tmp_path) -> None:
    fig = FIGURES.get("variants").render({"icl_errors": summary()}, {"n_examples": 2})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["softmax", "relu", "nystrom",
                                                            "combiner"]
    assert len(fig.axes) == 2
    save_figure(fig, str(tmp_path / "v.pdf"), str(tmp_path / "v.png"), dpi=40)
    assert (tmp_path / "v.pdf").stat().st_size > 1000


def test_variants_figure_without_rows_names_the_figure() -> None:
    with pytest.raises(ValueError, match="figures.variants: no rows"):
        FIGURES.get("variants").render({"icl_errors": summary()}, {"n_examples": 99})
