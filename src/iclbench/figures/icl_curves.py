"""Figure ``icl_curves``: error against the number of in-context examples, a panel per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import figure
from iclbench.figures._data import errors, with_labels
from iclbench.figures._layout import curve_panels, legend_below

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
    df = errors(tables, opts["ood"], "icl_curves")
    fig, axes, per_task, labels = curve_panels(with_labels(df), "n_examples",
                                               opts["panel_width"], opts["panel_height"], False)
    for ax, (task, _) in zip(axes, per_task):
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
