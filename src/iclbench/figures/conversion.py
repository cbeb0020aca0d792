"""Figure ``conversion``: error against fine-tuning steps of each variant put into softmax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.analysis import label
from iclbench.figures._base import figure
from iclbench.figures._data import at_examples, errors
from iclbench.figures._layout import legend_below, palette, panels

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure


@figure(
    "conversion",
    options={"n_examples": 10, "panel_width": 3.4, "panel_height": 3.0, "dpi": 150,
             "log_y": True},
    tables=("conversion", "icl_errors"),
    caption=(
        "Fine-tuned conversion: normalised error at n_examples in-context examples (-1: the last "
        "position) on the conversion's own held-out prompts against fine-tuning steps "
        "(0: the variant just put into the trained softmax model, i.e. swapped), one line per "
        "variant (mean over seeds), one panel per task; the dashed line is the trained softmax "
        "model's in-distribution error at the same k (mean over seeds)."
    ),
)
def conversion(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    curves = tables["conversion"]
    if curves.empty:
        raise ValueError("figures.conversion: no conversion curves")
    curves = at_examples(curves, int(opts["n_examples"]), "conversion")
    tasks = list(dict.fromkeys(curves["task"]))
    models = sorted(curves["model"].unique())
    fig, axes = panels(len(tasks), opts["panel_width"], opts["panel_height"])
    colours = palette(models)
    scored = errors(tables)
    for ax, task in zip(axes, tasks):
        at = curves[curves["task"] == task]
        k = int(at["n_examples"].iloc[0])
        at = at.groupby(["model", "step"], as_index=False)["error"].mean()
        for model in models:
            c = at[at["model"] == model]
            if not c.empty:
                ax.plot(c["step"], c["error"], "o-", ms=3, color=colours[model],
                        label=label(model, "finetuned"))
        _softmax_line(ax, scored, task, k)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        positive = at.loc[at["step"] > 0, "step"]
        ax.set_xscale("symlog", linthresh=int(positive.min()) if len(positive) else 1)
        if opts["log_y"]:
            ax.set_yscale("log")
        ax.set_title(f"{task.replace('_', ' ')} (k = {k})")
        ax.set_xlabel("fine-tuning steps")
    axes[0].set_ylabel("squared error / Var(y)")
    legend_below(fig, axes)
    return fig


def _softmax_line(ax: Axes, errors: pd.DataFrame, task: str, k: int) -> None:
    """The trained softmax model's in-distribution error on ``task`` at ``k`` (if scored)."""
    ref = errors[(errors["task"] == task) & (errors["model"] == "softmax")
                 & (errors["mode"] == "trained") & (errors["ood"] == "none")
                 & (errors["n_examples"] == k)]
    if not ref.empty:
        ax.axhline(float(ref["error"].iloc[0]), color="black", ls="--", lw=1,
                   label=label("softmax", "trained"))
