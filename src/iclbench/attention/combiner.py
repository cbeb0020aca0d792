"""Causal Combiner-Fixed attention (Ren et al. 2021, "Combiner: full attention transformer with
sparse computation cost", section 3.2 and eq. 4).

The sequence is cut into blocks of ``s`` tokens (``block_size``; ``null`` means about sqrt(T),
rounded to an even number so that each ``(x_i, y_i)`` token pair stays in one block). Query ``i``
in block ``c`` attends, under one softmax normaliser, to

- the keys of its own block at positions ``<= i`` directly (exact causal softmax there), and
- one summary per strictly earlier block ``r < c``: key ``max-pool(K_r)`` (elementwise max over the
  block's keys), value ``softmax(max-pool(Q_r) K_r^T / sqrt(hs)) V_r`` (the block's own attention
  of its max-pooled query over its keys and values).

``log_size_bias: true`` adds ``log s`` to each summary's logit, so that a summary weighs like the
``s`` keys it stands for (not in the paper, whose models learn around it; it brings a
softmax-trained model's swapped-in attention closer to exact softmax).

A summary reads only its own block, which lies wholly before ``i``: the layer is causal. Never
forms the T x T matrix: cost O(T (s + T / s) hs), i.e. O(T sqrt(T)) at ``s ~ sqrt(T)``. With one
block covering the sequence it is exact causal softmax attention. Works in (at least) float32
inside (also for bfloat16 inputs) and returns the input dtype. Whole blocks are views of the
input; only a trailing partial block is copied, zero-padded (padded keys sit after every real
query, so the causal mask already hides them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from iclbench.attention._blocks import (
    block_elements,
    block_masks,
    chunks,
    local_and_summary_attention,
    split_blocks,
    take_blocks,
)
from iclbench.attention.base import ATTENTION, Attention


def block_size(T: int, option: int | None) -> int:
    """The block size for T tokens: the option, or sqrt(T) rounded to an even number (>= 2)."""
    if option is not None:
        return option
    return max(2, 2 * round(math.sqrt(T) / 2))


@ATTENTION.register("combiner")
class CombinerAttention(Attention):
    options = {"block_size": None, "log_size_bias": False}
    approximates_softmax = True
    subquadratic = True  # O(T sqrt(T)) with the default block size ~sqrt(T)

    def __init__(self, n_head: int, head_dim: int, **options: object) -> None:
        super().__init__(n_head, head_dim, **options)
        size = self.opts["block_size"]
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 2 or size % 2):
            raise ValueError(
                f"block_size must be null or an even integer >= 2 (keeps (x, y) pairs in one "
                f"block), got {size!r}"
            )

    @classmethod
    def workspace_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                        training: bool) -> int:
        s = block_size(tokens, options.get("block_size"))
        per_token = s + math.ceil(tokens / s) + head_dim  # local keys, summaries, the blocks
        return (4 if training else 2) * (tokens + s) * per_token

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, H, T, hs = q.shape
        work = torch.promote_types(q.dtype, torch.float32)  # at least float32 inside
        s = block_size(T, self.opts["block_size"])
        # whole blocks as views, the trailing partial block as a padded copy
        (qf, qt), (kf, kt), (vf, vt) = (split_blocks(t.to(work).reshape(B * H, T, hs), s)
                                        for t in (q, k, v))
        scale = hs**-0.5
        N, nb = qf.shape[0], math.ceil(T / s)
        out = qf.new_empty(N, nb, s, hs)
        bias = math.log(s) if self.opts["log_size_bias"] else 0.0
        local_mask, summary_mask = block_masks(s, nb, nb, bias, q.device)
        for heads in chunks(N, nb * s * s):
            parts = [(qf[heads], kf[heads], vf[heads])]
            if qt is not None and kt is not None and vt is not None:
                parts.append((qt[heads], kt[heads], vt[heads]))
            # block summaries; a trailing padded block is never an *earlier* block, so its
            # padding never reaches a summary that is read
            sk, sv = (torch.cat(t, dim=1) for t in zip(*(summaries(*p, scale) for p in parts)))
            n = sk.shape[0]
            for blocks in chunks(nb, block_elements(n, s, nb, hs)):
                qh, kh, vh = (take_blocks(full[heads], None if tail is None else tail[heads],
                                          blocks) for full, tail in ((qf, qt), (kf, kt), (vf, vt)))
                out[heads, blocks] = local_and_summary_attention(
                    qh, kh, vh, sk, sv[:, None], local_mask, summary_mask[blocks], scale,
                )
        return out.view(B, H, nb * s, hs)[:, :, :T].to(q.dtype)


def summaries(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Each block's summary key (max-pool of its keys) and value (its max-pooled query's
    attention over its keys and values), (n, nb, hs) each, for q, k, v (n, nb, s, hs)."""
    sk = k.amax(dim=2)
    sq = q.amax(dim=2) * scale
    w = torch.softmax(torch.einsum("nbd,nbsd->nbs", sq, k), dim=-1)
    return sk, torch.einsum("nbs,nbsd->nbd", w, v)
