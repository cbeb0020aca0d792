"""Layout shared by the figures: a row of panels, one legend below them, colours, log ticks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from iclbench.figures._base import pyplot

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.legend import Legend


def panels(n: int, width: float, height: float, style: str = "whitegrid",
           widths: Sequence[float] | None = None) -> tuple[MplFigure, list[Axes]]:
    """A row of ``n`` panels of ``width`` x ``height`` inches each (``widths``: one width per
    panel instead), in seaborn's paper theme."""
    import seaborn as sns

    sns.set_theme(style=style, context="paper")
    widths = list(widths) if widths is not None else [width] * n
    fig, axes = pyplot().subplots(1, n, squeeze=False, figsize=(sum(widths), height),
                                  gridspec_kw={"width_ratios": widths})
    return fig, list(axes[0])


def palette(labels: Sequence[str], name: str = "tab10") -> dict[str, Any]:
    """A distinct colour per label, in order: seaborn's palette ``name``; tab10 goes on with its
    ten light tints (tab20's other half) rather than repeat. Past that, evenly spaced hues."""
    import seaborn as sns

    colours = list(sns.color_palette(name))
    if name == "tab10":
        colours += list(sns.color_palette("tab20"))[1::2]
    if len(labels) > len(colours):
        colours = list(sns.color_palette("husl", len(labels)))
    return dict(zip(labels, colours))


def legend_below(fig: MplFigure, axes: Iterable[Axes], order: Sequence[str] = ()) -> Legend | None:
    """One legend under the panels, then the layout.

    The legend lists every label drawn in any of ``axes`` once (in ``order``'s order where given,
    else as first drawn), in as many columns as fit the figure's width; the figure grows by the
    legend's height and the panels are laid out above it, so it covers no axis or tick label.
    """
    entries = _entries(axes, order)
    if not entries:
        fig.tight_layout()
        return None
    renderer = fig.canvas.get_renderer()
    for ncol in range(len(entries), 0, -1):
        legend = fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=ncol,
                            frameon=False, bbox_to_anchor=(0.5, 0.0))
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
    width, height = fig.get_size_inches()
    below = legend.get_window_extent(renderer).y1 / fig.dpi  # inches, with the pad under it
    fig.set_size_inches(width, height + below)
    fig.tight_layout(rect=(0, below / (height + below), 1, 1))
    return legend


def _entries(axes: Iterable[Axes], order: Sequence[str]) -> dict[str, Any]:
    """label -> handle over ``axes`` (the first handle of each label), sorted by ``order``."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(seen, key=lambda n: rank.get(n, len(rank)))  # stable: unknowns as drawn
    return {n: seen[n] for n in names}


def plain_log_ticks(ax: Axes, at: Sequence[float] | None = None) -> None:
    """Label the log x axis of ``ax`` with plain numbers (0.02, 0.5, 3).

    Matplotlib labels the minor ticks of an axis spanning less than a decade as 2x10^-2,
    3x10^-2, ..., which run into each other. Ticks go at ``at`` (e.g. an OOD setting's levels),
    else at the sparsest of 1; 1, 2, 5; 1, 2, 3, 5 per decade that puts three in view (or the
    one that puts the most; 1 to 9 if none puts two).
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if at is None:
        lo, hi = sorted(ax.get_xlim())
        options = [_log_ticks(lo, hi, subs) for subs in LOG_SUBS]
        at = next((t for t in options if len(t) >= 3), max(options, key=len))
        if len(at) < 2:
            at = _log_ticks(lo, hi, tuple(range(1, 10)))
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(at))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


#: tick positions per decade that :func:`plain_log_ticks` tries, sparsest first
LOG_SUBS = ((1,), (1, 2, 5), (1, 2, 3, 5))


def _log_ticks(lo: float, hi: float, subs: Sequence[int]) -> list[float]:
    """``s x 10^e`` for each s in ``subs`` and every decade, those between ``lo`` and ``hi``."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    # via the decimal string: 0.3, not 3 * 10**-1 == 0.30000000000000004
    ticks = (float(f"{s}e{e}") for e in decades for s in subs)
    return [t for t in ticks if lo <= t <= hi]


def curve_colours(labels: Sequence[str], baselines: Iterable[str]) -> dict[str, Any]:
    """Colours of learning curves: the transformers' labels from tab10 (solid lines), the
    ``baselines``' from Dark2 (dashed, as in the variants figure), each in ``labels``' order."""
    later = set(baselines)
    return {**palette([n for n in labels if n not in later]),
            **palette([n for n in labels if n in later], "Dark2")}


def curve_panels(df: pd.DataFrame, x: str, width: float, height: float, markers: bool,
                 ) -> tuple[MplFigure, list[Axes], list[tuple[str, pd.DataFrame]], list[str]]:
    """One panel per task of ``df`` (labelled rows), each label's mean error against column ``x``
    with its interval band: transformers solid, baselines dashed (``markers``: with points).
    Returns the figure, its axes, each task's curves and the labels in legend order."""
    from iclbench.figures._data import label_order

    values = ["error", "error_lo", "error_hi"] + (["n_examples"] if x != "n_examples" else [])
    curves = df.groupby(["task", "label", "kind", x], as_index=False)[values].mean()
    tasks = list(dict.fromkeys(df["task"]))
    baselines = set(df.loc[df["kind"] == "baseline", "label"])
    labels = label_order(curves["label"], baselines)
    colours = curve_colours(labels, baselines)
    styles = (("o-", "s--"), 1.3, 0.15) if markers else (("-", "--"), 1.5, 0.2)
    fig, axes = panels(len(tasks), width, height)
    per_task = []
    for ax, task in zip(axes, tasks):
        sub = curves[curves["task"] == task]
        per_task.append((task, sub))
        for name in labels:
            c = sub[sub["label"] == name].sort_values(x)
            if c.empty:
                continue
            style = styles[0][0] if (c["kind"] == "transformer").all() else styles[0][1]
            ax.plot(c[x], c["error"], style, color=colours[name], label=name, lw=styles[1],
                    **({"ms": 3} if markers else {}))
            ax.fill_between(c[x], c["error_lo"], c["error_hi"], color=colours[name],
                            alpha=styles[2], lw=0)
    return fig, list(axes), per_task, labels
