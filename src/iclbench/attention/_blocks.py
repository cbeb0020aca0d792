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


def chunks(total: int, per_item: int, budget: int = WORK_ELEMENTS) -> list[slice]:
    """Contiguous slices of ``range(total)`` whose ``per_item`` cost sums to at most ``budget``."""
    step = max(1, budget // max(per_item, 1))
    return [slice(i, min(i + step, total)) for i in range(0, total, step)]


def to_blocks(t: Tensor, size: int) -> Tensor:
    """(N, T, hs) -> (N, nb, size, hs), zero-padded at the end so that T need not divide."""
    N, T, hs = t.shape
    nb = math.ceil(T / size)
    if nb * size != T:  # copy only when padding is needed
        t = F.pad(t, (0, 0, 0, nb * size - T))
    return t.view(N, nb, size, hs)


def block_counts(T: int, size: int, device: torch.device) -> Tensor:
    """Real (unpadded) tokens in each of the ``ceil(T / size)`` blocks, shape (nb,)."""
    nb = math.ceil(T / size)
    return (T - size * torch.arange(nb, device=device)).clamp(max=size).float()


def local_and_summary_attention(q: Tensor, k: Tensor, v: Tensor, sk: Tensor, sv: Tensor,
                                first: int, scale: float, bias: float = 0.0) -> Tensor:
    """One softmax over a block's own earlier keys and the summaries of strictly earlier blocks.

    q, k, v: (n, nb, s, hs) for blocks ``first .. first + nb - 1``; sk: (n, R, hs) summary keys
    (summary r stands for block r); sv: (n, nb, R, hs) or (n, 1, R, hs) summary values as seen by
    each block. A query in block c sees its block's keys at positions <= its own and the summaries
    r < c, whose logits get ``bias`` (e.g. log of the tokens a summary stands for). Logits are
    ``scale * q . k``. Returns (n, nb, s, hs), in the inputs' (float32 or wider) dtype.
    """
    n, nb, s, hs = q.shape
    q = q * scale
    R = sk.shape[1]
    local = q @ k.transpose(-1, -2)  # (n, nb, s, s)
    causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    local = local.masked_fill(~causal, float("-inf"))
    summ = (q.reshape(n, nb * s, hs) @ sk.transpose(-1, -2)).view(n, nb, s, R) + bias
    blocks = torch.arange(first, first + nb, device=q.device)
    earlier = torch.arange(R, device=q.device) < blocks[:, None]  # (nb, R): summary r < block c
    summ = torch.where(earlier[None, :, None, :], summ, float("-inf"))
    p = torch.softmax(torch.cat((local, summ), dim=-1), dim=-1)
    return p[..., :s] @ v + p[..., s:] @ sv
