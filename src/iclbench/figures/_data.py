"""Row selection shared by the figures: errors over seeds, the rows at k examples, labels."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from iclbench.analysis import label

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: the ``n_examples`` option's value for each task's last position
LAST = -1


def errors(tables: Mapping[str, pd.DataFrame], ood: str | None = None,
           figure: str = "") -> pd.DataFrame:
    """``icl_errors`` over training seeds: one row per model, mode, setting and k, its interval
    covering both the seeds and the prompts (:func:`iclbench.summary.over_seeds`). With ``ood``,
    the rows of that setting only (a figure's ``ood`` option): none is an error naming ``figure``.
    """
    from iclbench.summary import over_seeds

    df = over_seeds(tables["icl_errors"])
    if ood is None:
        return df
    df = df[df["ood"] == ood]
    if df.empty:
        raise ValueError(f"figures.{figure}: no rows with ood == {ood!r}")
    return df


def at_examples(df: pd.DataFrame, k: int, figure: str, why: str = "") -> pd.DataFrame:
    """The rows at ``k`` in-context examples: every figure's ``n_examples`` option means this.

    ``k < 0`` (-1 in the configs): each task's last position, i.e. its largest ``n_examples``
    (tasks of different lengths each at their own). ``k >= 0``: exactly ``k``, never clamped, so
    a title that says k says what is plotted; a task whose prompts are shorter has no rows at k
    and is left out with a warning. Raises ``ValueError`` naming ``figure`` (and ``why``, a hint
    about where k came from) when no row is left.
    """
    last = df.groupby("task")["n_examples"].transform("max")
    rows = df[df["n_examples"] == (last if k < 0 else k)]
    if rows.empty:
        raise ValueError(f"figures.{figure}: no rows with n_examples == {k}{why}")
    short = sorted(set(df["task"]) - set(rows["task"]))
    if short:
        log.warning("figures.%s: task(s) %s have no rows at n_examples == %d; left out", figure,
                    ", ".join(short), k)
    return rows


def profile_rows(df: pd.DataFrame, opts: Mapping[str, Any], figure: str) -> pd.DataFrame:
    """The profile rows at the figure's ``batch_size``; an error naming the figure if none."""
    rows = df[df["batch_size"] == int(opts["batch_size"])]
    if rows.empty:
        raise ValueError(f"figures.{figure}: no profile rows with batch_size == "
                         f"{opts['batch_size']}")
    return rows


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``label`` column: each row's (model, mode) as
    :func:`iclbench.analysis.label` names it."""
    return df.assign(label=label(df["model"], df["mode"]))


def label_order(labels: Iterable[str], baselines: Iterable[str] = ()) -> list[str]:
    """The order labels take in legends and colours: trained softmax (the reference), the other
    transformers, then ``baselines``, each group by name."""
    later = set(baselines)
    return sorted(set(labels), key=lambda m: (m in later, m != "softmax", m))
