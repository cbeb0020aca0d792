"""The figure registry: what a figure declares, and writing one to disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iclbench.registry import Range, Registry, check_declaration, resolve_options

if TYPE_CHECKING:  # plotting libraries load only when a figure is drawn
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure

#: the largest size in inches, and the ranges of the options every figure that has them shares:
#: sizes are positive and at most MAX_INCHES, dpi within [10, 1200] (matplotlib fails below it;
#: above, a PNG needs gigabytes)
MAX_INCHES = 100.0
_SIZE = Range(0, MAX_INCHES, open_low=True, unit=" inches")
SHARED_RANGES: Mapping[str, Range] = {"width": _SIZE, "height": _SIZE, "panel_width": _SIZE,
                                      "panel_height": _SIZE, "dpi": Range(10, 1200)}

Draw = Callable[["Mapping[str, pd.DataFrame]", Mapping[str, Any]], "MplFigure"]


@dataclass(frozen=True)
class Figure:
    """A registered figure: its draw function, its options (name -> default; the config's
    ``figures.<name>`` may set only these) with their ranges, the summary tables it reads and its
    report caption. Options are checked the registries' one way
    (:func:`iclbench.registry.resolve_options`): values of their default's type, within their
    range (:data:`SHARED_RANGES` for the sizes and ``dpi``)."""

    draw: Draw
    options: Mapping[str, Any]
    tables: tuple[str, ...]
    caption: str
    ranges: Mapping[str, Range] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_declaration(self.options, self.ranges,
                          f"figure {getattr(self.draw, '__name__', self.draw)!s}")

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Raise ``ValueError`` for options the figure cannot take; return them with the
        defaults of the rest."""
        return resolve_options(self.options, options, self.ranges)

    def render(self, tables: Mapping[str, pd.DataFrame], options: Mapping[str, Any]) -> MplFigure:
        return self.draw(tables, self.check_options(options))


FIGURES: Registry[Figure] = Registry("figure")


def figure(name: str, options: Mapping[str, Any], tables: tuple[str, ...], caption: str,
           ranges: Mapping[str, Range] | None = None) -> Callable[[Draw], Draw]:
    """Decorator registering ``draw`` as figure ``name``; its options' ranges are ``ranges``
    over :data:`SHARED_RANGES` (those of its options)."""
    shared = {key: bounds for key, bounds in SHARED_RANGES.items() if key in options}

    def decorate(draw: Draw) -> Draw:
        FIGURES.register(name)(Figure(draw, dict(options), tables, caption,
                                      {**shared, **(ranges or {})}))
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
