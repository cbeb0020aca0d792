"""Causal Nystrom attention (Xiong et al. 2021, "Nystromformer", eqs. 13-16), design (a) of SPEC 5.

Nystromformer approximates ``softmax(Q K^T) V`` by ``softmax(Q Kl^T) pinv(softmax(Ql Kl^T))
softmax(Ql K^T) V`` with landmarks ``Ql, Kl`` = segment means of Q and K. Segment means read future
tokens, so the published method is not causal. Here the sequence is cut into ``landmarks`` segments
of ``s = ceil(T / landmarks)`` tokens and query ``i`` in segment ``c`` combines

- exact causal attention to the keys of its own segment at positions ``<= i``, and
- the ordinary (non-causal) Nystrom approximation of its attention to the *completed* prefix,
  segments ``0 .. c-1``, which lies wholly in the past: landmarks of those segments only,
  ``F = softmax(q_i Kl_<c^T)``, ``A_c = softmax(Ql_<c Kl_<c^T)`` and its pseudo-inverse ``Z_c`` by
  the iteration ``Z <- Z (13I - A Z (15I - A Z (7I - A Z))) / 4`` (``pinv_iterations`` times, from
  ``Z_0 = A_c^T / (||A_c||_1 ||A_c||_inf)``, norms per matrix), and
  ``B_c = softmax(Ql_<c K_prefix^T) V_prefix`` over the prefix keys only; evaluated right to left,
  ``F (Z_c B_c)``, with ``Z_c B_c`` (landmarks x hs) formed once per segment.

A causal design needs one pseudo-inverse per prefix: a single pseudo-inverse of all landmarks
would mix later segments into earlier ones (``Z_0`` and its norms already read every landmark).

The two parts share one softmax normaliser: the prefix's softmax mass is estimated from the
landmarks, ``s * sum_{r<c} exp(q_i . Kl_r / sqrt(hs))`` (each completed segment's ``s`` keys stand
in by their mean). Everything query ``i`` reads lies in segments ``<= c`` and, within segment ``c``,
at positions ``<= i``: the layer is causal. Optional depthwise convolution skip on V
(``conv_kernel > 0``, Nystromformer's residual conv) is left-padded, so it reads ``v_{i-k+1..i}``
only; its weights start at zero, so swapping the variant into a softmax model is unaffected by it.

Exact limits: one segment (``landmarks = 1``) is exact causal softmax; one token per segment
(``landmarks >= T``) is exact once the pseudo-inverse has converged. Cost: O(T (s + m) hs) for
the attention and O(m^4) for the m per-prefix pseudo-inverses (m = landmarks; independent of T);
the T x T matrix is never formed. The landmark part is linear in T for a fixed m; the exact
in-segment part is T s = T^2 / m, so choose m ~ sqrt(T) at long contexts. Works in (at least)
float32 inside, returns the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.attention._blocks import (
    block_counts,
    block_masks,
    chunks,
    local_and_summary_attention,
    to_blocks,
)
from iclbench.attention.base import ATTENTION, Attention


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Pseudo-inverse of each matrix in ``a`` (..., m, m) by Nystromformer's iteration (eq. 16).

    ``Z_0 = A^T / (||A||_1 ||A||_inf)`` with the norms of each matrix (max column sum, max row sum);
    an all-zero matrix gets ``Z = 0``. Zero rows and columns stay zero, so a smaller matrix padded
    with zeros gets its own pseudo-inverse padded with zeros.
    """
    norm = a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1)  # (...,)
    z = a.transpose(-1, -2) / norm.clamp_min(torch.finfo(a.dtype).tiny)[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def prefix_values(ql: Tensor, kl: Tensor, k: Tensor, v: Tensor, iterations: int) -> Tensor:
    """``pinv(A_c) B_c`` for every prefix ``c`` of completed segments, shape (n, m, m, hs).

    ql, kl: (n, m, hs) landmarks (``ql`` scaled); k, v: (n, m, s, hs). Entry ``[:, c, r]`` is the
    row of landmark ``r < c`` in the prefix of segments ``0 .. c-1`` (zero for ``r >= c``).
    """
    n, m, s, hs = k.shape
    idx = torch.arange(m, device=k.device)
    before = idx[None, :] < idx[:, None]  # (c, g): segment g completed before segment c
    # B_c = softmax(ql K_{<c}^T) V_{<c}, from per-(landmark, segment) partial sums
    logit = (ql @ k.reshape(n, m * s, hs).transpose(-1, -2)).view(n, m, m, s)  # (n, r, g, s)
    top = logit.amax(-1)  # (n, r, g)
    e = (logit - top[..., None]).exp_()
    sums = e.sum(-1)  # (n, r, g)
    num = (e.transpose(1, 2) @ v).transpose(1, 2)  # (n, r, g, hs)
    del logit, e
    rows = top[:, :, None, :].expand(n, m, m, m)  # (n, r, c, g)
    rows = torch.where(before[None, None], rows, float("-inf"))
    peak = rows.amax(-1, keepdim=True)  # (n, r, c, 1); -inf for c = 0
    w = torch.where(before[None, None], rows - torch.where(peak.isfinite(), peak, 0.0),
                    float("-inf")).exp()  # (n, r, c, g)
    b = torch.einsum("nrcg,nrgd->ncrd", w, num)
    b = b / torch.einsum("nrcg,nrg->ncr", w, sums).clamp_min(torch.finfo(b.dtype).tiny)[..., None]
    # A_c = softmax(ql_<c kl_<c^T), zero outside the c x c corner
    cols = torch.maximum(before, idx[None, :] == 0)  # c = 0: a harmless column, rows zeroed below
    a = torch.where(cols[None, :, None, :], (ql @ kl.transpose(-1, -2))[:, None], float("-inf"))
    a = torch.softmax(a, dim=-1) * before[None, :, :, None]  # (n, c, r, r')
    return iterative_pinv(a, iterations) @ b  # (n, c, r, hs)


@ATTENTION.register("nystrom")
class NystromAttention(Attention):
    options = {"landmarks": 8, "pinv_iterations": 6, "conv_kernel": 0}
    approximates_softmax = True

    def __init__(self, n_head: int, head_dim: int, **options: object) -> None:
        super().__init__(n_head, head_dim, **options)
        for key, low in (("landmarks", 1), ("pinv_iterations", 0), ("conv_kernel", 0)):
            val = self.opts[key]
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {val!r}")
        kernel = self.opts["conv_kernel"]
        # depthwise conv on V, one kernel per head; zero at the start (see the module docstring)
        self.conv = nn.Parameter(torch.zeros(n_head, 1, kernel, 1)) if kernel else None

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, H, T, hs = q.shape
        work = torch.promote_types(q.dtype, torch.float32)  # at least float32 inside
        s = math.ceil(T / min(self.opts["landmarks"], T))
        qb, kb, vb = (to_blocks(t.to(work).reshape(B * H, T, hs), s) for t in (q, k, v))
        scale = hs**-0.5
        N, m = qb.shape[:2]
        counts = block_counts(T, s, q.device)[None, :, None]
        ql, kl = qb.sum(2) * (scale / counts), kb.sum(2) / counts  # (N, m, hs) segment means
        out = qb.new_empty(N, m, s, hs)
        # a completed segment's landmark stands for its s keys
        local_mask, summary_mask = block_masks(s, m, m, math.log(s), q.device)
        for heads in chunks(N, m * m * s):
            vhat = prefix_values(ql[heads], kl[heads], kb[heads], vb[heads],
                                 self.opts["pinv_iterations"])  # (n, c, r, hs)
            n = vhat.shape[0]
            for blocks in chunks(m, n * s * (s + m)):
                out[heads, blocks] = local_and_summary_attention(
                    qb[heads, blocks], kb[heads, blocks], vb[heads, blocks], kl[heads],
                    vhat[:, blocks], local_mask, summary_mask[blocks], scale,
                )
        y = out.view(B, H, m * s, hs)[:, :, :T]
        if self.conv is not None:
            kernel = self.conv.shape[2]
            padded = F.pad(v.to(work), (0, 0, kernel - 1, 0))  # left only: causal
            y = y + F.conv2d(padded, self.conv.to(work), groups=H)
        return y.to(q.dtype)
