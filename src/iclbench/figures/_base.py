"""The figure registry: what a figure declares, and writing one to disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iclbench.registry import Registry, check_options

if TYPE_CHECKING:  # plotting libraries load only when a figure is drawn
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure

Draw = Callable[["Mapping[str, pd.DataFrame]", Mapping[str, Any]], "MplFigure"]


@dataclass(frozen=True)
class Figure:
    """A registered figure: its draw function, its options (name -> default; the config's
    ``figures.<name>`` may set only these), the summary tables it reads and its report caption."""

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


def figure(name: str, options: Mapping[str, Any], tables: tuple[str, ...],
           caption: str) -> Callable[[Draw], Draw]:
    """Decorator registering ``draw`` as figure ``name``."""

    def decorate(draw: Draw) -> Draw:
        FIGURES.register(name)(Figure(draw, dict(options), tables, caption))
        return draw

    return decorate


def pyplot():  # type: ignore[no-untyped-def]
    """``matplotlib.pyplot`` on the Agg backend (no display: figures are only written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: MplFigure, pdf: str, png: str, dpi: int) -> None:
    """Write the figure as PDF and PNG (atomically) and close it."""
    from iclbench.results import write_with

    # fixed metadata so the same data gives the same PDF bytes
    write_with(lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}), pdf)
    write_with(lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), png)
    pyplot().close(fig)
