"""Figure ``icl_curves``: error against the number of in-context examples, a panel per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import figure
from iclbench.figures._data import errors, label_order, with_labels
from iclbench.figures._layout import curve_colours, legend_below, panels

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure


@figure(
    "icl_curves",
    options={"log_y": False, "ood": "none", "panel_width": 3.6, "panel_height": 3.0, "dpi": 150,
             "ymax": 1.5},
    tables=("icl_errors",),
    caption=(
        "In-context learning curves: normalised squared error (1 = always predicting 0) against "
        "the number of in-context examples, one panel per task, for each trained transformer "
        "variant (mean over seeds) and each baseline; bands: intervals over training seeds and prompts."
    ),
)
def icl_curves(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    df = errors(tables)
    df = df[df["ood"] == opts["ood"]]
    if df.empty:
        raise ValueError(f"figures.icl_curves: no rows with ood == {opts['ood']!r}")
    df = with_labels(df)
    curves = (df.groupby(["task", "label", "kind", "n_examples"], as_index=False)
              [["error", "error_lo", "error_hi"]].mean())
    tasks = list(dict.fromkeys(df["task"]))
    baselines = set(df.loc[df["kind"] == "baseline", "label"])
    labels = label_order(curves["label"], baselines)
    colours = curve_colours(labels, baselines)
    fig, axes = panels(len(tasks), opts["panel_width"], opts["panel_height"])
    for ax, task in zip(axes, tasks):
        sub = curves[curves["task"] == task]
        for name in labels:
            c = sub[sub["label"] == name]
            if c.empty:
                continue
            style = "-" if (c["kind"] == "transformer").all() else "--"
            ax.plot(c["n_examples"], c["error"], style, color=colours[name], label=name, lw=1.5)
            ax.fill_between(c["n_examples"], c["error_lo"], c["error_hi"], color=colours[name],
                            alpha=0.2, lw=0)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(task.replace("_", " "))
        ax.set_xlabel("in-context examples")
        if opts["log_y"]:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, opts["ymax"])
    axes[0].set_ylabel("squared error / Var(y)")
    legend_below(fig, axes, order=labels)
    return fig
