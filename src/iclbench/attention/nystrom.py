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
  ``Z_0 = A_c^T / (||A_c||_1 ||A_c||_inf)``, norms per matrix), and
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
parameters of the module, trained with the model; N(0, 0.02) like the model's other weights, drawn
from the model's seeded generator by ``Decoder``). Query ``i`` gets

    y_i = softmax(q_i Kl^T) pinv(softmax(Ql Kl^T)) B_i,
    B_i[l] = sum_{j <= i} softmax_j(ql_l . k_j) v_j   (normalised over the visible keys j <= i),

i.e. Nystromformer's formula with each landmark's attention over the keys restricted to the
prefix. ``pinv`` is the same iteration, once per head (the landmarks do not depend on the input, so
one pseudo-inverse serves every position). ``B`` is computed causally and exactly in chunks of
``C = min(chunk, T)`` positions (the last zero-padded; padded keys come after every real query):
inside a chunk with the masked weights ``exp(s_jl - M_il) [j <= i]``, where ``s_jl = ql_l . k_j``
and ``M_il`` is the running max of ``s_.l`` over positions ``<= i`` (cummax), plus the sums of
the earlier chunks carried as (max, numerator, denominator) and rescaled to ``M_il``. Every
exponent is <= 0 and reads nothing after ``i``, so a later token never changes an earlier output,
not even by rounding. Evaluated right to left: ``softmax(q_i Kl^T) pinv`` once per position (an
m-vector), then its contraction with ``B_i``, which is never formed: the within-chunk part is
``sum_j (sum_l g_il w_ijl) v_j``. Cost O(T (C + m) (m + hs) + m^3) per head: linear in T for fixed
m and C (one m x m pseudo-inverse); memory O(C m + m hs) per position of a span, spans sized to a
fixed budget (:func:`learned_spans`); the T x T matrix is never formed. The output at ``i`` does not
depend on T. (b) has **no exact-softmax limit**: query i's weight on key j is a combination of
the m fixed functions ``exp(ql_l . k_j)`` of the key, while exact softmax's ``exp(q_i . k_j)``
ranges, over queries, through infinitely many functions of the key; no option makes (b) exact (the
tests compare it with a dense evaluation of its own formula instead). A softmax model has no
landmarks to swap in, so ``swapped:`` rejects (b) (:meth:`NystromAttention.check_swap`).

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

from iclbench.attention import _blocks
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


