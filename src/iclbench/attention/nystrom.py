"""Causal Nystrom attention (Xiong et al. 2021, "Nystromformer", eqs. 13-16), designs (a) and (b)
of SPEC 5, chosen by ``landmarks_source``.

Nystromformer approximates ``softmax(Q K^T) V`` by ``softmax(Q Kl^T) pinv(softmax(Ql Kl^T))
softmax(Ql K^T) V`` with landmarks ``Ql, Kl`` = segment means of Q and K. Segment means read future
tokens, so the published method is not causal. Two causal designs (m = ``landmarks``, hs = head
size, all logits scaled by 1/sqrt(hs)):

**(a) ``landmarks_source: segments``** (the default). The sequence is cut into m segments of
``s = ceil(T / m)`` tokens and query ``i`` in segment ``c`` combines

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

**(b) ``landmarks_source: learned``**: input-independent landmarks ``Ql, Kl`` (m x hs per head,
parameters of the module, trained with the model; drawn from the model's seeded generator by
``Decoder`` from N(0, 1), :data:`LANDMARK_INIT_STD`). Query ``i`` gets

    y_i = softmax(q_i Kl^T) pinv(softmax(Ql Kl^T)) B_i,
    B_i[l] = sum_{j <= i} softmax_j(ql_l . k_j) v_j   (normalised over the visible keys j <= i),

i.e. Nystromformer's formula with each landmark's attention over the keys restricted to the
prefix. ``pinv`` is the same iteration, once per head (the landmarks do not depend on the input, so
one pseudo-inverse serves every position). ``B`` is never formed: with ``s_jl = ql_l . k_j`` and
chunks of ``C = min(chunk, T)`` positions (the last zero-padded; padded keys come after every real
query), the softmax over a prefix is carried from chunk to chunk as (running max, numerator,
denominator), and inside chunk c every weight is ``e_jl = exp(s_jl - start_cl)`` against the
running max before the chunk, so that

    y_i = sum_{j <= i in c} (sum_l G_il e_jl) v_j + sum_l G_il acc_cl,
    G_il = (softmax(q_i Kl^T) pinv)_l / (sum_{j <= i in c} e_jl + acc_cl[den]),

two small matrix products per chunk (evaluated right to left: the m-vector ``G_i`` first). A
position whose own running max rises more than ``FAST_LIMIT`` (60) above ``start_cl`` would see
clamped weights; it takes its output from an exact evaluation against its own running max
instead, and a chunk's sums carried onward are always exact (:func:`learned_span`). Every choice
that query i's output depends on reads positions ``<= i`` only and masked products are exact
zeros, so a later token never changes an earlier output, not even by rounding. Cost
O(T (C + m) (m + hs) + m^3) per head: linear in T for fixed m and C (one m x m pseudo-inverse);
chunks are processed a span at a time, spans sized to a fixed memory budget
(:func:`learned_spans`); the T x T matrix is never formed. The output at ``i`` does not depend on
T. (b) has **no exact-softmax limit**: query i's weight on key j is a combination of the m fixed
functions ``exp(ql_l . k_j)`` of the key, while exact softmax's ``exp(q_i . k_j)`` ranges, over
queries, through infinitely many functions of the key; no option makes (b) exact (the tests
compare it with a dense evaluation of its own formula instead). A softmax model has no
landmarks to swap in, so ``swapped:`` rejects (b) (:meth:`NystromAttention.check_swap`).

Both: optional depthwise convolution skip on V (``conv_kernel > 0``, Nystromformer's residual
conv), left-padded so that it reads ``v_{i-k+1..i}`` only; zero when swapped into a softmax
model (so it changes nothing there), drawn with the other weights in a trained model. Work in (at
least) float32 inside, return the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.attention import _blocks
from iclbench.attention._blocks import (
    block_counts,
    block_elements,
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


def pinv_of(a: Tensor, iterations: int | None) -> Tensor:
    """Pseudo-inverse of each matrix in ``a`` (..., m, m): :func:`iterative_pinv` with
    ``iterations``, or, for ``None`` (option ``pinv: exact``), ``torch.linalg.pinv`` in float64 by
    SVD (m is small). The iteration is exact only in exact arithmetic: in float32 its error can
    grow again with more iterations once the matrix is ill-conditioned."""
    if iterations is None:
        return torch.linalg.pinv(a.double(), hermitian=False).to(a.dtype)
    return iterative_pinv(a, iterations)


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


#: the fast evaluation's weights are ``exp(s_jl - start_l)`` against the running max before the
#: chunk; a position whose landmark logits rose more than this above that max inside its chunk
#: takes its output from the exact evaluation instead (exp(60) ~ 1e26: the fast path's sums of
#: weights times values stay far from float32's overflow)
FAST_LIMIT = 60.0


#: at most this many chunks in a span: the carried sums between a span's chunks cost
#: (K + 1) K per landmark, so a bounded K keeps the whole linear in T. Each span runs ~40 small
#: ops, so fewer, longer spans are faster where the memory budget allows them (2 heads at 8192
#: tokens: 28 chunks a span instead of 16, about 10-20% less time in three interleaved runs)
MAX_SPAN_CHUNKS = 32


def span_numbers(C: int, m: int, hs: int) -> int:
    """Numbers per position and head that a span of :func:`learned_span` holds at its peak
    (inference; its outputs, one piece at a time): the values with their column of ones
    (``hs + 1``), ``G`` (``m``), the within-chunk weights ``p`` (``C``), half the output
    (``hs / 2``) and the carried numerators (``m hs`` per chunk), with as much again for the
    state, the running maxima and the output copy. Measured at C = hs = 32, m = 16, 8 heads: 116
    numbers per position and 0.07 MiB per span, against 122 here."""
    return C + 3 * hs // 2 + 1 + m + math.ceil(3 * m * (hs + 1) / (2 * C))


def learned_spans(n_chunks: int, per_chunk: int) -> list[slice]:
    """Consecutive chunk indices processed together (a span): as many chunks as keep a span's
    intermediates (``per_chunk`` numbers per chunk) within
    :data:`iclbench.attention._blocks.WORK_ELEMENTS`, read at call time, and at most
    :data:`MAX_SPAN_CHUNKS` (at least one chunk per span)."""
    step = min(MAX_SPAN_CHUNKS, max(1, _blocks.WORK_ELEMENTS // max(per_chunk, 1)))
    return [slice(i, min(i + step, n_chunks)) for i in range(0, n_chunks, step)]


def _earlier(rows: int, cols: int, device: torch.device) -> Tensor:
    """(rows, cols) boolean: column index < row index (strictly earlier)."""
    return torch.arange(cols, device=device)[None, :] < torch.arange(rows, device=device)[:, None]


LearnedState = tuple[Tensor, Tensor]


class Landmarks(NamedTuple):
    """The learned landmarks as a span's products read them: ``ql`` and ``kl`` (H, m, hs) both
    scaled by 1/sqrt(hs), ``z`` (H, m, m) their pseudo-inverse, and the same transposed and
    repeated for ``n`` batch rows as the batched products' right-hand sides: ``qlt`` and
    ``klt`` (n H, hs, m), ``zn`` (n H, m, m)."""

    ql: Tensor
    kl: Tensor
    z: Tensor
    qlt: Tensor
    klt: Tensor
    zn: Tensor


def landmarks_for(ql: Tensor, kl: Tensor, z: Tensor, n: int) -> Landmarks:
    """:class:`Landmarks` for spans of ``n`` batch rows (``ql``, ``kl`` scaled)."""
    H = ql.shape[0]

    def rows(t: Tensor) -> Tensor:
        return t.expand(n, *t.shape).reshape(n * H, *t.shape[1:])

    return Landmarks(ql, kl, z, rows(ql.transpose(-1, -2)), rows(kl.transpose(-1, -2)), rows(z))


def _masked_exp(x: Tensor, mask: Tensor) -> Tensor:
    """``exp(min(x, 0)) * mask`` for a fresh tensor ``x`` (overwritten); in place unless autograd
    needs exp's output (training)."""
    x = x.clamp_max_(0.0)
    if _autograd(x):
        return x.exp() * mask
    return x.exp_().mul_(mask)


