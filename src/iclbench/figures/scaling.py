"""Figure ``scaling``: inference latency and FLOPs against context length, per variant."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iclbench.analysis import crossovers
from iclbench.figures._base import figure
from iclbench.figures._data import label_order, profile_rows, with_labels
from iclbench.figures._layout import legend_below, palette, panels

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure


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
    df = with_labels(profile_rows(tables["profile"], opts, "scaling")).sort_values("context_tokens")
    labels = label_order(df["label"])
    colours = palette(labels)
    fig, (ax_t, ax_f) = panels(2, opts["width"] / 2, opts["height"])
    for name in labels:
        g = df[df["label"] == name]
        ax_t.plot(g["context_tokens"], g["latency_s"], "o-", ms=3, color=colours[name], label=name)
        half_iqr = g["latency_iqr_s"] / 2
        ax_t.fill_between(g["context_tokens"], (g["latency_s"] - half_iqr).clip(lower=1e-9),
                          g["latency_s"] + half_iqr, color=colours[name], alpha=0.2, lw=0)
        ax_f.plot(g["context_tokens"], g["flops"], "o-", ms=3, color=colours[name], label=name)
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
    legend_below(fig, [ax_t], order=labels)
    if ((df["model"] == "softmax") & (df["mode"] == "trained")).any():
        # after the layout: the speed-up labels are spaced in the axes' final size
        _mark_crossovers(ax_t, df, int(opts["batch_size"]), colours)
    return fig


def _mark_crossovers(ax: Axes, df: pd.DataFrame, batch_size: int,
                     colours: Mapping[str, Any]) -> None:
    """A dotted line at each variant's crossover length, and its speed-up at the longest length
    written beside its last point (moved up where two would overlap)."""
    from matplotlib.font_manager import FontProperties

    cross = with_labels(crossovers(df, batch_size))
    cross = cross[cross["crossover_tokens"].notna()]
    ends = [float(df.loc[df["label"] == name, "latency_s"].iloc[-1]) for name in cross["label"]]
    size = FontProperties(size="x-small").get_size_in_points()
    shifts = _spread([_points_up(ax, y) for y in ends], 1.1 * size)
    for (_, row), y, shift in zip(cross.iterrows(), ends, shifts):
        colour = colours[row["label"]]
        ax.axvline(row["crossover_tokens"], color=colour, ls=":", lw=1)
        ax.annotate(f"{row['speedup_at_longest']:.1f}x", (row["longest_tokens"], y),
                    xytext=(3, shift), textcoords="offset points", fontsize=size, color=colour,
                    va="center")


def _points_up(ax: Axes, y: float) -> float:
    """Height of data value ``y`` above the bottom of ``ax``, in points."""
    bottom = ax.transData.transform((1.0, ax.get_ylim()[0]))[1]
    return float(ax.transData.transform((1.0, y))[1] - bottom) * 72 / ax.figure.dpi


def _spread(heights: list[float], gap: float) -> list[float]:
    """How far to move each of ``heights`` up so that no two are closer than ``gap`` (the lowest
    stays; each other moves up only as far as the one below it requires)."""
    shifts = [0.0] * len(heights)
    floor = -math.inf
    for i in sorted(range(len(heights)), key=lambda j: heights[j]):
        placed = max(heights[i], floor + gap)
        shifts[i], floor = placed - heights[i], placed
    return shifts
