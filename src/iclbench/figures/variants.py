"""Figure ``variants``: each attention variant trained, fine-tuned and swapped, against softmax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import figure
from iclbench.figures._data import at_examples, errors
from iclbench.figures._layout import legend_below, palette, panels

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

#: mode -> (marker, x offset from the model's tick, colour)
MARKS = {"trained": ("o", -0.2, "tab:blue"), "finetuned": ("s", 0.0, "tab:green"),
         "swapped": ("^", 0.2, "tab:orange")}


@figure(
    "variants",
    options={"n_examples": -1, "ood": "none", "panel_width": 3.0, "panel_height": 3.0, "dpi": 150,
             "log_y": False, "ymax": 1.5},
    tables=("icl_errors",),
    caption=(
        "Attention variants against softmax, per task: normalised squared error at a fixed number "
        "of in-context examples (option n_examples; -1 means the last position of each task's "
        "prompt) for each variant trained as such (circles) and swapped into the softmax-trained "
        "model at inference (triangles), with intervals (transformers averaged over "
        "seeds, the interval covering seeds and prompts); dashed lines are the baselines, the dotted line is always predicting 0."
    ),
)
def variants(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    df = errors(tables, opts["ood"], "variants")
    k = int(opts["n_examples"])
    df = at_examples(df, k, "variants")
    points = (df[df["kind"] == "transformer"]
              .groupby(["task", "model", "mode"], as_index=False)
              [["error", "error_lo", "error_hi"]].mean())
    lines = df[df["kind"] == "baseline"].groupby(["task", "model"], as_index=False)["error"].mean()
    tasks = list(dict.fromkeys(df["task"]))
    # softmax first, then the variants in the table's order
    present = list(dict.fromkeys(df.loc[df["kind"] == "transformer", "model"]))
    models = sorted(present, key=lambda m: m != "softmax")
    baselines = sorted(lines["model"].unique())
    fig, axes = panels(len(tasks), opts["panel_width"], opts["panel_height"])
    colours = palette(baselines, "Dark2")
    for ax, task in zip(axes, tasks):
        _points(ax, points[points["task"] == task], models)
        for _, row in lines[lines["task"] == task].iterrows():
            ax.axhline(row["error"], ls="--", lw=0.9, color=colours[row["model"]],
                       label=row["model"])
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(models)), models, rotation=30)
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_title(task.replace("_", " "))
        if opts["log_y"]:
            ax.set_yscale("log")
            # least squares is exact (~1e-14) on noiseless linear tasks: keep the variants readable
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-3))
        else:
            ax.set_ylim(0, opts["ymax"])
    axes[0].set_ylabel("squared error / Var(y)")
    fig.suptitle("last position" if k < 0 else f"{k} in-context examples")
    legend_below(fig, axes, order=[*baselines, *MARKS])
    return fig


def _points(ax: Axes, points: pd.DataFrame, models: list[str]) -> None:
    """One marker per (model, mode) with its interval, beside the model's tick by mode."""
    for mode, (marker, shift, colour) in MARKS.items():
        rows = points[points["mode"] == mode].set_index("model").reindex(models).dropna()
        x = [models.index(m) + shift for m in rows.index]
        err = [(rows["error"] - rows["error_lo"]).clip(lower=0),
               (rows["error_hi"] - rows["error"]).clip(lower=0)]
        ax.errorbar(x, rows["error"], yerr=err, fmt=marker, color=colour, capsize=2, ms=5,
                    lw=1, label=mode)
