"""Registered figures: each a function from the aggregated tables to a matplotlib figure.

A figure declares its options (name -> default; the config's ``figures.<name>`` may set only
these), the summary tables it reads, and a caption for the Snakemake report. Figures read only the
aggregated tables under ``results/summary/``.

Each figure lives in a module of this package and registers itself with :func:`figure`; every
module whose name does not start with ``_`` is imported here, so adding a figure is one new module
plus its entry under the config's ``figures:``. Shared pieces: ``_base`` (the registry, saving),
``_data`` (selecting rows: errors over seeds, the rows at k examples) and ``_layout`` (panels,
the legend below them, colours, log-axis ticks); labels come from :func:`iclbench.analysis.label`.
"""

from __future__ import annotations

from iclbench.figures._base import FIGURES, Draw, Figure, figure, save_figure
from iclbench.registry import import_modules

__all__ = ["FIGURES", "Draw", "Figure", "figure", "save_figure"]


import_modules(__name__, __path__)  # importing each registers its entries
