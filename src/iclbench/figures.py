"""Registered figures: each a function from the aggregated tables to a matplotlib figure.

A figure declares its options (name -> default; the config's ``figures.<name>`` may set only
these), the summary tables it reads, and a caption for the Snakemake report. Figures read only the
aggregated tables under ``results/summary/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iclbench.registry import Registry

if TYPE_CHECKING:  # plotting libraries load only when a figure is drawn
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure

Draw = Callable[["Mapping[str, pd.DataFrame]", Mapping[str, Any]], "MplFigure"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Figure:
    draw: Draw
    options: Mapping[str, Any]
    tables: tuple[str, ...]
    caption: str

    def check_options(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)}; known are: {sorted(self.options)}"
            )

    def render(self, tables: Mapping[str, pd.DataFrame], options: Mapping[str, Any]) -> MplFigure:
        self.check_options(options)
        return self.draw(tables, {**self.options, **options})


FIGURES: Registry[Figure] = Registry("figure")


def figure(name: str, options: Mapping[str, Any], tables: tuple[str, ...], caption: str):  # type: ignore[no-untyped-def]
    """Decorator registering ``draw`` as figure ``name``."""

    def decorate(draw: Draw) -> Draw:
        FIGURES.register(name)(Figure(draw, dict(options), tables, caption))
        return draw

    return decorate


def save_figure(fig: MplFigure, pdf: str, png: str, dpi: int) -> None:
    """Write the figure as PDF and PNG (atomically) and close it."""
    from iclbench.results import write_with

    # fixed metadata so the same data gives the same PDF bytes
    write_with(lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}), pdf)
    write_with(lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), png)
    _pyplot().close(fig)


@figure(
    "icl_curves",
    options={"log_y": False, "ood": "none", "panel_width": 3.6, "panel_height": 3.0, "dpi": 150,
             "ymax": 1.5},
    tables=("icl_errors",),
    caption=(
        "In-context learning curves: normalised squared error (1 = always predicting 0) against "
        "the number of in-context examples, one panel per task, for each trained transformer "
        "variant (mean over seeds) and each baseline, with bootstrap intervals over prompts."
    ),
)
def icl_curves(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    plt = _pyplot()
    df = tables["icl_errors"]
    df = df[df["ood"] == opts["ood"]]
    if df.empty:
        raise ValueError(f"figures.icl_curves: no rows with ood == {opts['ood']!r}")
    df = df.assign(label=df["model"].where(df["mode"] != "swapped", df["model"] + " (swapped)"))
    # seeds: average the mean and the interval ends over seeds
    curves = (df.groupby(["task", "label", "kind", "n_examples"], as_index=False)
              [["error", "error_lo", "error_hi"]].mean())
    tasks = list(dict.fromkeys(df["task"]))
    labels = sorted(curves["label"].unique(), key=lambda m: (m not in set(df.loc[df.kind == "transformer", "label"]), m))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
    for ax, task in zip(axes[0], tasks):
        sub = curves[curves["task"] == task]
        for label in labels:
            c = sub[sub["label"] == label]
            if c.empty:
                continue
            style = "-" if (c["kind"] == "transformer").all() else "--"
            ax.plot(c["n_examples"], c["error"], style, color=palette[label], label=label, lw=1.5)
            ax.fill_between(c["n_examples"], c["error_lo"], c["error_hi"], color=palette[label],
                            alpha=0.2, lw=0)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(task.replace("_", " "))
        ax.set_xlabel("in-context examples")
        if opts["log_y"]:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, opts["ymax"])
    axes[0][0].set_ylabel("squared error / Var(y)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


@figure(
    "errors_at_k",
    options={"n_examples": -1, "ood": "none", "width": 7.0, "height": 3.2, "dpi": 150},
    tables=("icl_errors",),
    caption=(
        "Normalised squared error at a fixed number of in-context examples (option n_examples; "
        "-1 means the last position of each task's prompt), per task and model, with bootstrap "
        "intervals; transformers averaged over seeds."
    ),
)
def errors_at_k(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    plt = _pyplot()
    df = tables["icl_errors"]
    df = df[df["ood"] == opts["ood"]]
    if df.empty:
        raise ValueError(f"figures.errors_at_k: no rows with ood == {opts['ood']!r}")
    k = int(opts["n_examples"])
    last = df.groupby("task")["n_examples"].transform("max")
    df = df[df["n_examples"] == (last if k < 0 else k)]
    if df.empty:
        raise ValueError(f"figures.errors_at_k: no rows with n_examples == {k}")
    df = df.assign(label=df["model"].where(df["mode"] != "swapped", df["model"] + " (swapped)"))
    bars = df.groupby(["task", "label"], as_index=False)[["error", "error_lo", "error_hi"]].mean()
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(opts["width"], opts["height"]))
    tasks = list(dict.fromkeys(df["task"]))
    labels = sorted(bars["label"].unique())
    sns.barplot(data=bars, x="task", y="error", hue="label", order=tasks, hue_order=labels, ax=ax,
                errorbar=None)
    # each bar's bootstrap interval, drawn through the bar's centre
    for container, label in zip(ax.containers, labels):
        rows = bars[bars["label"] == label].set_index("task").reindex(tasks)
        for bar, (_, row) in zip(container, rows.iterrows()):
            if row.notna().all():
                x = bar.get_x() + bar.get_width() / 2
                ax.plot([x, x], [row["error_lo"], row["error_hi"]], color="black", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("squared error / Var(y)")
    ax.set_title("last position" if k < 0 else f"{k} in-context examples")
    ax.legend(frameon=False, fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def _at_examples(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows at ``k`` in-context examples per task (-1: the last position; clamped to it)."""
    last = df.groupby("task")["n_examples"].transform("max")
    target = last if k < 0 else last.clip(upper=k)
    return df[df["n_examples"] == target]


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(label=df["model"].where(df["mode"] != "swapped", df["model"] + " (swapped)"))


