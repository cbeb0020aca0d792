"""Figure ``errors_at_k``: a bar per model and task at a fixed number of in-context examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import figure
from iclbench.figures._data import at_examples, errors, with_labels
from iclbench.figures._layout import legend_below, panels

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure


@figure(
    "errors_at_k",
    options={"n_examples": -1, "ood": "none", "width": 7.0, "height": 3.2, "dpi": 150},
    tables=("icl_errors",),
    caption=(
        "Normalised squared error at a fixed number of in-context examples (option n_examples; "
        "-1 means the last position of each task's prompt), per task and model; transformers averaged over seeds, "
        "intervals over training seeds and prompts (bootstrap over prompts for baselines)."
    ),
)
def errors_at_k(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    df = errors(tables, opts["ood"], "errors_at_k")
    k = int(opts["n_examples"])
    df = with_labels(at_examples(df, k, "errors_at_k"))
    bars = df.groupby(["task", "label"], as_index=False)[["error", "error_lo", "error_hi"]].mean()
    fig, (ax,) = panels(1, opts["width"], opts["height"])
    tasks = list(dict.fromkeys(df["task"]))
    labels = sorted(bars["label"].unique())
    sns.barplot(data=bars, x="task", y="error", hue="label", order=tasks, hue_order=labels, ax=ax,
                errorbar=None)
    _intervals(ax, bars, tasks, labels)
    ax.set_xlabel("")
    ax.set_ylabel("squared error / Var(y)")
    ax.set_title("last position" if k < 0 else f"{k} in-context examples")
    ax.get_legend().remove()  # seaborn's, inside the axes: it covered the bars
    legend_below(fig, [ax], order=labels)
    return fig


def _intervals(ax: Axes, bars: pd.DataFrame, tasks: list[str], labels: list[str]) -> None:
    """Each bar's interval, drawn through the bar's centre."""
    for container, name in zip(ax.containers, labels):
        rows = bars[bars["label"] == name].set_index("task").reindex(tasks)
        for bar, (_, row) in zip(container, rows.iterrows()):
            if row.notna().all():
                x = bar.get_x() + bar.get_width() / 2
                ax.plot([x, x], [row["error_lo"], row["error_hi"]], color="black", lw=0.8)