def _autograd(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _carry(ref: Tensor, start: Tensor, u: Tensor, state: LearnedState, before: Tensor) -> Tensor:
    """Sums entering each chunk ``c = 0..K`` of a span, relative to ``exp(start[c])``.

    ref (b, H, K, m): the reference of each chunk's own sums ``u`` (b, H, K, m, hs + 1),
    numerator and denominator relative to ``exp(ref)``: the running max before the chunk
    (``start[:K]``), or at its last position where a weight was clamped; start (b, H, K + 1, m):
    the running max before chunk c (``start[K]`` is the span's last running max); state: the
    sums before the span; before (K + 1, K): 1.0 where chunk ``c' < c``. Every exponent is <= 0
    (``ref[c'] <= start[c]`` for ``c' < c``). The decays are formed landmark-major,
    (b, H, m, K + 1, K), the layout of their product with ``u``.
    """
    mx, acc0 = state
    b, H, K, m, w = u.shape
    d = _masked_exp(ref.transpose(2, 3)[:, :, :, None] - start.transpose(2, 3)[..., None], before)
    acc = torch.bmm(d.reshape(b * H * m, K + 1, K), u.transpose(2, 3).reshape(b * H * m, K, w))
    acc = acc.view(b, H, m, K + 1, w).transpose(2, 3)  # (b, H, K + 1, m, hs + 1)
    decay = (mx[:, :, None] - start).exp_()[..., None]
    if _autograd(acc) or _autograd(acc0):
        return acc + decay * acc0[:, :, None]
    return acc.addcmul_(decay, acc0[:, :, None])


def learned_span(q: Tensor, k: Tensor, v1: Tensor, lm: Landmarks, state: LearnedState | None,
                 causal: Tensor, before: Tensor, out: Tensor) -> LearnedState:
    """Design (b) on one span of ``K`` consecutive chunks of ``C`` positions each.

    q, k: (b, H, K, C, hs); v1 (b, H, K, C, hs + 1), contiguous: the values and a column of
    ones (its products give each chunk's sums of weights with its numerators); lm: the learned
    landmarks (:func:`landmarks_for` ``b`` rows); causal (C, C) boolean: ``j <= i``; before
    (K + 1, K): 1.0 where chunk ``c' < c``. ``state`` carries, per (b, H, landmark), the
    running max ``mx`` of the landmark's logits over every earlier position and ``acc``
    (..., hs + 1), the numerator and denominator of its softmax over those positions, relative to
    ``exp(mx)``; ``None`` before the first span. Writes the span's outputs into ``out``
    (b, K, C, H, hs) and returns the state after it.

    The fast evaluation: inside chunk c every weight is ``e_jl = exp(s_jl - start_cl)`` against
    the running max *before* the chunk (causal, shared by the chunk's positions), so that
    ``y_i = sum_j [j <= i] (sum_l G_il e_jl) v_j + sum_l G_il acc_cl`` with
    ``G_il = g_il / den_il``, ``den_il = sum_{j <= i} e_jl + acc_cl[den]``: two small matrix
    products per chunk and no (position x landmark x key) tensor. The chunk's sums carried to
    later chunks are the same weights' (exact: ``e_jl <= exp(FAST_LIMIT)``). A (chunk, landmark)
    whose logits rise more than ``FAST_LIMIT`` above ``start_cl`` would have clamped weights: its
    carried sums are recomputed from the logits against the chunk's end max
    (``exp(s_jl - end_cl) <= 1``), and a position ``i`` whose own running max rose that far
    takes its output from :func:`exact_span`; both choices read only positions ``<= i``. Masked
    products (a later key in the chunk) are replaced by exact zeros, so every output reads
    nothing later, not even by rounding. The products are batched matrix products on 3-d views
    (``torch.bmm``): ``torch.matmul``'s broadcasting of 5-d operands cost more than the
    arithmetic at these sizes.
    """
    b, H, K, C, hs = q.shape
    m = lm.ql.shape[1]
    bH, bHK = b * H, b * H * K
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v1, *lm))
    s = torch.bmm(k.reshape(bH, K * C, hs), lm.qlt).view(b, H, K, C, m)
    if state is None:  # position 0's own logit: every position sees it
        state = (s[:, :, 0, 0].clone(), s.new_zeros(b, H, m, hs + 1))
    mx = state[0]
    top = s.max(dim=3).values  # (b, H, K, m): each chunk's max (max is faster than amax here)
    end = torch.maximum(top.cummax(dim=2).values, mx[:, :, None])  # running max through chunk c
    start = torch.cat((mx[:, :, None], end), dim=2)  # (b, H, K + 1, m): running max before c
    before_c = start[:, :, :K]
    rise = (top - before_c) > FAST_LIMIT  # (b, H, K, m)
    clamped = bool(rise.any())
    e = s - before_c[:, :, :, None] if grad else s.sub_(before_c[:, :, :, None])
    del s  # at inference e is s, overwritten; freed with e
    if clamped:  # else every exponent is <= top - start <= FAST_LIMIT already
        e = e.clamp_max(FAST_LIMIT) if grad else e.clamp_max_(FAST_LIMIT)
    e = e.exp() if grad else e.exp_()
    et = e.view(bHK, C, m).transpose(1, 2)  # (b H K, m, C)
    v3 = v1.view(bHK, C, hs + 1)
    # each chunk's own numerators and sum of weights, relative to exp(start)
    u = torch.bmm(et, v3).view(b, H, K, m, hs + 1)
    ref = before_c
    if clamped:  # the clamped (chunk, landmark) sums from the logits, against the end max
        ref = torch.where(rise, end, ref)
        eu = (torch.bmm(k.reshape(bH, K * C, hs), lm.qlt).view(b, H, K, C, m)
              - end[:, :, :, None]).exp()
        exact = torch.bmm(eu.view(bHK, C, m).transpose(1, 2), v3).view(b, H, K, m, hs + 1)
        u = torch.where(rise[..., None], exact, u)
        del eu, exact
    acc = _carry(ref, start, u, state, before)  # (b, H, K + 1, m, hs + 1)
    del u
    # the queries' side, softmax(q Kl^T) pinv, then each position's sum of weights: in this
    # order the span holds the fewest numbers at once (span_numbers)
    f = torch.softmax(torch.bmm(q.reshape(bH, K * C, hs), lm.klt), dim=-1)
    g = torch.bmm(f, lm.zn).view(bHK, C, m)
    del f
    # the state after the span, the numerators and sums of weights entering each chunk, copied
    # out of the span's sums, which are then freed
    after = (start[:, :, K].clone(), acc[:, :, K].clone())
    carried = acc[:, :, :K, :, :hs].reshape(bHK, m, hs)
    entering = acc[:, :, :K, None, :, hs].clone()  # (b, H, K, 1, m)
    del acc
    den = e.cumsum(dim=3)
    den = den + entering if grad else den.add_(entering)
    g = g / den.view(bHK, C, m) if grad else g.div_(den.view(bHK, C, m))  # G_il
    del den
    p = torch.bmm(g, et)  # (b H K, C, C): sum_l G_il e_jl
    del e, et
    # exact zeros above the diagonal (a later key in the chunk); tril is ~5x faster here than
    # masked_fill with a boolean mask
    p = p.tril() if grad else p.tril_()
    # the outputs, two pieces of the (batch row, head) pairs at a time, written into ``out``:
    # a piece's output is all the memory the products add
    for pairs, index in _pieces(b, H):
        r, dst = slice(pairs.start * K, pairs.stop * K), out[index]
        y = torch.bmm(g[r], carried[r])  # the carried sums' part, (pairs K, C, hs)
        y = torch.baddbmm(y, p[r], v3[r, :, :hs]) if grad else y.baddbmm_(p[r], v3[r, :, :hs])
        dst.copy_(y.view(dst.shape[0], dst.shape[3], K, C, hs).permute(0, 2, 3, 1, 4))
        del y
    del g, carried, p
    if clamped:  # the positions whose weights were clamped: the exact evaluation
        s = torch.bmm(k.reshape(bH, K * C, hs), lm.qlt).view(b, H, K, C, m)
        run = torch.maximum(s.cummax(dim=3).values, before_c[:, :, :, None])
        bad = ((run - before_c[:, :, :, None]).amax(dim=-1) > FAST_LIMIT)[..., None]
        exact = exact_span(q, k, v1[..., :hs], lm.ql, lm.kl, lm.z, state, causal, before)
        mine = out.permute(0, 3, 1, 2, 4)  # (b, H, K, C, hs)
        out.copy_(torch.where(bad, exact, mine).permute(0, 2, 3, 1, 4))
    return after


