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


# ------------------------------------------------------------------ shared helpers


def test_one_label_for_every_mode() -> None:
    from iclbench.analysis import label

    models = pd.Series(["relu", "nystrom", "nystrom", "least_squares"], dtype="string")
    modes = pd.Series(["trained", "swapped", "finetuned", "baseline"], dtype="string")
    assert list(label(models, modes)) == ["relu", "nystrom (swapped)", "nystrom (finetuned)",
                                          "least_squares"]
    assert label("combiner", "swapped") == "combiner (swapped)"


def test_n_examples_is_exact_or_the_last_position(caplog: pytest.LogCaptureFixture) -> None:
    """-1: each task's own last position; k >= 0: exactly k, a shorter task left out (never
    clamped); no rows left: an error naming the figure."""
    from iclbench.figures._data import at_examples

    df = summary()
    df = df[(df["task"] == "linear_regression") | (df["n_examples"] <= 2)]  # tree: k = 0..2
    last = at_examples(df, -1, "f")
    assert dict(last.groupby("task")["n_examples"].unique().map(list)) == {
        "decision_tree": [2], "linear_regression": [4]}
    with caplog.at_level("WARNING"):
        at_3 = at_examples(df, 3, "f")
    assert set(at_3["task"]) == {"linear_regression"} and set(at_3["n_examples"]) == {3}
    assert "decision_tree" in caplog.text
    with pytest.raises(ValueError, match="figures.f: no rows with n_examples == 7"):
        at_examples(df, 7, "f")


def _text_boxes(fig) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """(legend boxes, [each axes' box with its tick labels, axis labels and title])."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    return ([legend.get_window_extent(renderer) for legend in fig.legends],
            [ax.get_tightbbox(renderer) for ax in fig.axes])


@pytest.mark.parametrize("tasks", [["linear_regression", "decision_tree"], ["linear_regression"]])
@pytest.mark.parametrize("name", ["icl_curves", "variants"])
def test_legend_below_covers_no_axis_and_fits_the_figure(name: str, tasks: list[str]) -> None:
    """The legend once sat over the panels' x labels (icl_curves), and a one-panel figure's
    legend ran past the figure's edges."""
    df = summary()
    fig = FIGURES.get(name).render({"icl_errors": df[df["task"].isin(tasks)]}, {})
    legends, axes = _text_boxes(fig)
    assert len(legends) == 1
    assert not any(legends[0].overlaps(box) for box in axes)
    assert 0 <= legends[0].x0 and legends[0].x1 <= fig.bbox.width and legends[0].y0 >= 0
    # every label drawn in any panel is in it, once
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    drawn = {n for ax in fig.axes for n in ax.get_legend_handles_labels()[1]}
    assert sorted(names) == sorted(drawn)


def test_figures_need_no_profiler() -> None:
    """The figures read the tables through iclbench.analysis, not the profiler."""
    import subprocess
    import sys

    code = ("import sys; from iclbench.figures import FIGURES; "
            "print('iclbench.profiling' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_figure_module_registers_itself() -> None:
    """Adding a figure is one module of iclbench.figures (plus a config entry): the package
    imports each public module, whose @figure registers it."""
    import importlib
    import pkgutil

    import iclbench.figures as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    registered = {FIGURES.get(n).draw.__module__ for n in FIGURES}
    assert registered == {f"iclbench.figures.{m}" for m in modules}
    for module in modules:
        assert importlib.import_module(f"iclbench.figures.{module}")
