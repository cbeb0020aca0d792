"""Figure ``pareto``: accuracy against inference latency, a point per variant and mode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import figure
from iclbench.figures._data import LAST, at_examples, errors, label_order, profile_rows, with_labels
from iclbench.figures._layout import legend_below, palette, panels, plain_log_ticks

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure


@figure(
    "pareto",
    options={"batch_size": 64, "k_per_dim": 2, "at_length": False, "panel_width": 3.2,
             "panel_height": 3.0, "dpi": 150},
    tables=("icl_errors", "profile"),
    caption=(
        "Accuracy against cost: in-distribution normalised error at k = k_per_dim x d in-context "
        "examples (d from the profile table's n_dims; with option at_length, at each task's last "
        "position instead, i.e. its training length; mean over seeds, interval over seeds and "
        "prompts) against forward latency at the task's training length (2 tokens per example) "
        "and one batch size, one point per variant and mode, one panel per task. Lower left is "
        "better."
    ),
)
def pareto(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    prof = profile_rows(tables["profile"], opts, "pareto")
    n_dims = prof["n_dims"].unique()
    if len(n_dims) != 1:
        raise ValueError(f"figures.pareto: profile rows disagree on n_dims ({sorted(n_dims)})")
    if opts["at_length"]:
        # two lines: in one, it is taller than a 3-inch panel
        k, ylabel = LAST, "squared error / Var(y)\nat the last position"
        why = " (in-distribution transformer errors at each task's last position)"
    else:
        k = int(opts["k_per_dim"]) * int(n_dims[0])
        if k < 0:  # at_examples would read it as "the last position"
            raise ValueError(f"figures.pareto: k_per_dim {opts['k_per_dim']} is negative")
        ylabel = f"squared error / Var(y) at k = {k}"
        why = f" (in-distribution transformer errors; k_per_dim {opts['k_per_dim']} x n_dims " \
              f"{n_dims[0]})"
    points = _points(tables, prof, k, why)
    tasks = list(dict.fromkeys(points["task"]))
    labels = label_order(points["label"])
    colours = palette(labels)
    fig, axes = panels(len(tasks), opts["panel_width"], opts["panel_height"])
    for ax, task in zip(axes, tasks):
        sub = points[points["task"] == task]
        for _, row in sub.iterrows():
            ax.errorbar(row["latency_s"], row["error"],
                        yerr=[[row["error"] - row["error_lo"]], [row["error_hi"] - row["error"]]],
                        fmt="o", color=colours[row["label"]], label=row["label"], ms=5, capsize=2)
        ax.set_xscale("log")
        plain_log_ticks(ax)
        at = f", k = {int(sub['n_examples'].iloc[0])}" if opts["at_length"] else ""
        ax.set_title(f"{task.replace('_', ' ')} ({int(sub['context_tokens'].iloc[0])} tokens{at})",
                     fontsize="small")
        ax.set_xlabel(f"seconds per forward (batch {opts['batch_size']})")
    axes[0].set_ylabel(ylabel)
    legend_below(fig, axes, order=labels)
    return fig


def _points(tables: Mapping[str, pd.DataFrame], prof: pd.DataFrame, k: int,
            why: str) -> pd.DataFrame:
    """Each (task, model, mode)'s in-distribution error at ``k`` beside its latency at the
    task's training length, labelled."""
    import pandas as pd

    err = errors(tables)
    err = err[(err["kind"] == "transformer") & (err["ood"] == "none")]
    # a task's training length: 2 tokens per point, n_points = last n_examples + 1
    train_tokens = 2 * (err.groupby("task")["n_examples"].max() + 1)
    err = at_examples(err, k, "pareto", why)
    points = (err.groupby(["task", "model", "mode"], as_index=False)
              [["error", "error_lo", "error_hi", "n_examples"]].mean())
    points["context_tokens"] = points["task"].map(train_tokens)
    # a fine-tuned model has its swapped form's architecture, so its cost is the swapped one's
    prof = pd.concat([prof, prof[prof["mode"] == "swapped"].assign(mode="finetuned")])
    points = points.merge(prof[["model", "mode", "context_tokens", "latency_s"]],
                          on=["model", "mode", "context_tokens"], how="inner")
    if points.empty:
        raise ValueError("figures.pareto: no profile rows at the tasks' training lengths")
    return with_labels(points)
