"""Design (b) of causal Nystrom attention (:mod:`iclbench.attention.nystrom`), ``landmarks_source:
learned`` (m = ``landmarks``, hs = head size, all logits scaled by 1/sqrt(hs)), and
:func:`dense_reference`, the dense formula its kernel computes.

Input-independent landmarks ``Ql, Kl`` (m x hs per head, parameters of the module, trained with
the model; drawn from the model's seeded generator by ``Decoder`` from N(0, 1),
:data:`LANDMARK_INIT_STD`). Query ``i`` gets

    y_i = softmax(q_i Kl^T) pinv(softmax(Ql Kl^T)) B_i,
    B_i[l] = sum_{j <= i} softmax_j(ql_l . k_j) v_j   (normalised over the visible keys j <= i),

i.e. Nystromformer's formula with each landmark's attention over the keys restricted to the
prefix. ``pinv`` is Nystromformer's iteration (:mod:`iclbench.attention._nystrom_pinv`), once per
head (the landmarks do not depend on the input, so one pseudo-inverse serves every position).
``B`` is never formed: with ``s_jl = ql_l . k_j`` and chunks of ``C = min(chunk, T)`` positions
(the last zero-padded; padded keys come after every real query), the softmax over a prefix is
carried from chunk to chunk as (running max, numerator, denominator), and inside chunk c every
weight is ``e_jl = exp(s_jl - start_cl)`` against the running max before the chunk, so that

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
compare it with :func:`dense_reference`, a dense evaluation of its own formula, instead). A
softmax model has no landmarks to swap in, so ``swapped:`` rejects (b)
(:meth:`iclbench.attention.nystrom.NystromAttention.check_swap`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from iclbench.attention import _blocks
from iclbench.attention._blocks import chunks, to_blocks
from iclbench.attention._nystrom_pinv import pinv_of

#: std of the learned landmarks' N(0, std^2) initialisation: at 1 the landmark logits
#: ``ql . kl / sqrt(hs)`` have unit variance. At the model's 0.02 every landmark starts at almost
#: the same point, softmax(Ql Kl^T) is close to rank one and its pseudo-inverse useless.
#: Linear regression, default config (2500 steps), error at k = 2d with 16 landmarks: 0.32 and
#: 0.55 at std 1 (two landmark draws), 0.46-0.68 at 3 (three), 0.80 at 10, 0.87 at 0.02; with 8:
#: 0.77 at 1, 0.61 at 3, 0.57 at 10, 0.90 at 30, 0.91 at 0.02 (one draw each; softmax 0.49)
LANDMARK_INIT_STD = 1.0


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
    mx = state[0]
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


def dense_reference(q: Tensor, k: Tensor, v: Tensor, ql: Tensor, kl: Tensor,
                    iterations: int | None) -> Tensor:
    """The O(T^2) formula this design's kernel (:func:`learned_attention`) computes, written out
    densely, for tests and readers: for every landmark l the causal T x T softmax of
    ``ql_l . k_j / sqrt(hs)`` over j <= i gives ``B_i[l]``; ``y_i = softmax(q_i Kl^T / sqrt(hs))
    pinv(softmax(Ql Kl^T / sqrt(hs))) B_i``.

    q, k, v: (B, H, T, hs); ql, kl: (H, m, hs), the landmarks as stored (unscaled);
    ``iterations`` as :func:`pinv_of`. Forms (B, H, m, T, T) weights: short sequences only. The
    layer's optional conv skip on V is not part of it.
    """
    T, scale = q.shape[2], q.shape[-1] ** -0.5
    logits = (ql * scale) @ k.transpose(-1, -2)  # (B, H, m, T): landmark l against key j
    visible = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # [i, j]: j <= i
    weights = torch.softmax(logits[:, :, :, None, :].masked_fill(~visible, float("-inf")), -1)
    b = weights @ v[:, :, None]  # (B, H, m, T, hs): B_i[l]
    f = torch.softmax(q @ kl.transpose(-1, -2) * scale, -1)  # (B, H, T, m)
    z = pinv_of(torch.softmax((ql * scale) @ kl.transpose(-1, -2), -1), iterations)
    return torch.einsum("bhtl,hlr,bhrtd->bhtd", f, z, b)
