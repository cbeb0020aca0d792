"""Attention variants; importing this package registers every variant."""

import importlib
import pkgutil

from iclbench.attention.base import ATTENTION, Attention, build_attention


def _import_modules() -> None:
    """Import every public module of the package (alphabetically): importing one registers its
    attention variants, so adding one is the module plus its config entry."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_import_modules()

__all__ = ["ATTENTION", "Attention", "build_attention"]
