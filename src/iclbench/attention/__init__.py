"""Attention variants; importing this package registers every variant."""

# imported for their registration side effects
from iclbench.attention import combiner, nystrom, relu, softmax  # noqa: F401
from iclbench.attention.base import ATTENTION, Attention, build_attention

__all__ = ["ATTENTION", "Attention", "build_attention"]
