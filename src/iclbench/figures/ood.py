"""Figures ``ood_<setting>`` (error against each OOD setting's level) and ``ood_summary``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import Draw, figure
from iclbench.figures._data import at_examples, errors, with_labels
from iclbench.figures._layout import (
    curve_panels,
    legend_below,
    panels,
    plain_log_ticks,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure


def _setting_rows(tables: Mapping[str, pd.DataFrame], setting: str) -> pd.DataFrame:
    """The setting's rows plus the in-distribution ones of its tasks at its identity level."""
    import pandas as pd

    from iclbench.ood import IN_DISTRIBUTION, OOD

    df = errors(tables)
    if not (df["ood"] == setting).any():
        raise ValueError(f"figures.ood_{setting}: no rows with ood == {setting!r}")
    tasks = list(dict.fromkeys(df.loc[df["ood"] == setting, "task"]))
    # the in-distribution error is this setting's point at its identity level
    ref = df[(df["ood"] == IN_DISTRIBUTION) & df["task"].isin(tasks)]
    df = pd.concat([df[df["ood"] == setting],
                    ref.assign(ood=setting, ood_level=OOD.get(setting).identity_level)])
    return df[df["task"].isin(tasks)]


def _ood_curves(setting: str) -> Draw:
    """The draw function of figure ``ood_<setting>``: error against the setting's level."""

    def draw(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
        from iclbench.ood import OOD

        df = _setting_rows(tables, setting)
        df = with_labels(at_examples(df, int(opts["n_examples"]), f"ood_{setting}"))
        fig, axes, per_task, labels = curve_panels(df, "ood_level", opts["panel_width"],
                                                   opts["panel_height"], True)
        for ax, (task, sub) in zip(axes, per_task):
            ax.axvline(OOD.get(setting).identity_level, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{task.replace('_', ' ')} (k = {int(sub['n_examples'].max())})")
            ax.set_xlabel(f"{setting} level")
            if opts["log_x"]:
                ax.set_xscale("log")
                plain_log_ticks(ax, at=sub["ood_level"])
            if opts["log_y"]:
                ax.set_yscale("log")
        # two lines: in one, it is taller than a 3-inch panel
        axes[0].set_ylabel("squared error /\nin-distribution Var(y)")
        legend_below(fig, axes, order=labels)
        return fig

    return draw


def _register_ood_figures() -> None:
    """One figure ``ood_<setting>`` per registered OOD setting (the same draw function)."""
    from iclbench.ood import IN_DISTRIBUTION, OOD

    for setting in OOD:
        if setting == IN_DISTRIBUTION:
            continue
        figure(
            f"ood_{setting}",
            options={"n_examples": -1, "log_x": setting.startswith("scale_"), "log_y": True,
                     "panel_width": 3.6, "panel_height": 3.0, "dpi": 150},
            tables=("icl_errors",),
            caption=(
                f"Out of distribution, setting {setting}: normalised squared error (divided by "
                "the in-distribution Var(y) at every level, so the zero baseline shows what "
                "predicting 0 scores there) against the setting's level, at a fixed number of "
                "in-context examples (option n_examples; -1 = last position), one panel per task "
                "the setting applies to, for every transformer (mean over seeds) and baseline; the "
                "dotted line marks the in-distribution level, whose point is the in-distribution "
                "error."
            ),
        )(_ood_curves(setting))


_register_ood_figures()


#: ood_summary: inches a heatmap cell needs for its printed value, and for the row labels
CELL_IN, LABELS_IN = 0.3, 1.0


def _heatmap_grid(sub: pd.DataFrame) -> pd.DataFrame:
    """One task's errors: a row per label, a column per setting=level, in-distribution first."""
    from iclbench.ood import IN_DISTRIBUTION

    grid = sub.pivot_table(index="label", columns="column", values="error", aggfunc="mean")
    columns = list(dict.fromkeys(sub.sort_values(["ood", "ood_level"])["column"]))
    columns = [IN_DISTRIBUTION] + [c for c in columns if c != IN_DISTRIBUTION]
    return grid[[c for c in columns if c in grid.columns]]


@figure(
    "ood_summary",
    options={"n_examples": -1, "panel_width": 4.5, "panel_height": 3.2, "dpi": 150, "vmax": 10.0},
    tables=("icl_errors",),
    caption=(
        "Robustness summary: normalised squared error (divided by the in-distribution Var(y)) at a "
        "fixed number of in-context examples (option n_examples; -1 = last position) for every "
        "model (rows) under every OOD setting and level (columns), one heatmap per task (at least "
        "panel_width wide, wider where its columns need it); colours on a log scale up to vmax, "
        "values printed."
    ),
)
def ood_summary(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import numpy as np
    import seaborn as sns
    from matplotlib.colors import LogNorm

    from iclbench.ood import IN_DISTRIBUTION

    df = with_labels(at_examples(errors(tables), int(opts["n_examples"]), "ood_summary"))
    df = df.assign(column=np.where(df["ood"] == IN_DISTRIBUTION, IN_DISTRIBUTION,
                                   df["ood"] + "=" + df["ood_level"].map("{:g}".format)))
    tasks = list(dict.fromkeys(df["task"]))
    grids = [_heatmap_grid(df[df["task"] == task]) for task in tasks]
    # a panel with many columns gets wider, so that its printed values do not run together
    widths = [max(opts["panel_width"], LABELS_IN + CELL_IN * grid.shape[1]) for grid in grids]
    fig, axes = panels(len(tasks), opts["panel_width"], opts["panel_height"], style="white",
                       widths=widths)
    for ax, task, grid in zip(axes, tasks, grids):
        sub = df[df["task"] == task]
        sns.heatmap(grid.clip(lower=1e-4), ax=ax, annot=True, fmt=".2g", cbar=False,
                    norm=LogNorm(vmin=1e-3, vmax=float(opts["vmax"])), cmap="viridis",
                    annot_kws={"fontsize": 5})
        ax.set_title(f"{task.replace('_', ' ')} (k = {int(sub['n_examples'].max())})")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
        ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return fig