def _pieces(b: int, H: int) -> list[tuple[slice, tuple[Any, ...]]]:
    """The span's (batch row, head) pairs, flattened row-major, in at most two pieces, each with
    the index of its part of the span's output (b, K, C, H, hs): halves of the rows, or, for one
    row, of the heads. (Indices, not views: a view taken before an in-place write to its base
    is stale for autograd.)"""
    if b > 1:
        half = (b + 1) // 2
        return [(slice(0, half * H), (slice(0, half),)), (slice(half * H, b * H), (slice(half, b),))]
    if H > 1:
        half = (H + 1) // 2
        return [(slice(0, half), (..., slice(0, half), slice(None))),
                (slice(half, H), (..., slice(half, H), slice(None)))]
    return [(slice(0, 1), (...,))]


def exact_span(q: Tensor, k: Tensor, v: Tensor, ql: Tensor, kl: Tensor, z: Tensor,
               state: LearnedState, causal: Tensor, before: Tensor) -> Tensor:
    """Design (b) on a span (arguments as :func:`learned_span`) with a reference per position:
    the weights ``exp(s_jl - M_il) [j <= i]`` against the running max ``M_il`` over positions
    ``<= i``, shape (b, H, K, i, l, j). Exact whatever the logits (every exponent <= 0), C m
    numbers per position; used for the positions where the fast evaluation's weights would be
    clamped (a logit far above every earlier one).
    """
    b, H, K, C, hs = q.shape
    m = ql.shape[1]
    mx, acc0 = state
    v1 = torch.cat((v, v.new_ones(*v.shape[:-1], 1)), dim=-1)
    s = k.reshape(b, H, K * C, hs) @ ql.transpose(-1, -2)[None]  # (b, H, KC, m)
    run = torch.maximum(s.cummax(dim=2).values, mx[:, :, None]).view(b, H, K, C, m)
    s = s.view(b, H, K, C, m)
    end = run[:, :, :, -1]
    start = torch.cat((mx[:, :, None], end), dim=2)
    u = (s - end[:, :, :, None]).exp_().transpose(-1, -2) @ v1  # (b, H, K, m, hs + 1)
    acc = _carry(end, start, u, state, before)
    mask = causal.to(q.dtype)[:, None]  # (C, 1, C)
    w = _masked_exp(s.transpose(-1, -2)[:, :, :, None] - run[..., None], mask)  # (b,H,K,i,l,j)
    decay = (start[:, :, :K, None] - run).exp_()  # (b, H, K, C, m): carried sums -> M_il
    den = w.sum(dim=-1).addcmul_(decay, acc[:, :, :K, None, :, hs])
    f = torch.softmax(q.reshape(b, H, K * C, hs) @ kl.transpose(-1, -2)[None], dim=-1)
    g = (f @ z[None]).view(b, H, K, C, m).div_(den)
    p = (w * g[..., None]).sum(dim=-2)
    return (p @ v).add_((g * decay) @ acc[:, :, :K, :, :hs])