def learned_spans(n_chunks: int, per_chunk: int) -> list[slice]:
    """Consecutive chunk indices processed together (a span): as many chunks as keep a span's
    within-chunk weights (``per_chunk`` numbers per chunk) within a quarter of
    :data:`iclbench.attention._blocks.WORK_ELEMENTS`, read at call time (at least one chunk per
    span). With the span's other intermediates this keeps the working memory (besides the output)
    small: 0.73 MiB at 8 landmarks, chunk 16, T = 4096 and 8 heads of 32, where the fused causal
    softmax kernel takes 1.19 MiB with 2 threads (benchmarks/attention_speed.py)."""
    return chunks(n_chunks, per_chunk, _blocks.WORK_ELEMENTS // 4)


def _earlier(rows: int, cols: int, device: torch.device) -> Tensor:
    """(rows, cols) boolean: column index < row index (strictly earlier)."""
    return torch.arange(cols, device=device)[None, :] < torch.arange(rows, device=device)[:, None]


LearnedState = tuple[Tensor, Tensor]


def _masked_exp(x: Tensor, mask: Tensor) -> Tensor:
    """``exp(min(x, 0)) * mask`` for a fresh tensor ``x`` (overwritten); in place unless autograd
    needs exp's output (training), so that inference holds one such tensor, not two."""
    x = x.clamp_max_(0.0)
    if _autograd(x):
        return x.exp() * mask
    return x.exp_().mul_(mask)


def _difference(a: Tensor, b: Tensor, buffer: Tensor | None) -> Tensor:
    """``a - b`` (broadcast), written into ``buffer`` (flat, large enough) when one is given.

    At inference one buffer serves every span: a span's within-chunk weights are the only large
    intermediate, and a fresh allocation of that size per span costs page faults (the CPU
    allocator returns large blocks to the system) that take as long as the arithmetic.
    """
    if buffer is None:
        return a - b
    shape = torch.broadcast_shapes(a.shape, b.shape)
    return torch.sub(a, b, out=buffer[: math.prod(shape)].view(shape))


def _autograd(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def learned_span(q: Tensor, k: Tensor, v: Tensor, v1: Tensor, ql: Tensor, kl: Tensor, z: Tensor,
                 state: LearnedState | None, causal: Tensor, before: Tensor,
                 buffer: Tensor | None = None) -> tuple[Tensor, LearnedState]:
    """Design (b) on one span of ``K`` consecutive chunks of ``C`` positions each.

    q, k, v: (b, H, K, C, hs); v1: v with a column of ones appended (b, H, K, C, hs + 1), so that
    one product gives a softmax's numerator and denominator; ql, kl: (H, m, hs) learned landmarks,
    both already scaled by 1/sqrt(hs); z: (H, m, m) ``pinv(softmax(ql kl^T))``; causal (C, 1, C):
    1.0 where ``j <= i``, else 0.0; before (K + 1, K, 1): 1.0 where chunk ``c' < c``. ``state``
    carries, per (b, H, landmark), the running max ``mx`` of the landmark's logits over every
    earlier position and ``acc`` (..., hs + 1), the numerator and denominator of its softmax over
    those positions, relative to ``exp(mx)``; ``None`` before the first span. Returns the span's
    outputs (b, H, K, C, hs) and the state after it. ``buffer``: see :func:`_difference` (only
    without autograd).

    Every weight is ``exp(logit - max)`` with the max taken over positions that the reader may
    see, so it is <= 1 (no overflow) and reads nothing later. Masked weights (a later key inside a
    chunk, a later chunk) have their exponent clamped to 0 and are then multiplied by an exact 0
    (faster than masking with -inf before exp, and as exact).
    """
    b, H, K, C, hs = q.shape
    m = ql.shape[1]
    s = k.reshape(b, H, K * C, hs) @ ql.transpose(-1, -2)[None]  # (b, H, KC, m): ql_l . k_j
    if state is None:  # position 0's own logit: every position sees it
        state = (s[:, :, 0], s.new_zeros(b, H, m, hs + 1))
    mx, acc0 = state
    # causal running max M_il = max_{j <= i} s_jl (including every earlier span)
    run = torch.maximum(s.cummax(dim=2).values, mx[:, :, None]).view(b, H, K, C, m)
    s = s.view(b, H, K, C, m)
    end = run[:, :, :, -1]  # (b, H, K, m): running max at each chunk's last position
    start = torch.cat((mx[:, :, None], end), dim=2)  # (b, H, K + 1, m): max before chunk c
    # each chunk's own sums relative to its end max
    u = (s - end[:, :, :, None]).exp_().transpose(-1, -2) @ v1  # (b, H, K, m, hs + 1)
    # sums entering chunk c = 0..K: chunks c' < c rescaled to start[c], plus the carried state
    d = _masked_exp(end[:, :, None] - start[:, :, :, None], before)
    acc = (d.permute(0, 1, 4, 2, 3) @ u.transpose(2, 3)).transpose(2, 3)  # (b, H, K + 1, m, hs+1)
    acc = acc + (mx[:, :, None] - start).exp_()[..., None] * acc0[:, :, None]
    del d, u
    # inside a chunk: exp(s_jl - M_il) [j <= i], shape (b, H, K, i, l, j): the key index j
    # innermost, so that the subtraction broadcasts M_il along it and sums over j are contiguous
    keys = s.transpose(-1, -2).contiguous()  # (b, H, K, m, C)
    w = _masked_exp(_difference(keys[:, :, :, None], run[..., None], buffer), causal)
    decay = (start[:, :, :K, None] - run).exp_()  # (b, H, K, C, m): carried sums -> M_il
    den = w.sum(dim=-1).addcmul_(decay, acc[:, :, :K, None, :, hs])  # >= 1: the max term is 1
    # right to left: (softmax(q kl^T) z) once per position, then divided by the normaliser
    f = torch.softmax(q.reshape(b, H, K * C, hs) @ kl.transpose(-1, -2)[None], dim=-1)
    g = (f @ z[None]).view(b, H, K, C, m).div_(den)
    # p_ij = sum_l g_il w_ilj, elementwise (C m per position: as fast as the tiny batched matrix
    # products it would take, and in place at inference)
    p = (w * g[..., None] if _autograd(w) else w.mul_(g[..., None])).sum(dim=-2)
    del w
    y = (p @ v).add_((g * decay) @ acc[:, :, :K, :, :hs])
    return y, (start[:, :, K], acc[:, :, K])


def learned_attention(q: Tensor, k: Tensor, v: Tensor, ql: Tensor, kl: Tensor, iterations: int,
                      chunk: int) -> Tensor:
    """Design (b): ``softmax(q_i Kl^T) pinv(softmax(Ql Kl^T)) B_i`` with
    ``B_i[l] = sum_{j <= i} softmax_j(ql_l . k_j) v_j`` (scaled by 1/sqrt(hs) inside the softmaxes).

    q, k, v: (B, H, T, hs) in the working dtype; ql, kl: (H, m, hs). The sequence is cut into
    chunks of ``min(chunk, T)`` positions (zero-padded at the end; padded keys come after every
    real query) processed a span of chunks at a time; see :func:`learned_span`.
    """
    Bsz, H, T, hs = q.shape
    m = ql.shape[1]
    C = min(chunk, T)
    nc = math.ceil(T / C)
    qb, kb, vb = (to_blocks(t.reshape(Bsz * H, T, hs), C).view(Bsz, H, nc, C, hs)
                  for t in (q, k, v))
    scale = hs**-0.5
    ql = ql * scale
    z = iterative_pinv(torch.softmax(ql @ kl.transpose(-1, -2), dim=-1), iterations)
    kl = kl * scale  # for the queries' logits
    out = qb.new_empty(Bsz, H, nc, C, hs)
    causal = torch.ones(C, C, dtype=q.dtype, device=q.device).tril()[:, None]
    for rows in chunks(Bsz, nc * H * C * C * m, _blocks.WORK_ELEMENTS // 4):
        state: LearnedState | None = None
        n = len(range(*rows.indices(Bsz)))
        spans = learned_spans(nc, n * H * C * C * m)
        span_chunks = spans[0].stop - spans[0].start
        before = _earlier(span_chunks + 1, span_chunks, q.device).to(q.dtype)[:, :, None]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, ql, kl))
        buffer = None if grad else q.new_empty(n * H * span_chunks * C * C * m)
        for span in spans:
            K = span.stop - span.start
            v = vb[rows, :, span]
            v1 = torch.cat((v, v.new_ones(*v.shape[:-1], 1)), dim=-1)
            out[rows, :, span], state = learned_span(
                qb[rows, :, span], kb[rows, :, span], v, v1, ql, kl, z, state, causal,
                before[: K + 1, :K], buffer)
    return out.view(Bsz, H, nc * C, hs)[:, :, :T]


SOURCES = ("segments", "learned")


@ATTENTION.register("nystrom")
class NystromAttention(Attention):
    options = {"landmarks": 8, "pinv_iterations": 6, "conv_kernel": 0,
               "landmarks_source": "segments", "chunk": 16}
    approximates_softmax = True

    def __init__(self, n_head: int, head_dim: int, **options: object) -> None:
        super().__init__(n_head, head_dim, **options)
        for key, low in (("landmarks", 1), ("pinv_iterations", 0), ("conv_kernel", 0),
                         ("chunk", 1)):
            val = self.opts[key]
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {val!r}")
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
            # N(0, 0.02) like the model's other weights (Decoder re-draws them from its seeded
            # generator); landmark rows start near each other and separate in training
            self.landmark_q = nn.Parameter(torch.randn(n_head, m, head_dim) * 0.02)
            self.landmark_k = nn.Parameter(torch.randn(n_head, m, head_dim) * 0.02)

    @classmethod
    def check_swap(cls, options: Mapping[str, Any]) -> None:
        if options.get("landmarks_source", cls.options["landmarks_source"]) == "learned":
            raise ValueError(
                "landmarks_source: learned cannot be swapped into a softmax-trained model (its "
                "landmarks are trained parameters that a softmax model does not have); use "
                "landmarks_source: segments under swapped"
            )

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        work = torch.promote_types(q.dtype, torch.float32)  # at least float32 inside
        if self.opts["landmarks_source"] == "learned":
            y = learned_attention(q.to(work), k.to(work), v.to(work), self.landmark_q.to(work),
                                  self.landmark_k.to(work), self.opts["pinv_iterations"],
                                  self.opts["chunk"])
        else:
            y = self._segments(q, k, v, work)
        if self.conv is not None:
            kernel = self.conv.shape[2]
            padded = F.pad(v.to(work), (0, 0, kernel - 1, 0))  # left only: causal
            y = y + F.conv2d(padded, self.conv.to(work), groups=self.n_head)
        return y.to(q.dtype)

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
                                 self.opts["pinv_iterations"])  # (n, c, r, hs)
            n = vhat.shape[0]
            for blocks in chunks(m, n * s * (s + m)):
                out[heads, blocks] = local_and_summary_attention(
                    qb[heads, blocks], kb[heads, blocks], vb[heads, blocks], kl[heads],
                    vhat[:, blocks], local_mask, summary_mask[blocks], scale,
                )
        return out.view(B, H, m * s, hs)[:, :, :T]
