"""Figure ``payoff``: from which prompt length each cheaper variant pays, and its error there.

One column of panels per task. The upper rows: each non-softmax transformer's in-distribution
error relative to trained softmax of the same task, against the number of in-context examples k.
The lower rows: its speed-up over softmax (latency timed in turns, and the ratio of counted
operations) at the profile's lengths, in the same unit (examples: tokens / 2). A variant has one
colour throughout, its mode a marker. Where one row would carry more than ``max_series`` series,
the modes take a row each (rows are the same in every column; a task without a row's modes shows
it empty).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iclbench.analysis import total_ops
from iclbench.figures._base import figure, pyplot
from iclbench.figures._data import errors
from iclbench.figures._layout import LOG_SUBS, _log_ticks, legend_below, palette, plain_log_ticks
from iclbench.registry import Range

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

log = logging.getLogger(__name__)

#: the modes in the order their rows take, and each one's marker (others: after them, "D")
MODES = ("trained", "swapped", "finetuned")
MARKERS = {"trained": "o", "swapped": "s", "finetuned": "^"}
#: the mode whose profile rows give a mode's cost: a fine-tuned model has its swapped form's
#: architecture (as in figure ``pareto``)
COST_MODE = {"finetuned": "swapped"}
#: the reference every ratio is taken against
REFERENCE = ("softmax", "trained")


@figure(
    "payoff",
    options={"batch_size": 1, "log_y": True, "max_series": 6, "panel_width": 3.4,
             "panel_height": 2.4, "dpi": 150},
    tables=("icl_errors", "profile"),
    ranges={"batch_size": Range(1), "max_series": Range(1, 20)},
    caption=(
        "Where a cheaper variant pays, and what it costs in error there; one column per task. "
        "Upper rows: each non-softmax transformer's in-distribution normalised error divided by "
        "trained softmax's on the same task at the same number of in-context examples k (k >= 1, "
        "log axis; mean over seeds; the band is the variant's interval over seeds and prompts "
        "divided by softmax's mean error, so softmax's own uncertainty is not in it). Lower rows: "
        "its speed-up over trained softmax at the profile's context lengths, shown in examples "
        "(tokens / 2) at one batch size (option batch_size): softmax's forward latency, timed in "
        "turns with the variant, over the variant's (solid), and softmax's forward FLOPs over the "
        "variant's counted operations, FLOPs plus int8 operations (dashed; 1 for int8, which runs "
        "as many operations, cheaper ones). A fine-tuned model has its swapped form's cost (none "
        "where that was not profiled); models of the trained shape with random weights. One "
        "colour per variant, one marker per mode; the solid black line is parity with softmax "
        "(above it the variant is faster, or worse in error), the dotted line the task's "
        "training length. Where a row would hold more than max_series series, its modes take a "
        "row each."
    ),
)
def payoff(tables: Mapping[str, pd.DataFrame], opts: Mapping[str, Any]) -> MplFigure:
    batch = int(opts["batch_size"])
    costs = _speedups(_at_batch(tables["profile"], batch), batch)
    ratios, train_examples = _error_ratios(tables)
    tasks = list(dict.fromkeys(ratios["task"]))
    variants = sorted(set(ratios["model"]))
    colours = palette(variants)
    profiled = set(zip(costs["model"], costs["mode"]))
    _warn_unpriced(ratios, profiled)
    series = {task: _series(ratios[ratios["task"] == task], profiled) for task in tasks}
    error_modes = _mode_order(m for s in series.values() for _, m in s[0])
    cost_modes = _mode_order(m for s in series.values() for _, m in s[1])
    if not cost_modes:
        raise ValueError(f"figures.payoff: no profile rows at batch_size == {batch} of any "
                         "variant and mode evaluated (nothing to take a speed-up of)")
    cap = int(opts["max_series"])
    error_rows = _pack(error_modes, _max_count(s[0] for s in series.values()), cap)
    cost_rows = _pack(cost_modes, _max_count(s[1] for s in series.values()), cap)
    fig, grid = _grid(len(error_rows) + len(cost_rows), len(tasks), opts["panel_width"],
                      opts["panel_height"])
    upper, lower = grid[:len(error_rows)], grid[len(error_rows):]
    for col, task in enumerate(tasks):
        ratio_series, cost_series = series[task]
        drawn_upper = [row[col] for row, modes in zip(upper, error_rows)
                       if _ratio_panel(row[col], ratios[ratios["task"] == task],
                                       [s for s in ratio_series if s[1] in modes], colours,
                                       opts["log_y"])]
        drawn_lower = [row[col] for row, modes in zip(lower, cost_rows)
                       if _cost_panel(row[col], costs, [s for s in cost_series if s[1] in modes],
                                      colours, train_examples[task])]
        for drawn in (drawn_upper, drawn_lower):  # a kind's panels share their column's x axis
            for ax in drawn[1:]:
                ax.sharex(drawn[0])
        upper[0][col].set_title(f"{task.replace('_', ' ')} (trained at {train_examples[task]} "
                                "examples)", fontsize="small")
        upper[-1][col].set_xlabel("in-context examples k")
        lower[-1][col].set_xlabel("prompt length in examples (tokens / 2)")
    for row, modes in zip(upper, error_rows):  # which modes, where they take several rows
        row[0].set_ylabel("error / softmax's error"
                          + (f"\n({', '.join(modes)})" if len(error_rows) > 1 else ""))
    for row, modes in zip(lower, cost_rows):
        served = [m for m in error_modes if COST_MODE.get(m, m) in modes]
        row[0].set_ylabel(f"speed-up over softmax\n(batch {batch}"
                          + (f"; {', '.join(served)})" if len(cost_rows) > 1 else ")"))
    for ax in (ax for row in grid for ax in row):
        if ax.get_xscale() == "log":  # a panel with data (an empty one has no ticks)
            plain_log_ticks(ax)
            _plain_log_y(ax)
    _legend_entries(grid[0][0], variants, colours, error_modes)
    legend_below(fig, [grid[0][0]])
    return fig


# ------------------------------------------------------------------ the data


def _at_batch(profile: pd.DataFrame, batch: int) -> pd.DataFrame:
    """The profile rows at ``batch``; none is an error naming the option."""
    rows = profile[profile["batch_size"] == batch]
    if rows.empty:
        have = ", ".join(str(int(b)) for b in sorted(profile["batch_size"].unique())) or "none"
        raise ValueError(f"figures.payoff.batch_size: no profile rows with batch_size == {batch} "
                         f"(the profile has batch sizes {have}: the config's profile.batch_sizes)")
    return rows


def _speedups(prof: pd.DataFrame, batch: int) -> pd.DataFrame:
    """Each profiled (model, mode) other than trained softmax at each length: ``examples``
    (tokens / 2), ``latency_speedup`` (softmax's latency timed in turns with it / its own; the
    softmax job's own latency where the table has no paired one) and ``ops_ratio`` (softmax's
    counted operations at that length / its own, FLOPs and int8 operations together:
    :func:`iclbench.analysis.total_ops`; FLOPs alone for a float model)."""
    paired = "softmax_latency_s" in prof.columns
    cols = ["latency_s", "ops"] + (["softmax_latency_s"] if paired else [])
    df = (prof.assign(ops=total_ops(prof))
          .groupby(["model", "mode", "context_tokens"], as_index=False)[cols].mean())
    is_ref = (df["model"] == REFERENCE[0]) & (df["mode"] == REFERENCE[1])
    ref = df[is_ref].set_index("context_tokens")[["latency_s", "ops"]].add_prefix("ref_")
    if ref.empty:
        raise ValueError(f"figures.payoff: no trained softmax profile rows at batch_size == "
                         f"{batch} (every speed-up is over it)")
    df = df[~is_ref].join(ref, on="context_tokens", how="inner")
    ref_latency = df["softmax_latency_s"].fillna(df["ref_latency_s"]) if paired \
        else df["ref_latency_s"]
    return df.assign(examples=df["context_tokens"] / 2,
                     latency_speedup=ref_latency / df["latency_s"],
                     ops_ratio=df["ref_ops"] / df["ops"])


def _error_ratios(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The in-distribution errors of every non-softmax transformer over trained softmax's on the
    same task and k (``ratio``, ``ratio_lo``, ``ratio_hi``: its mean and interval ends over
    softmax's mean), for k >= 1 (the x axis is logarithmic); and each task's training length in
    examples (its last n_examples + 1). Tasks without a trained softmax are left out."""
    import numpy as np

    err = errors(tables)
    err = err[(err["kind"] == "transformer") & (err["ood"] == "none")]
    order = {task: i for i, task in enumerate(dict.fromkeys(err["task"]))}
    last = err.groupby("task")["n_examples"].max()
    train_examples = {str(task): int(n) + 1 for task, n in last.items()}
    cols = ["error", "error_lo", "error_hi"]
    err = err[err["n_examples"] >= 1].groupby(["task", "model", "mode", "n_examples"],
                                              as_index=False)[cols].mean()
    is_ref = (err["model"] == REFERENCE[0]) & (err["mode"] == REFERENCE[1])
    ref = err[is_ref].set_index(["task", "n_examples"])["error"].rename("reference")
    missing = sorted(set(err["task"]) - set(ref.index.get_level_values("task")))
    if missing:
        log.warning("figures.payoff: task(s) %s have no trained softmax; left out",
                    ", ".join(missing))
    out = err[err["model"] != REFERENCE[0]].join(ref, on=["task", "n_examples"], how="inner")
    for col in cols:
        out[col.replace("error", "ratio")] = out[col] / out["reference"]
    out = out[np.isfinite(out["ratio"])]
    if out.empty:
        raise ValueError("figures.payoff: no in-distribution errors of a non-softmax transformer "
                         "beside a trained softmax of the same task")
    out = out.sort_values(["task", "model", "mode", "n_examples"], key=lambda c: c.map(order)
                          if c.name == "task" else c, kind="stable")
    return out.reset_index(drop=True), train_examples


