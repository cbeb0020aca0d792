"""Helpers shared by the block-structured variants (``nystrom``, ``combiner``).

Both variants split the sequence into equal blocks, let each query attend exactly to the earlier
keys of its own block and to a few summaries of strictly earlier blocks, and normalise both parts
under one softmax. Their large intermediates are (queries x (block + summaries)) logits; to bound
peak memory the way a fused attention kernel does, the work is cut into chunks of heads and blocks
whose logits hold at most :data:`WORK_ELEMENTS` numbers. At training sizes everything fits in one
chunk, so the loop runs once; at long contexts it runs a handful of times (never once per token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: at most this many float32 numbers in one chunk's largest intermediate (1 MiB)
WORK_ELEMENTS = 1 << 18


def chunks(total: int, per_item: int, budget: int | None = None) -> list[slice]:
    """Contiguous slices of ``range(total)`` whose ``per_item`` cost sums to at most ``budget``
    (default :data:`WORK_ELEMENTS`, read at call time)."""
    step = max(1, (WORK_ELEMENTS if budget is None else budget) // max(per_item, 1))
    return [slice(i, min(i + step, total)) for i in range(0, total, step)]


def to_blocks(t: Tensor, size: int) -> Tensor:
    """(N, T, hs) -> (N, nb, size, hs), zero-padded at the end so that T need not divide."""
    N, T, hs = t.shape
    nb = math.ceil(T / size)
    if nb * size != T:  # copy only when padding is needed
        t = F.pad(t, (0, 0, 0, nb * size - T))
    return t.view(N, nb, size, hs)


def split_blocks(t: Tensor, size: int) -> tuple[Tensor, Tensor | None]:
    """(N, T, hs) -> the whole blocks, a view (N, T // size, size, hs), and the trailing
    partial block zero-padded to ``size`` (N, 1, size, hs), or None when ``size`` divides T: only
    the tail is copied (:func:`to_blocks` pads a copy of the whole sequence)."""
    N, T, hs = t.shape
    whole = T // size
    full = t[:, : whole * size].view(N, whole, size, hs)
    if whole * size == T:
        return full, None
    return full, F.pad(t[:, whole * size :], (0, 0, 0, (whole + 1) * size - T))[:, None]


def take_blocks(full: Tensor, tail: Tensor | None, blocks: slice) -> Tensor:
    """Blocks ``blocks`` (a slice of block indices, step 1) of the sequence split by
    :func:`split_blocks`: a view of ``full``, or, for a slice reaching the tail, a copy of those
    blocks with the tail appended (dimension 1)."""
    whole = full.shape[1]
    start, stop, _ = blocks.indices(whole + (tail is not None))
    if tail is None or stop <= whole:
        return full[:, start:stop]
    return torch.cat((full[:, start:whole], tail), dim=1)


def block_counts(T: int, size: int, device: torch.device) -> Tensor:
    """Real (unpadded) tokens in each of the ``ceil(T / size)`` blocks, shape (nb,)."""
    nb = math.ceil(T / size)
    return (T - size * torch.arange(nb, device=device)).clamp(max=size).float()


def block_masks(s: int, nb: int, R: int, bias: float,
                device: torch.device) -> tuple[Tensor, Tensor]:
    """Additive logit masks: (s, s) causal within a block (0 or -inf), and (nb, R) for the
    summaries (``bias`` where summary r < block c, else -inf)."""
    causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
    local = torch.zeros(s, s, device=device).masked_fill_(~causal, float("-inf"))
    earlier = torch.arange(R, device=device) < torch.arange(nb, device=device)[:, None]
    summary = torch.full((nb, R), float("-inf"), device=device).masked_fill_(earlier, bias)
    return local, summary


def block_elements(n: int, s: int, R: int, hs: int) -> int:
    """Numbers that :func:`local_and_summary_attention` holds at once per block of ``s`` queries
    (``n`` heads, ``R`` summaries, head size ``hs``): the logits and their softmax, ``s + R`` each
    per query, the output, and the block's keys concatenated with the summary keys; the cost per
    item of the block loops (:func:`chunks`)."""
    return n * (s * (2 * (s + R) + hs) + (s + R) * hs)


def local_and_summary_attention(q: Tensor, k: Tensor, v: Tensor, sk: Tensor, sv: Tensor,
                                local_mask: Tensor, summary_mask: Tensor, scale: float) -> Tensor:
    """One softmax over a block's own earlier keys and the summaries of strictly earlier blocks.

    q, k, v: (n, nb, s, hs) for ``nb`` consecutive blocks; sk: (n, R, hs) summary keys (summary r
    stands for block r); sv: (n, nb, R, hs) or (n, 1, R, hs) summary values as seen by each block;
    local_mask (s, s) and summary_mask (nb, R) from :func:`block_masks` (rows of these blocks).
    Logits are ``scale * q . k`` plus the masks. Returns (n, nb, s, hs) in the inputs' dtype.

    Each block's keys and the summary keys are concatenated (``s + R`` keys of ``hs`` numbers, a
    third of the logits' size at ``s ~ R ~ 3 hs``) so that one product gives every logit and one
    fused ``torch.softmax`` normalises them: separate max, exp, sum and divide passes over two
    logit tensors took 1.2-1.8x as long (combiner at 8192 tokens, 2 heads of 32, 15 interleaved
    rounds). The weights then meet the block's values and the summary values in two products,
    without a concatenated copy of the values; summary values shared by every block (``sv``
    (n, 1, R, hs), combiner) take one product per head over all ``nb s`` queries. The largest
    intermediates are the logits and their softmax, (s + R) numbers per query each.
    """
    n, nb, s, hs = q.shape
    R = sk.shape[1]
    keys = torch.cat((k, sk[:, None].expand(n, nb, R, hs)), dim=2).view(n * nb, s + R, hs)
    logits = torch.bmm(q.reshape(n * nb, s, hs) * scale, keys.transpose(1, 2))
    logits = logits.view(n, nb, s, s + R)
    logits[..., :s] += local_mask.to(q.dtype)
    logits[..., s:] += summary_mask.to(q.dtype)[:, None]
    w = torch.softmax(logits, dim=-1)
    del logits
    y = torch.bmm(w[..., :s].reshape(n * nb, s, s), v.reshape(n * nb, s, hs))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, sk, sv))
    if sv.shape[1] == 1:  # one set of summary values for every block: a product per head
        y, summ, values = y.view(n, nb * s, hs), w[..., s:].reshape(n, nb * s, R), sv[:, 0]
    else:
        summ, values = w[..., s:].reshape(n * nb, s, R), sv.reshape(n * nb, R, hs)
    y = torch.baddbmm(y, summ, values) if grad else y.baddbmm_(summ, values)
    return y.view(n, nb, s, hs)