def landmark_pinv(ql: Tensor, kl: Tensor, iterations: int | None) -> Tensor:
    """``pinv(softmax(Ql Kl^T))`` per head (H, m, m) of learned landmarks (H, m, hs), ``ql``
    already scaled by 1/sqrt(hs); ``iterations`` as :func:`pinv_of`."""
    return pinv_of(torch.softmax(ql @ kl.transpose(-1, -2), dim=-1), iterations)


def learned_attention(q: Tensor, k: Tensor, v: Tensor, ql: Tensor, kl: Tensor,
                      iterations: int | None,
                      chunk: int, z: Tensor | None = None) -> Tensor:
    """Design (b): ``softmax(q_i Kl^T) pinv(softmax(Ql Kl^T)) B_i`` with
    ``B_i[l] = sum_{j <= i} softmax_j(ql_l . k_j) v_j`` (scaled by 1/sqrt(hs) inside the softmaxes).

    q, k, v: (B, H, T, hs) in the working dtype; ql, kl: (H, m, hs). The sequence is cut into
    chunks of ``min(chunk, T)`` positions (zero-padded at the end; padded keys come after every
    real query), processed a span of chunks at a time (:func:`learned_span`); a span's
    intermediates at their peak (:func:`span_numbers` per position and head) fit
    :data:`iclbench.attention._blocks.WORK_ELEMENTS` (rows of the batch are taken together while
    they do). ``z``: :func:`landmark_pinv` of the scaled ``ql`` and ``kl`` if already known (it
    depends on the landmarks only), else computed here. The output is returned as a (B, H, T, hs)
    view of (B, T, H, hs) memory, the layout in which the model merges the heads.
    """
    Bsz, H, T, hs = q.shape
    m = ql.shape[1]
    C = min(chunk, T)
    nc = math.ceil(T / C)
    qb, kb, vb = (to_blocks(t.reshape(Bsz * H, T, hs), C).view(Bsz, H, nc, C, hs)
                  for t in (q, k, v))
    scale = hs**-0.5
    ql = ql * scale  # one scaled copy for both uses (autograd sums their gradients there)
    if z is None:
        z = landmark_pinv(ql, kl, iterations)
    kl = kl * scale  # for the queries' logits
    # the output in (B, T, H, hs) memory, returned as a (B, H, T, hs) view: the model merges the
    # heads of that layout without a copy (SelfAttention.attend)
    out = qb.new_empty(Bsz, nc, C, H, hs)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    per_chunk = H * C * span_numbers(C, m, hs)
    for rows in chunks(Bsz, nc * per_chunk):
        state: LearnedState | None = None
        n = len(range(*rows.indices(Bsz)))
        lm = landmarks_for(ql, kl, z, n)
        spans = learned_spans(nc, n * per_chunk)
        width = spans[0].stop - spans[0].start
        before = _earlier(width + 1, width, q.device).to(q.dtype)
        ones = q.new_ones(n, H, width, C, 1)
        for span in spans:
            K = span.stop - span.start
            # the span's values once contiguous (its products would each copy the strided
            # slice), with a column of ones
            v1 = torch.cat((vb[rows, :, span], ones[:, :, :K]), dim=-1)
            state = learned_span(qb[rows, :, span], kb[rows, :, span], v1, lm, state, causal,
                                 before[: K + 1, :K], out[rows, span])
            del v1  # freed before the next span's are formed
    return out.view(Bsz, nc * C, H, hs)[:, :T].transpose(1, 2)