Series = list[tuple[str, str]]  # (model, mode) pairs


def _series(ratios: pd.DataFrame, profiled: set[tuple[str, str]]) -> tuple[Series, Series]:
    """One task's error series (model, mode) and cost series (model, profile mode): a mode's cost
    is its :data:`COST_MODE`'s, each once, those not in ``profiled`` left out."""
    error_series = sorted(set(zip(ratios["model"], ratios["mode"])),
                          key=lambda s: (_mode_rank(s[1]), s[0]))
    costs = {(model, COST_MODE.get(mode, mode)) for model, mode in error_series}
    return error_series, sorted(costs & profiled, key=lambda s: (_mode_rank(s[1]), s[0]))


def _warn_unpriced(ratios: pd.DataFrame, profiled: set[tuple[str, str]]) -> None:
    """Warn, once each, about the (model, mode)s with errors but no profile rows to price."""
    for model, mode in sorted(set(zip(ratios["model"], ratios["mode"]))):
        cost = COST_MODE.get(mode, mode)
        if (model, cost) not in profiled:
            log.warning("figures.payoff: no %s profile rows of %s to price its %s form; its "
                        "speed-up is left out", cost, model, mode)


def _mode_rank(mode: str) -> tuple[int, str]:
    return (MODES.index(mode) if mode in MODES else len(MODES), mode)


