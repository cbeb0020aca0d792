"""The attention-variant interface and its registry.

Every variant is an ``nn.Module`` built by ``build(n_head, head_dim, **options)`` whose forward
takes per-head queries, keys and values ``q, k, v`` of shape (B, nh, T, hs) and returns the causal
attention output of the same shape: position ``i`` may read positions ``<= i`` only. The model owns
the projections; a variant owns only how queries meet keys, so a variant can be swapped into a
trained model at inference (``Decoder.set_attention``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from iclbench.registry import Registry, check_options


class Attention(nn.Module):
    """Base class: subclasses set ``options`` (name -> default) and implement ``forward``."""

    #: option name -> default; the config may set only these (``variants.<name>.<option>``)
    options: ClassVar[Mapping[str, Any]] = {}
    #: True where the variant approximates exact softmax attention (swappable into a softmax model)
    approximates_softmax: ClassVar[bool] = False
    #: True where the variant's cost grows slower than T^2 (tests fit the FLOPs exponent)
    subquadratic: ClassVar[bool] = False
    #: parameter name -> std of its N(0, std) initialisation where it differs from the model's
    #: N(0, 0.02) (``Decoder`` draws every parameter from its seeded generator)
    init_std: ClassVar[Mapping[str, float]] = {}

    def __init__(self, n_head: int, head_dim: int, **options: Any) -> None:
        super().__init__()
        check_options(options, self.options)
        self.n_head = n_head
        self.head_dim = head_dim
        self.opts: dict[str, Any] = {**self.options, **options}

    @classmethod
    def check_swap(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if ``options`` cannot be swapped into a softmax-trained model
        (e.g. they need parameters that only training gives); by default any options can."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


ATTENTION: Registry[type[Attention]] = Registry("attention variant")


def build_attention(
    name: str, n_head: int, head_dim: int, options: Mapping[str, Any] | None = None
) -> Attention:
    return ATTENTION.get(name)(n_head, head_dim, **dict(options or {}))