SOURCES = ("segments", "learned")

#: std of the learned landmarks' N(0, std^2) initialisation: at 1 the landmark logits
#: ``ql . kl / sqrt(hs)`` have unit variance. At the model's 0.02 every landmark starts at almost
#: the same point, softmax(Ql Kl^T) is close to rank one and its pseudo-inverse useless.
#: Linear regression, default config (2500 steps), error at k = 2d with 16 landmarks: 0.32 and
#: 0.55 at std 1 (two landmark draws), 0.46-0.68 at 3 (three), 0.80 at 10, 0.87 at 0.02; with 8:
#: 0.77 at 1, 0.61 at 3, 0.57 at 10, 0.90 at 30, 0.91 at 0.02 (one draw each; softmax 0.49)
LANDMARK_INIT_STD = 1.0


@ATTENTION.register("nystrom")
class NystromAttention(Attention):
    options = {"landmarks": 8, "pinv_iterations": 6, "conv_kernel": 0,
               "landmarks_source": "segments", "chunk": 32, "pinv": "iterative"}
    approximates_softmax = True
    init_std = {"landmark_q": LANDMARK_INIT_STD, "landmark_k": LANDMARK_INIT_STD}

    def __init__(self, n_head: int, head_dim: int, **options: object) -> None:
        super().__init__(n_head, head_dim, **options)
        for key, low in (("landmarks", 1), ("pinv_iterations", 0), ("conv_kernel", 0),
                         ("chunk", 1)):
            val = self.opts[key]
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {val!r}")
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
        """What :func:`pinv_of` takes: the iteration count, or None for ``pinv: exact``."""
        return None if self.opts["pinv"] == "exact" else int(self.opts["pinv_iterations"])

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        work = torch.promote_types(q.dtype, torch.float32)  # at least float32 inside
        if self.opts["landmarks_source"] == "learned":
            y = learned_attention(q.to(work), k.to(work), v.to(work), self.landmark_q.to(work),
                                  self.landmark_k.to(work), self._iterations,
                                  self.opts["chunk"], self._cached_pinv(work))
        else:
            y = self._segments(q, k, v, work)
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

    def _segments(self, q: Tensor, k: Tensor, v: Tensor, work: torch.dtype) -> Tensor:
        B, H, T, hs = q.shape
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
                                 self._iterations)  # (n, c, r, hs)
            n = vhat.shape[0]
            for blocks in chunks(m, block_elements(n, s, m, hs)):
                out[heads, blocks] = local_and_summary_attention(
                    qb[heads, blocks], kb[heads, blocks], vb[heads, blocks], kl[heads],
                    vhat[:, blocks], local_mask, summary_mask[blocks], scale,
                )
        return out.view(B, H, m * s, hs)[:, :, :T]