def _mode_order(modes: Iterable[str]) -> list[str]:
    """The distinct ``modes`` in row order: :data:`MODES`' order, any other after them by name."""
    return sorted(set(modes), key=_mode_rank)


def _max_count(per_task: Iterable[Series]) -> dict[str, int]:
    """mode -> the most series of that mode in any one task."""
    counts: dict[str, int] = {}
    for series in per_task:
        for mode in {m for _, m in series}:
            counts[mode] = max(counts.get(mode, 0), sum(m == mode for _, m in series))
    return counts


def _pack(modes: Sequence[str], counts: Mapping[str, int], cap: int) -> list[tuple[str, ...]]:
    """The modes, in order, grouped into rows of at most ``cap`` series each (a mode with more
    than ``cap`` takes a row alone)."""
    rows: list[list[str]] = []
    for mode in modes:
        if rows and sum(counts[m] for m in rows[-1]) + counts[mode] <= cap:
            rows[-1].append(mode)
        else:
            rows.append([mode])
    return [tuple(row) for row in rows]


# ------------------------------------------------------------------ drawing


def _grid(nrows: int, ncols: int, width: float,
          height: float) -> tuple[MplFigure, list[list[Axes]]]:
    """``nrows`` x ``ncols`` panels of ``width`` x ``height`` inches, in seaborn's paper theme."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = pyplot().subplots(nrows, ncols, squeeze=False,
                                  figsize=(ncols * width, nrows * height))
    return fig, [list(row) for row in axes]


def _ratio_panel(ax: Axes, ratios: pd.DataFrame, series: Series, colours: Mapping[str, Any],
                 log_y: bool) -> bool:
    """One task's error ratios of ``series`` against k, with their bands and parity at 1;
    whether there was any (else the panel says so)."""
    if not series:
        return _empty(ax)
    for model, mode in series:
        c = ratios[(ratios["model"] == model) & (ratios["mode"] == mode)].sort_values("n_examples")
        ax.plot(c["n_examples"], c["ratio"], "-", marker=_marker(mode),
                markevery=_log_spaced(c["n_examples"].to_numpy()), ms=4,
                color=colours[model], lw=1.4, gid=f"ratio:{model}:{mode}")
        # on a log axis, a band reaching 0 or below (seeds far apart) stops a decade under
        low = c["ratio_lo"].clip(lower=c["ratio"] / 10) if log_y else c["ratio_lo"]
        ax.fill_between(c["n_examples"], low, c["ratio_hi"], color=colours[model], alpha=0.15,
                        lw=0)
    _parity(ax)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    return True


def _cost_panel(ax: Axes, costs: pd.DataFrame, series: Series, colours: Mapping[str, Any],
                train_examples: int) -> bool:
    """Speed-ups of ``series`` against length: latency solid, operations ratio dashed (hollow
    markers); parity at 1 and the task's training length. Whether there was any."""
    if not series:
        return _empty(ax)
    for model, mode in series:
        c = costs[(costs["model"] == model) & (costs["mode"] == mode)].sort_values("examples")
        ax.plot(c["examples"], c["latency_speedup"], "-", marker=_marker(mode), ms=4,
                color=colours[model], lw=1.4, gid=f"latency:{model}:{mode}")
        ax.plot(c["examples"], c["ops_ratio"], "--", marker=_marker(mode), ms=4, mfc="white",
                color=colours[model], lw=1.1, gid=f"ops:{model}:{mode}")
    _parity(ax)
    ax.axvline(train_examples, color="dimgrey", ls=":", lw=1.2, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return True


def _log_spaced(k: np.ndarray, count: int = 8) -> list[int]:
    """Indices of about ``count`` of the increasing values ``k``, evenly spaced on a log axis
    (where the markers of a line of many points go)."""
    import numpy as np

    if len(k) <= count:
        return list(range(len(k)))
    targets = np.geomspace(k[0], k[-1], count)
    return sorted({int(np.abs(np.log(k) - np.log(t)).argmin()) for t in targets})


def _marker(mode: str) -> str:
    return MARKERS.get(mode, "D")


def _parity(ax: Axes) -> None:
    ax.axhline(1.0, color="black", lw=0.8, alpha=0.7, zorder=1)


def _empty(ax: Axes) -> bool:
    """A panel whose row has nothing on this task (False: nothing drawn)."""
    ax.text(0.5, 0.5, "none on this task", transform=ax.transAxes, ha="center", va="center",
            color="grey", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    return False


def _legend_entries(ax: Axes, variants: Sequence[str], colours: Mapping[str, Any],
                    modes: Sequence[str]) -> None:
    """Empty lines labelled for the legend (which :func:`legend_below` collects from ``ax``): a
    colour per variant, a marker per mode, the two measures' line styles and the guides."""
    for name in variants:
        ax.plot([], [], "-", color=colours[name], lw=2, label=name)
    for mode in modes:
        ax.plot([], [], ls="none", marker=_marker(mode), color="dimgrey", ms=5, label=mode)
    ax.plot([], [], "-", color="dimgrey", lw=1.4, label="latency speed-up")
    ax.plot([], [], "--", color="dimgrey", lw=1.1, label="FLOPs ratio (int8 ops counted)")
    ax.plot([], [], "-", color="black", lw=0.8, alpha=0.7, label="parity with softmax")
    ax.plot([], [], ":", color="dimgrey", lw=1.2, label="training length")


#: tick positions per decade on a log y axis, sparsest first: :data:`LOG_SUBS`, then finer ones
#: for a ratio axis spanning less than a decade (0.8, 1, 1.5 where 1, 2, 5 put one in view)
Y_SUBS = (*LOG_SUBS, (1, 1.5, 2, 3, 5, 8), tuple(range(1, 10)))


def _plain_log_y(ax: Axes) -> None:
    """The y axis of ``ax``, if logarithmic, labelled with plain numbers as
    :func:`plain_log_ticks` labels a log x axis: ticks at the sparsest of :data:`Y_SUBS` per
    decade that puts three in view (else the one that puts the most; the ends if none puts two)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if ax.get_yscale() != "log":
        return
    lo, hi = sorted(ax.get_ylim())
    options = [_log_ticks(lo, hi, subs) for subs in Y_SUBS]
    at = next((t for t in options if len(t) >= 3), max(options, key=len))
    if len(at) < 2:
        at = [float(f"{lo:.2g}"), float(f"{hi:.2g}")]
    ax.yaxis.set_major_locator(FixedLocator(sorted(set(at))))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(lo, hi)
