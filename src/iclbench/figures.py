"""Registered figures: each a function from the aggregated tables to a matplotlib figure.

A figure declares its options (name -> default; the config's ``figures.<name>`` may set only
these), the summary tables it reads, and a caption for the Snakemake report. Figures read only the
aggregated tables under ``results/summary/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iclbench.registry import Registry, check_options

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
        check_options(options, self.options)

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


def _profile_rows(df: pd.DataFrame, opts: Mapping[str, Any], figure: str) -> pd.DataFrame:
    """The profile rows at the figure's ``batch_size``; an error naming the figure if none."""
    rows = df[df["batch_size"] == int(opts["batch_size"])]
    if rows.empty:
        raise ValueError(f"figures.{figure}: no profile rows with batch_size == {opts['batch_size']}")
    return rows


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
        "variant (mean over seeds) and each baseline; bands: intervals over training seeds and prompts."
    ),
)
def icl_curves(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    plt = _pyplot()
    df = _errors(tables)
    df = df[df["ood"] == opts["ood"]]
    if df.empty:
        raise ValueError(f"figures.icl_curves: no rows with ood == {opts['ood']!r}")
    df = _labelled(df)
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
        "-1 means the last position of each task's prompt), per task and model; transformers averaged over seeds, "
        "intervals over training seeds and prompts (bootstrap over prompts for baselines)."
    ),
)
def errors_at_k(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    plt = _pyplot()
    df = _errors(tables)
    df = df[df["ood"] == opts["ood"]]
    if df.empty:
        raise ValueError(f"figures.errors_at_k: no rows with ood == {opts['ood']!r}")
    k = int(opts["n_examples"])
    last = df.groupby("task")["n_examples"].transform("max")
    df = df[df["n_examples"] == (last if k < 0 else k)]
    if df.empty:
        raise ValueError(f"figures.errors_at_k: no rows with n_examples == {k}")
    df = _labelled(df)
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


@figure(
    "scaling",
    options={"batch_size": 1, "width": 8.0, "height": 3.4, "dpi": 150},
    tables=("profile",),
    caption=(
        "Inference cost against context length (log-log), per variant and mode, at one batch "
        "size: forward latency (median, IQR band) and forward FLOPs (causal attention counted as "
        "computed). Dotted vertical lines mark where each variant becomes and stays faster than "
        "trained softmax (the crossover length), labelled with its speed-up at the longest length. "
        "Models of the trained shape with random weights and a position table long enough for the "
        "longest length."
    ),
)
def scaling(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    from iclbench.profiling import crossovers, label

    plt = _pyplot()
    df = _profile_rows(tables["profile"], opts, "scaling")
    df = df.assign(label=label(df["model"], df["mode"])).sort_values("context_tokens")
    labels = sorted(df["label"].unique(), key=lambda s: (s != "softmax", s))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    sns.set_theme(style="whitegrid", context="paper")
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(opts["width"], opts["height"]))
    for name in labels:
        g = df[df["label"] == name]
        ax_t.plot(g["context_tokens"], g["latency_s"], "o-", ms=3, color=palette[name], label=name)
        ax_t.fill_between(g["context_tokens"], (g["latency_s"] - g["latency_iqr_s"] / 2).clip(lower=1e-9),
                          g["latency_s"] + g["latency_iqr_s"] / 2, color=palette[name], alpha=0.2, lw=0)
        ax_f.plot(g["context_tokens"], g["flops"], "o-", ms=3, color=palette[name], label=name)
    has_reference = ((df["model"] == "softmax") & (df["mode"] == "trained")).any()
    if has_reference:
        for _, row in crossovers(df, int(opts["batch_size"])).iterrows():
            name = row["model"] if row["mode"] != "swapped" else f"{row['model']} (swapped)"
            if row["crossover_tokens"] == row["crossover_tokens"]:  # not NaN
                ax_t.axvline(row["crossover_tokens"], color=palette[name], ls=":", lw=1)
                ax_t.annotate(f"{row['speedup_at_longest']:.1f}x", (row["longest_tokens"],
                              df.loc[df["label"] == name, "latency_s"].iloc[-1]),
                              xytext=(3, 0), textcoords="offset points", fontsize="x-small",
                              color=palette[name], va="center")
    device = ", ".join(sorted(df["device"].unique()))
    threads = ", ".join(str(t) for t in sorted(df["threads"].unique()))
    for ax, ylabel in ((ax_t, "seconds per forward (median)"), (ax_f, "forward FLOPs")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
    ax_t.set_title(f"latency ({device}, {threads} threads, batch {opts['batch_size']})",
                   fontsize="small")
    ax_f.set_title("FLOPs", fontsize="small")
    handles, names = ax_t.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


@figure(
    "pareto",
    options={"batch_size": 64, "k_per_dim": 2, "panel_width": 3.2, "panel_height": 3.0,
             "dpi": 150},
    tables=("icl_errors", "profile"),
    caption=(
        "Accuracy against cost: in-distribution normalised error at k = k_per_dim x d in-context "
        "examples (d from the profile table's n_dims; mean over seeds, interval over seeds and prompts) against "
        "forward latency at the task's training length (2 tokens per example) and one batch size, "
        "one point per variant and mode, one panel per task. Lower left is better."
    ),
)
def pareto(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    from iclbench.profiling import label

    plt = _pyplot()
    prof = _profile_rows(tables["profile"], opts, "pareto")
    n_dims = prof["n_dims"].unique()
    if len(n_dims) != 1:
        raise ValueError(f"figures.pareto: profile rows disagree on n_dims ({sorted(n_dims)})")
    k = int(opts["k_per_dim"]) * int(n_dims[0])
    err = _errors(tables)
    err = err[(err["kind"] == "transformer") & (err["ood"] == "none")]
    # a task's training length: 2 tokens per point, n_points = last n_examples + 1
    train_tokens = 2 * (err.groupby("task")["n_examples"].max() + 1)
    err = err[err["n_examples"] == k]
    if err.empty:
        raise ValueError(f"figures.pareto: no in-distribution transformer errors at n_examples "
                         f"== {k} (k_per_dim {opts['k_per_dim']} x n_dims {n_dims[0]})")
    points = (err.groupby(["task", "model", "mode"], as_index=False)
              [["error", "error_lo", "error_hi"]].mean())
    points["context_tokens"] = points["task"].map(train_tokens)
    # a fine-tuned model has its swapped form's architecture, so its cost is the swapped one's
    import pandas as pd

    prof = pd.concat([prof, prof[prof["mode"] == "swapped"].assign(mode="finetuned")])
    points = points.merge(prof[["model", "mode", "context_tokens", "latency_s"]],
                          on=["model", "mode", "context_tokens"], how="inner")
    if points.empty:
        raise ValueError("figures.pareto: no profile rows at the tasks' training lengths")
    points["label"] = label(points["model"], points["mode"])
    tasks = list(dict.fromkeys(points["task"]))
    labels = sorted(points["label"].unique(), key=lambda s: (s != "softmax", s))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
    for ax, task in zip(axes[0], tasks):
        sub = points[points["task"] == task]
        for _, row in sub.iterrows():
            ax.errorbar(row["latency_s"], row["error"],
                        yerr=[[row["error"] - row["error_lo"]], [row["error_hi"] - row["error"]]],
                        fmt="o", color=palette[row["label"]], label=row["label"], ms=5, capsize=2)
        ax.set_xscale("log")
        ax.set_title(f"{task.replace('_', ' ')} ({int(sub['context_tokens'].iloc[0])} tokens)",
                     fontsize="small")
        ax.set_xlabel(f"seconds per forward (batch {opts['batch_size']})")
    axes[0][0].set_ylabel(f"squared error / Var(y) at k = {k}")
    handles, names = [], []
    for ax in axes[0]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


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
    import seaborn as sns

    plt = _pyplot()
    df = _errors(tables)
    df = df[df["ood"] == opts["ood"]]
    k = int(opts["n_examples"])
    last = df.groupby("task")["n_examples"].transform("max")
    df = df[df["n_examples"] == (last if k < 0 else k)]
    if df.empty:
        raise ValueError(f"figures.variants: no rows with ood == {opts['ood']!r} and "
                         f"n_examples == {k}")
    points = (df[df["kind"] == "transformer"]
              .groupby(["task", "model", "mode"], as_index=False)
              [["error", "error_lo", "error_hi"]].mean())
    lines = df[df["kind"] == "baseline"].groupby(["task", "model"], as_index=False)["error"].mean()
    tasks = list(dict.fromkeys(df["task"]))
    # softmax first, then the variants in the table's order
    present = list(dict.fromkeys(df.loc[df["kind"] == "transformer", "model"]))
    models = sorted(present, key=lambda m: m != "softmax")
    baselines = sorted(lines["model"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    colours = dict(zip(baselines, sns.color_palette("Dark2", len(baselines))))
    marks = {"trained": ("o", -0.2, "tab:blue"), "finetuned": ("s", 0.0, "tab:green"),
             "swapped": ("^", 0.2, "tab:orange")}
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
    for ax, task in zip(axes[0], tasks):
        sub = points[points["task"] == task]
        for mode, (marker, shift, colour) in marks.items():
            rows = sub[sub["mode"] == mode].set_index("model").reindex(models).dropna()
            x = [models.index(m) + shift for m in rows.index]
            err = [(rows["error"] - rows["error_lo"]).clip(lower=0),
                   (rows["error_hi"] - rows["error"]).clip(lower=0)]
            ax.errorbar(x, rows["error"], yerr=err, fmt=marker, color=colour, capsize=2, ms=5,
                        lw=1, label=mode)
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
    axes[0][0].set_ylabel("squared error / Var(y)")
    handles, names = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(names, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=min(len(seen), 6),
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("last position" if k < 0 else f"{k} in-context examples")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _errors(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``icl_errors`` over training seeds: one row per model, mode, setting and k, its interval
    covering both the seeds and the prompts (:func:`iclbench.summary.over_seeds`)."""
    from iclbench.summary import over_seeds

    return over_seeds(tables["icl_errors"])


def _at_examples(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows at ``k`` in-context examples per task (-1: the last position; clamped to it)."""
    last = df.groupby("task")["n_examples"].transform("max")
    target = last if k < 0 else last.clip(upper=k)
    return df[df["n_examples"] == target]


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``label``: the model's name, with `` (swapped)`` or `` (finetuned)`` for those modes."""
    suffix = df["mode"].map({"swapped": " (swapped)", "finetuned": " (finetuned)"}).fillna("")
    return df.assign(label=df["model"] + suffix)


def _ood_curves(setting: str):  # type: ignore[no-untyped-def]
    """The draw function of figure ``ood_<setting>``: error against the setting's level."""

    def draw(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
        import pandas as pd
        import seaborn as sns

        from iclbench.ood import IN_DISTRIBUTION, OOD

        plt = _pyplot()
        df = _errors(tables)
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
    df = _labelled(_at_examples(_errors(tables), int(opts["n_examples"])))
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


@figure(
    "conversion",
    options={"n_examples": 10, "panel_width": 3.4, "panel_height": 3.0, "dpi": 150,
             "log_y": True},
    tables=("conversion", "icl_errors"),
    caption=(
        "Fine-tuned conversion: normalised error at n_examples in-context examples (clamped to "
        "the last position) on the conversion's own held-out prompts against fine-tuning steps "
        "(0: the variant just put into the trained softmax model, i.e. swapped), one line per "
        "variant (mean over seeds), one panel per task; the dashed line is the trained softmax "
        "model's in-distribution error at the same k (mean over seeds)."
    ),
)
def conversion(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    import seaborn as sns

    plt = _pyplot()
    curves = tables["conversion"]
    if curves.empty:
        raise ValueError("figures.conversion: no conversion curves")
    errors = _errors(tables)
    tasks = list(dict.fromkeys(curves["task"]))
    models = sorted(curves["model"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    palette = dict(zip(models, sns.color_palette("tab10", len(models))))
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(opts["panel_width"] * len(tasks), opts["panel_height"]))
    for ax, task in zip(axes[0], tasks):
        sub = curves[curves["task"] == task]
        k = min(int(opts["n_examples"]), int(sub["n_examples"].max()))
        at = sub[sub["n_examples"] == k].groupby(["model", "step"], as_index=False)["error"].mean()
        for model in models:
            c = at[at["model"] == model]
            if not c.empty:
                ax.plot(c["step"], c["error"], "o-", ms=3, color=palette[model], label=model)
        ref = errors[(errors["task"] == task) & (errors["model"] == "softmax")
                     & (errors["mode"] == "trained") & (errors["ood"] == "none")
                     & (errors["n_examples"] == k)]
        if not ref.empty:
            ax.axhline(float(ref["error"].iloc[0]), color="black", ls="--", lw=1,
                       label="softmax (trained)")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        positive = at.loc[at["step"] > 0, "step"]
        ax.set_xscale("symlog", linthresh=int(positive.min()) if len(positive) else 1)
        if opts["log_y"]:
            ax.set_yscale("log")
        ax.set_title(f"{task.replace('_', ' ')} (k = {k})")
        ax.set_xlabel("fine-tuning steps")
    axes[0][0].set_ylabel("squared error / Var(y)")
    handles, names = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(names, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=min(len(seen), 6),
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
