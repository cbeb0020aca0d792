"""The attention-variant interface and its registry.

Every variant is an ``nn.Module`` built by ``build(n_head, head_dim, **options)`` whose forward
takes per-head queries, keys and values ``q, k, v`` of shape (B, nh, T, hs) and returns the causal
attention output of the same shape: position ``i`` may read positions ``<= i`` only. The model owns
the projections; a variant owns only how queries meet keys, so a variant can be swapped into a
trained model at inference (``Decoder.set_attention``).

Every variant also takes the option ``qk_norm`` (default false): LayerNorm of each head's queries
and keys over the head dimension, with a learned scale per head and channel, before they meet
(Dehghani et al. 2023; Wortsman et al. 2023 train ReLU attention with it). The model applies it
through :meth:`Attention.norm_qk`, so it works the same for every variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.registry import Configurable, Registry


class Attention(nn.Module, Configurable):
    """Base class: subclasses set ``options`` (name -> default; the config may set only these,
    ``variants.<name>.<option>``, and ``qk_norm``), optionally ``ranges``, and implement
    ``forward``."""

    #: True where the variant approximates exact softmax attention (swappable into a softmax model)
    approximates_softmax: ClassVar[bool] = False
    #: True where the variant's cost grows slower than T^2 (tests fit the FLOPs exponent)
    subquadratic: ClassVar[bool] = False
    #: parameter name -> std of its N(0, std) initialisation where it differs from the model's
    #: N(0, 0.02) (``Decoder`` draws every parameter from its seeded generator)
    init_std: ClassVar[Mapping[str, float]] = {}

    @classmethod
    def option_defaults(cls) -> Mapping[str, Any]:
        return {**cls.options, "qk_norm": False}

    def __init__(self, n_head: int, head_dim: int, **options: Any) -> None:
        super().__init__()
        self.opts: dict[str, Any] = self.check_options(options)
        self.n_head = n_head
        self.head_dim = head_dim
        if self.opts["qk_norm"]:
            # "ln" in the names: the decoder initialises them to 1, like its LayerNorms
            self.ln_q = nn.Parameter(torch.ones(n_head, 1, head_dim))  # (nh, 1, hs)
            self.ln_k = nn.Parameter(torch.ones(n_head, 1, head_dim))

    def norm_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys (B, nh, T, hs) as the core sees them: LayerNorm over hs times a
        learned per-head scale with ``qk_norm``, unchanged otherwise."""
        if not self.opts["qk_norm"]:
            return q, k
        return (F.layer_norm(q, (self.head_dim,)) * self.ln_q,
                F.layer_norm(k, (self.head_dim,)) * self.ln_k)

    @classmethod
    def workspace_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                        training: bool) -> int:
        """Elements one head of one prompt holds in this attention at ``tokens`` tokens beyond
        q, k, v and the output: saved for the backward pass (``training``), or live at once in a
        forward without autograd. It bounds a job's memory when the DAG is built
        (:mod:`iclbench.budget`, checked against measured peaks in ``tests/test_budget.py``).
        The default is the dense causal score matrix: four copies in training (the scores, their
        scaled and normalised forms, saved for the backward pass), two otherwise."""
        return (4 if training else 2) * tokens * tokens

    @classmethod
    def shared_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                     training: bool) -> int:
        """Elements one head holds whatever the batch (computed once per head, such as the
        pseudo-inverse of learned landmarks), beside :meth:`workspace_numel`; none by default."""
        return 0

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
