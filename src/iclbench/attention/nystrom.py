"""Causal Nystrom attention (Xiong et al. 2021, "Nystromformer", eqs. 13-16), registered as
``nystrom``: designs (a) and (b) of SPEC 5, chosen by ``landmarks_source``.

Nystromformer approximates ``softmax(Q K^T) V`` by ``softmax(Q Kl^T) pinv(softmax(Ql Kl^T))
softmax(Ql K^T) V`` with landmarks ``Ql, Kl`` = segment means of Q and K. Segment means read future
tokens, so the published method is not causal. Two causal designs (m = ``landmarks``, hs = head
size, all logits scaled by 1/sqrt(hs)):

- **(a) ``landmarks_source: segments``** (the default): the landmarks are segment means of Q and
  K; a query attends exactly to its own segment and through the Nystrom approximation to the
  completed earlier segments. Swappable into a softmax-trained model (``swapped:``). In
  :mod:`iclbench.attention._nystrom_segments`.
- **(b) ``landmarks_source: learned``**: input-independent landmarks, parameters of the module
  trained with the model, each landmark's softmax taken over the visible keys only; linear in T,
  trained only. In :mod:`iclbench.attention._nystrom_learned`, with
  :func:`~iclbench.attention._nystrom_learned.dense_reference`, the dense formula its kernel
  computes.

Both take the landmarks' pseudo-inverse from :mod:`iclbench.attention._nystrom_pinv`. This module
holds the registered layer: its options and their checks, its memory estimates, the cached
pseudo-inverse of (b) and the dispatch to a design.

Both: optional depthwise convolution skip on V (``conv_kernel > 0``, Nystromformer's residual
conv), left-padded so that it reads ``v_{i-k+1..i}`` only; zero when swapped into a softmax
model (so it changes nothing there), drawn with the other weights in a trained model. Work in (at
least) float32 inside, return the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.attention._nystrom_learned import (
    LANDMARK_INIT_STD,
    landmark_pinv,
    learned_attention,
)
from iclbench.attention._nystrom_segments import segments_attention
from iclbench.attention.base import ATTENTION, Attention
from iclbench.registry import at_least

SOURCES = ("segments", "learned")


@ATTENTION.register("nystrom")
class NystromAttention(Attention):
    options = {"landmarks": 8, "pinv_iterations": 6, "conv_kernel": 0,
               "landmarks_source": "segments", "chunk": 32, "pinv": "iterative"}
    ranges = {"landmarks": at_least(1), "pinv_iterations": at_least(0),
              "conv_kernel": at_least(0), "chunk": at_least(1)}
    approximates_softmax = True
    init_std = {"landmark_q": LANDMARK_INIT_STD, "landmark_k": LANDMARK_INIT_STD}

    def __init__(self, n_head: int, head_dim: int, **options: object) -> None:
        super().__init__(n_head, head_dim, **options)
        if self.opts["pinv"] not in ("iterative", "exact"):
            raise ValueError(f"pinv must be iterative or exact, got {self.opts['pinv']!r}")
        source = self.opts["landmarks_source"]
        if source not in SOURCES:
            raise ValueError(f"landmarks_source must be one of {', '.join(SOURCES)}, "
                             f"got {source!r}")
        if source == "segments" and "chunk" in options:
            raise ValueError("chunk applies to landmarks_source: learned only")
        kernel = self.opts["conv_kernel"]
        # depthwise conv on V, one kernel per head; zero at the start (see the module docstring)
        self.conv = nn.Parameter(torch.zeros(n_head, 1, kernel, 1)) if kernel else None
        if source == "learned":
            m = self.opts["landmarks"]
            # N(0, LANDMARK_INIT_STD^2): far apart from the start (Decoder re-draws them from
            # its seeded generator with the same std, init_std)
            self.landmark_q = nn.Parameter(torch.randn(n_head, m, head_dim) * LANDMARK_INIT_STD)
            self.landmark_k = nn.Parameter(torch.randn(n_head, m, head_dim) * LANDMARK_INIT_STD)
        self._pinv: Tensor | None = None  # see _cached_pinv
        self._pinv_key: tuple[Any, ...] | None = None

    @classmethod
    def check_swap(cls, options: Mapping[str, Any]) -> None:
        if options.get("landmarks_source", cls.options["landmarks_source"]) == "learned":
            raise ValueError(
                "landmarks_source: learned cannot be swapped into a softmax-trained model (its "
                "landmarks are trained parameters that a softmax model does not have); use "
                "landmarks_source: segments under swapped"
            )

    @classmethod
    def workspace_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                        training: bool) -> int:
        opts = {**cls.options, **options}
        iters = 1 if opts["pinv"] == "exact" else max(1, int(opts["pinv_iterations"]))
        m = min(int(opts["landmarks"]), tokens)
        if opts["landmarks_source"] == "learned":
            m = int(opts["landmarks"])  # the scores of every query against every landmark
            per_token = min(int(opts["chunk"]), tokens) + m + head_dim
            pinv = 0  # once per head: shared_numel
        else:
            per_token = math.ceil(tokens / m) + m + head_dim
            # one pseudo-inverse per completed prefix: m matrices of m x m, and in training the
            # iterates of each, saved for the backward pass
            pinv = (10 * iters if training else 12) * m**3
        return (4 if training else 2) * tokens * per_token + pinv

    @classmethod
    def shared_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                     training: bool) -> int:
        opts = {**cls.options, **options}
        if opts["landmarks_source"] != "learned":
            return 0
        iters = 1 if opts["pinv"] == "exact" else max(1, int(opts["pinv_iterations"]))
        m = int(opts["landmarks"])
        # the landmarks' m x m pseudo-inverse with its iterates (saved in training), and the
        # landmarks themselves with their gradients and Adam's moments
        return (8 * iters if training else 4) * m * m + 8 * m * head_dim

    @property
    def _iterations(self) -> int | None:
        """What :func:`iclbench.attention._nystrom_pinv.pinv_of` takes: the iteration count,
        or None for ``pinv: exact``."""
        return None if self.opts["pinv"] == "exact" else int(self.opts["pinv_iterations"])

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        work = torch.promote_types(q.dtype, torch.float32)  # at least float32 inside
        if self.opts["landmarks_source"] == "learned":
            y = learned_attention(q.to(work), k.to(work), v.to(work), self.landmark_q.to(work),
                                  self.landmark_k.to(work), self._iterations,
                                  self.opts["chunk"], self._cached_pinv(work))
        else:
            y = segments_attention(q, k, v, self.opts["landmarks"], self._iterations, work)
        if self.conv is not None:
            kernel = self.conv.shape[2]
            padded = F.pad(v.to(work), (0, 0, kernel - 1, 0))  # left only: causal
            y = y + F.conv2d(padded, self.conv.to(work), groups=self.n_head)
        return y.to(q.dtype)

    def _cached_pinv(self, work: torch.dtype) -> Tensor | None:
        """The landmarks' pseudo-inverse when autograd is off (evaluation, profiling), computed
        once and reused while the landmarks are unchanged (keyed on their storage and version
        counters, which every in-place update such as an optimiser step or ``load_state_dict``
        bumps); None while autograd is on (training computes it in every forward)."""
        if torch.is_grad_enabled():
            return None
        ql, kl = self.landmark_q, self.landmark_k
        key = (ql._version, kl._version, ql.data_ptr(), kl.data_ptr(), work, ql.device)
        if self._pinv_key != key:
            with torch.no_grad():
                self._pinv = landmark_pinv(ql.to(work) * self.head_dim**-0.5, kl.to(work),
                                           self._iterations)
            self._pinv_key = key
        return self._pinv