def _ood_curves(setting: str):  # type: ignore[no-untyped-def]
    """The draw function of figure ``ood_<setting>``: error against the setting's level."""

    def draw(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
        import pandas as pd
        import seaborn as sns

        from iclbench.ood import IN_DISTRIBUTION, OOD

        plt = _pyplot()
        df = tables["icl_errors"]
        if not (df["ood"] == setting).any():
            raise ValueError(f"figures.ood_{setting}: no rows with ood == {setting!r}")
        tasks = list(dict.fromkeys(df.loc[df["ood"] == setting, "task"]))
        # the in-distribution error is this setting's point at its identity level
        ref = df[(df["ood"] == IN_DISTRIBUTION) & df["task"].isin(tasks)]
        df = pd.concat([df[df["ood"] == setting],
                        ref.assign(ood=setting, ood_level=OOD.get(setting).identity_level)])
        df = _labelled(_at_examples(df[df["task"].isin(tasks)], int(opts["n_examples"])))
        curves = (df.groupby(["task", "label", "kind", "ood_level"], as_index=False)
                  [["error", "error_lo", "error_hi", "n_examples"]].mean())
        transformers = set(df.loc[df["kind"] == "transformer", "label"])
        labels = sorted(curves["label"].unique(), key=lambda m: (m not in transformers, m))
        palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
        sns.set_theme(style="whitegrid", context="paper")
        fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                                 figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
        for ax, task in zip(axes[0], tasks):
            sub = curves[curves["task"] == task]
            for label in labels:
                c = sub[sub["label"] == label].sort_values("ood_level")
                if c.empty:
                    continue
                style = "o-" if (c["kind"] == "transformer").all() else "s--"
                ax.plot(c["ood_level"], c["error"], style, color=palette[label], label=label,
                        lw=1.3, ms=3)
                ax.fill_between(c["ood_level"], c["error_lo"], c["error_hi"],
                                color=palette[label], alpha=0.15, lw=0)
            ax.axvline(OOD.get(setting).identity_level, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{task.replace('_', ' ')} (k = {int(sub['n_examples'].max())})")
            ax.set_xlabel(f"{setting} level")
            if opts["log_x"]:
                ax.set_xscale("log")
            if opts["log_y"]:
                ax.set_yscale("log")
        axes[0][0].set_ylabel("squared error / in-distribution Var(y)")
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.12, 1, 1))
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


@figure(
    "ood_summary",
    options={"n_examples": -1, "panel_width": 4.5, "panel_height": 3.2, "dpi": 150, "vmax": 10.0},
    tables=("icl_errors",),
    caption=(
        "Robustness summary: normalised squared error (divided by the in-distribution Var(y)) at a "
        "fixed number of in-context examples (option n_examples; -1 = last position) for every "
        "model (rows) under every OOD setting and level (columns), one heatmap per task; colours "
        "on a log scale up to vmax, values printed."
    ),
)
def ood_summary(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import numpy as np
    import seaborn as sns
    from matplotlib.colors import LogNorm

    from iclbench.ood import IN_DISTRIBUTION

    plt = _pyplot()
    df = _labelled(_at_examples(tables["icl_errors"], int(opts["n_examples"])))
    if df.empty:
        raise ValueError("figures.ood_summary: no rows")
    df = df.assign(column=np.where(df["ood"] == IN_DISTRIBUTION, IN_DISTRIBUTION,
                                   df["ood"] + "=" + df["ood_level"].map("{:g}".format)))
    tasks = list(dict.fromkeys(df["task"]))
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
    for ax, task in zip(axes[0], tasks):
        sub = df[df["task"] == task]
        grid = sub.pivot_table(index="label", columns="column", values="error", aggfunc="mean")
        columns = list(dict.fromkeys(sub.sort_values(["ood", "ood_level"])["column"]))
        columns = [IN_DISTRIBUTION] + [c for c in columns if c != IN_DISTRIBUTION]
        grid = grid[[c for c in columns if c in grid.columns]]
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
