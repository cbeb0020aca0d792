"""The figure registry: what a figure declares, and writing one to disk."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iclbench.registry import Registry, check_options

if TYPE_CHECKING:  # plotting libraries load only when a figure is drawn
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure

#: options that are sizes in inches, their largest value, and the allowed dots per inch
SIZES = ("width", "height", "panel_width", "panel_height")
MAX_INCHES = 100.0
DPI = (10, 1200)

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
        """Known names, and values of their default's type: an integer where the default is
        one, a finite number where it is a float, true/false where it is a bool (a None default
        takes anything the figure accepts; a string default, a string). Sizes are positive and at most :data:`MAX_INCHES`,
        ``dpi`` within :data:`DPI` (matplotlib fails below it; above, a PNG needs gigabytes)."""
        check_options(options, self.options)
        for key, value in options.items():
            default = self.options[key]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer, got {value!r}")
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string, got {value!r}")
            elif isinstance(default, float):
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not math.isfinite(value)):
                    raise ValueError(f"{key} must be a number, got {value!r}")
            if key == "dpi" and not DPI[0] <= value <= DPI[1]:
                raise ValueError(f"dpi must lie in [{DPI[0]}, {DPI[1]}], got {value!r}")
            if key in SIZES and not 0 < value <= MAX_INCHES:
                raise ValueError(f"{key} must lie in (0, {MAX_INCHES}] inches, got {value!r}")

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
