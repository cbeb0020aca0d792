"""ReLU attention (Wortsman et al. 2023, "Replacing softmax with ReLU in vision transformers").

``alpha_ij = relu(q_i . k_j / sqrt(hs)) / (i + 1)`` for ``j <= i`` (0-based), zero otherwise: the
causal form of their ``relu(.) / L``, dividing by the number of visible keys so that position ``i``
depends neither on later tokens nor on the total length. Same two matmuls as softmax attention,
without exp, max and row sums; it does not approximate softmax, so it is trained, never swapped.

There is no fused kernel for it, so the scores are formed explicitly, :data:`QUERY_BLOCK` queries
at a time against the keys up to the block's last query only: the causal triangle's blocks above
the diagonal are never computed (about half the products of the T x T square at long context) and
the scores held at once are ``QUERY_BLOCK x T`` per head, not ``T x T``. Up to ``QUERY_BLOCK``
tokens (every training length) it is one block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from iclbench.attention.base import ATTENTION, Attention

#: queries per block of the score matrix (a constant, so that no output depends on T through it)
QUERY_BLOCK = 256


@ATTENTION.register("relu")
class ReluAttention(Attention):
    @classmethod
    def workspace_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                        training: bool) -> int:
        if training:  # every block's scores, scaled, rectified and divided, are saved for the
            return 4 * tokens * tokens  # backward pass (measured up to ~3.5 T^2 with the mask)
        return 3 * min(tokens, QUERY_BLOCK) * tokens  # one block's scores, mask and weights

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        T = q.shape[-2]
        if T <= QUERY_BLOCK:
            return _relu_block(q, k, v, 0, self.head_dim**-0.5)
        out = q.new_empty(q.shape)
        for i0 in range(0, T, QUERY_BLOCK):
            i1 = min(i0 + QUERY_BLOCK, T)
            out[:, :, i0:i1] = _relu_block(q[:, :, i0:i1], k[:, :, :i1], v[:, :, :i1], i0,
                                           self.head_dim**-0.5)
        return out


def _relu_block(q: Tensor, k: Tensor, v: Tensor, i0: int, scale: float) -> Tensor:
    """Outputs of queries ``i0 .. i0 + r - 1`` (q: (B, nh, r, hs)) over keys ``0 .. i1 - 1``
    (k, v: (B, nh, i1, hs), ``i1 = i0 + r``)."""
    i1 = k.shape[-2]
    scores = torch.relu(q @ k.transpose(-1, -2) * scale)  # (B, nh, r, i1)
    rows = torch.arange(i0, i1, device=q.device)
    visible = (rows + 1).to(q.dtype)  # keys 0..i: i + 1
    causal = torch.arange(i1, device=q.device)[None, :] <= rows[:, None]  # (r, i1)
    scores = scores.masked_fill(~causal, 0.0) / visible[:, None]
    return scores @ v  # (B, nh, r, hs)
