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


# ------------------------------------------------------------------ payoff and pareto

#: (model, mode, error over softmax's): relu trained errs exactly as softmax does
PAYOFF_RUNS = [("softmax", "trained", 1.0), ("relu", "trained", 1.0),
               ("nystrom", "trained", 1.5), ("nystrom", "swapped", 4.0),
               ("combiner", "swapped", 3.0), ("nystrom", "finetuned", 1.2),
               ("relu", "finetuned", 1.1)]
#: profiled (model, mode): relu has no swapped rows, so its fine-tuned form cannot be priced
PROFILED = [("softmax", "trained"), ("relu", "trained"), ("nystrom", "trained"),
            ("nystrom", "swapped"), ("combiner", "swapped")]


def payoff_errors(tasks: dict[str, int] | None = None,
                  runs: list[tuple[str, str, float]] | None = None) -> pd.DataFrame:
    """In-distribution errors, two seeds: task -> n_points (k = 0 .. n_points - 1); softmax's
    error falls with k, every other run's is a fixed multiple of it."""
    rows = []
    for task, n_points in (tasks or {"linear_regression": 11, "decision_tree": 21}).items():
        for (model, mode, scale), seed, k in itertools.product(runs or PAYOFF_RUNS, [0, 1],
                                                               range(n_points)):
            err = scale * (1.0 / (k + 1) + 0.01 * k) * (1 + 0.01 * seed)
            rows.append({"task": task, "model": model, "kind": "transformer", "mode": mode,
                         "seed": seed, "ood": "none", "n_examples": k, "error": err,
                         "error_lo": 0.9 * err, "error_hi": 1.1 * err, "ood_level": 0.0,
                         "confidence": 0.9, "norm": 1.0, "n_prompts": 64})
    return pd.DataFrame(rows)


def profile_table(tokens: tuple[int, ...] = (22, 42, 128, 512, 2048),
                  batches: tuple[int, ...] = (1,)) -> pd.DataFrame:
    """Profile rows of :data:`PROFILED`: softmax quadratic in length, the others linear, with a
    paired softmax latency 10% off softmax's own job (so a test can tell which one is used)."""
    rows = []
    for (model, mode), t, b in itertools.product(PROFILED, tokens, batches):
        soft = 1e-4 + 1e-8 * t * t * b
        latency = soft if model == "softmax" else 3e-4 + 1e-6 * t * b
        flops = (2 * t * t if model == "softmax" else 50 * t) + 1000 * t
        rows.append({"model": model, "mode": mode, "context_tokens": t, "batch_size": b,
                     "device": "cpu", "dtype": "float32", "threads": 1, "flops": flops * b,
                     "int8_ops": 0, "latency_s": latency, "latency_iqr_s": latency / 10,
                     "n_timed": 5, "softmax_latency_s": soft if model == "softmax" else 1.1 * soft,
                     "peak_mem_bytes": 1, "mem_method": "x", "uncounted_ops": "", "n_dims": 5,
                     "n_embd": 16, "n_layer": 1, "n_head": 2, "torch_version": "x"})
    return pd.DataFrame(rows)


def _lines(fig, gid: str) -> list:  # type: ignore[no-untyped-def]
    """The lines with ``gid`` in any panel of ``fig``."""
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def test_payoff_draws_ratio_and_speed_up_rows_per_task(caplog: pytest.LogCaptureFixture,
                                                        tmp_path) -> None:
    """One column per task (in the table's order), the error ratios above the speed-ups; the
    short tasks' ratios over their k, the speed-ups over every profiled length; the legend covers
    no panel; relu's fine-tuned form has no swapped profile rows: left out, with a warning."""
    tables = {"icl_errors": payoff_errors(), "profile": profile_table()}
    with caplog.at_level("WARNING"):
        fig = FIGURES.get("payoff").render(tables, {})
    assert "no swapped profile rows of relu" in caplog.text
    assert len(fig.axes) == 4  # 6 error series and 4 cost series fit a row each (max_series 6)
    (top_lr, top_tree), (low_lr, low_tree) = fig.axes[:2], fig.axes[2:]
    assert "linear regression" in top_lr.get_title() and "decision tree" in top_tree.get_title()
    assert top_lr.get_xlim()[1] < 15 and top_tree.get_xlim()[1] < 30  # k up to 10 and 20
    for ax in (low_lr, low_tree):  # the profile's lengths, 11 to 1024 examples
        lo, hi = ax.get_xlim()
        assert lo <= 11 and hi >= 1024
    assert [line.get_xdata()[0] for line in low_tree.get_lines()
            if line.get_linestyle() == ":"] == [21]  # the training length, in examples
    assert not _lines(fig, "latency:relu:swapped") and not _lines(fig, "ratio:softmax:trained")
    legends, axes = _text_boxes(fig)
    assert len(legends) == 1 and not any(legends[0].overlaps(box) for box in axes)
    assert 0 <= legends[0].x0 and legends[0].x1 <= fig.bbox.width and legends[0].y0 >= 0
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names[:3] == ["combiner", "nystrom", "relu"]
    assert {"trained", "swapped", "finetuned", "training length"} <= set(names)
    save_figure(fig, str(tmp_path / "p.pdf"), str(tmp_path / "p.png"), dpi=40)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_payoff_ratio_and_speed_ups_are_over_softmax() -> None:
    """An error equal to softmax's is a ratio of 1 (3 / 2 for 1.5 times it); the speed-up is
    over the softmax timed in turns with the variant, the FLOPs ratio over softmax's FLOPs at the
    same length; a fine-tuned model is priced by its swapped form's rows."""
    import numpy as np

    fig = FIGURES.get("payoff").render({"icl_errors": payoff_errors(),
                                        "profile": profile_table()}, {})
    for gid, ratio in (("ratio:relu:trained", 1.0), ("ratio:nystrom:trained", 1.5),
                       ("ratio:nystrom:finetuned", 1.2)):
        lines = _lines(fig, gid)
        assert len(lines) == 2  # one per task
        for line in lines:
            assert list(line.get_xdata()) == list(range(1, len(line.get_xdata()) + 1))  # k >= 1
            assert np.allclose(line.get_ydata(), ratio)
    latency = _lines(fig, "latency:nystrom:swapped")[0]
    t = 2 * np.asarray(latency.get_xdata())
    assert np.allclose(latency.get_ydata(), 1.1 * (1e-4 + 1e-8 * t * t) / (3e-4 + 1e-6 * t))
    ops = _lines(fig, "ops:nystrom:swapped")[0]
    assert np.allclose(ops.get_ydata(), (2 * t * t + 1000 * t) / (1050 * t))
    assert not _lines(fig, "latency:nystrom:finetuned")


