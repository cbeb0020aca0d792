"""Design (a) of causal Nystrom attention (:mod:`iclbench.attention.nystrom`), ``landmarks_source:
segments`` (the default): the landmarks are segment means of Q and K (m = ``landmarks``, hs = head
size, all logits scaled by 1/sqrt(hs)).

The sequence is cut into m segments of ``s = ceil(T / m)`` tokens and query ``i`` in segment ``c``
combines

- exact causal attention to the keys of its own segment at positions ``<= i``, and
- the ordinary (non-causal) Nystrom approximation of its attention to the *completed* prefix,
  segments ``0 .. c-1``, which lies wholly in the past: landmarks of those segments only,
  ``F = softmax(q_i Kl_<c^T)``, ``A_c = softmax(Ql_<c Kl_<c^T)`` and its pseudo-inverse ``Z_c`` by
  the iteration ``Z <- Z (13I - A Z (15I - A Z (7I - A Z))) / 4`` (``pinv_iterations`` times, from
  ``Z_0 = A_c^T / (||A_c||_1 ||A_c||_inf)``, norms per matrix; or, with ``pinv: exact``,
  ``torch.linalg.pinv`` in float64), and
  ``B_c = softmax(Ql_<c K_prefix^T) V_prefix`` over the prefix keys only; evaluated right to left,
  ``F (Z_c B_c)``, with ``Z_c B_c`` (landmarks x hs) formed once per segment.

A causal design needs one pseudo-inverse per prefix: a single pseudo-inverse of all landmarks
would mix later segments into earlier ones (``Z_0`` and its norms already read every landmark).
The two parts share one softmax normaliser: the prefix's softmax mass is estimated from the
landmarks, ``s * sum_{r<c} exp(q_i . Kl_r)`` (each completed segment's ``s`` keys stand in by their
mean). Everything query ``i`` reads lies in segments ``<= c`` and, within segment ``c``, at
positions ``<= i``: the layer is causal. Its landmarks are computed from Q and K, so (a) can be
swapped into a softmax-trained model (``swapped:``). Exact limits: one segment (m = 1) is exact
causal softmax; one token per segment (m >= T) is exact once the pseudo-inverse has converged.
Cost: O(T (s + m) hs) for the attention and O(m^4) for the m per-prefix pseudo-inverses
(independent of T). The landmark part is linear in T for a fixed m, but the exact in-segment part
is T s = T^2 / m: (a) is quadratic in T for a fixed m (T sqrt(T) with m ~ sqrt(T)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iclbench.attention._blocks import (
    block_counts,
    block_elements,
    block_masks,
    chunks,
    local_and_summary_attention,
    to_blocks,
)
from iclbench.attention._nystrom_pinv import pinv_of


def prefix_values(ql: Tensor, kl: Tensor, k: Tensor, v: Tensor,
                  iterations: int | None) -> Tensor:
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
    return pinv_of(a, iterations) @ b  # (n, c, r, hs)


def segments_attention(q: Tensor, k: Tensor, v: Tensor, landmarks: int, iterations: int | None,
                       work: torch.dtype) -> Tensor:
    """Design (a) on q, k, v (B, H, T, hs) with ``landmarks`` segments (fewer if T is shorter),
    computed in ``work`` (the output too); ``iterations`` as :func:`pinv_of`. The exact
    in-segment part and the landmark part over the completed segments share one normaliser
    (:func:`iclbench.attention._blocks.local_and_summary_attention`); heads and segments are
    taken in chunks that fit :data:`iclbench.attention._blocks.WORK_ELEMENTS`."""
    B, H, T, hs = q.shape
    s = math.ceil(T / min(landmarks, T))
    qb, kb, vb = (to_blocks(t.to(work).reshape(B * H, T, hs), s) for t in (q, k, v))
    scale = hs**-0.5
    N, m = qb.shape[:2]
    counts = block_counts(T, s, q.device)[None, :, None]
    ql, kl = qb.sum(2) * (scale / counts), kb.sum(2) / counts  # (N, m, hs) segment means
    out = qb.new_empty(N, m, s, hs)
    # a completed segment's landmark stands for its s keys
    local_mask, summary_mask = block_masks(s, m, m, math.log(s), q.device)
    for heads in chunks(N, m * m * s):
        vhat = prefix_values(ql[heads], kl[heads], kb[heads], vb[heads], iterations)  # (n,c,r,hs)
        n = vhat.shape[0]
        for blocks in chunks(m, block_elements(n, s, m, hs)):
            out[heads, blocks] = local_and_summary_attention(
                qb[heads, blocks], kb[heads, blocks], vb[heads, blocks], kl[heads],
                vhat[:, blocks], local_mask, summary_mask[blocks], scale,
            )
    return out.view(B, H, m * s, hs)[:, :, :T]
