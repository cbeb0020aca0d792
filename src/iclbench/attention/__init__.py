"""Attention variants; importing this package registers every variant."""

from iclbench.attention.base import ATTENTION, Attention, build_attention
from iclbench.registry import import_modules


import_modules(__name__, __path__, skip=("base",))  # importing each registers its entries

__all__ = ["ATTENTION", "Attention", "build_attention"]