def test_payoff_splits_modes_into_rows_past_max_series() -> None:
    """Past max_series a mode takes a row of its own, the same rows in every column: a task
    without trained variants shows those panels empty."""
    errors = pd.concat([payoff_errors(),
                        payoff_errors({"relu_2nn": 13}, [("softmax", "trained", 1.0),
                                                         ("combiner", "swapped", 2.0)])])
    fig = FIGURES.get("payoff").render({"icl_errors": errors, "profile": profile_table()},
                                       {"max_series": 2, "log_y": False})
    # rows: ratio trained, swapped, finetuned (2 + 2 + 2 series), speed-up trained, swapped
    assert len(fig.axes) == 5 * 3
    grid = [fig.axes[i:i + 3] for i in range(0, 15, 3)]
    assert "(trained)" in grid[0][0].get_ylabel() and "(finetuned)" in grid[2][0].get_ylabel()
    assert "swapped, finetuned" in grid[4][0].get_ylabel()
    empty = [[any(t.get_text() == "none on this task" for t in ax.texts) for ax in row]
             for row in grid]
    assert empty == [[False, False, True], [False, False, False], [False, False, True],
                     [False, False, True], [False, False, False]]
    assert grid[0][0].get_yscale() == "linear" and grid[3][0].get_yscale() == "log"


def test_payoff_without_the_batch_size_names_the_option() -> None:
    tables = {"icl_errors": payoff_errors(), "profile": profile_table(batches=(1, 64))}
    with pytest.raises(ValueError, match=r"^figures\.payoff\.batch_size: no profile rows with "
                                         r"batch_size == 8 \(the profile has batch sizes 1, 64"):
        FIGURES.get("payoff").render(tables, {"batch_size": 8})
    fig = FIGURES.get("payoff").render(tables, {"batch_size": 64})
    assert "batch 64" in fig.axes[2].get_ylabel()


@pytest.mark.parametrize("at_length", [False, True])
def test_pareto_at_length_takes_the_last_position(at_length: bool) -> None:
    """Default: the error at k = k_per_dim x d (2 x 5 = 10); at_length: at each task's last
    position (10 and 20), said on the axis and in the titles."""
    errors = payoff_errors()
    fig = FIGURES.get("pareto").render({"icl_errors": errors, "profile": profile_table()},
                                       {"batch_size": 1, "at_length": at_length})
    means = errors.groupby(["task", "model", "mode", "n_examples"])["error"].mean()
    assert len(fig.axes) == 2
    for ax in fig.axes:
        task, last = (("linear_regression", 10) if "linear" in ax.get_title()
                      else ("decision_tree", 20))
        k = last if at_length else 10
        assert ax.get_title().endswith(f", k = {last})") == at_length
        drawn = {c.get_label(): c.lines[0].get_ydata()[0] for c in ax.containers}
        assert drawn["softmax"] == pytest.approx(means[(task, "softmax", "trained", k)])
        assert drawn["nystrom (swapped)"] == pytest.approx(means[(task, "nystrom", "swapped", k)])
    assert ("last position" in fig.axes[0].get_ylabel()) == at_length
