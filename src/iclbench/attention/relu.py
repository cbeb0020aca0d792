"""ReLU attention (Wortsman et al. 2023, "Replacing softmax with ReLU in vision transformers").

``alpha_ij = relu(q_i . k_j / sqrt(hs)) / (i + 1)`` for ``j <= i`` (0-based), zero otherwise: the
causal form of their ``relu(.) / L``, dividing by the number of visible keys so that position ``i``
depends neither on later tokens nor on the total length. Same two matmuls as softmax attention,
without exp, max and row sums; it does not approximate softmax, so it is trained, never swapped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclbench.attention.base import ATTENTION, Attention


@ATTENTION.register("relu")
class ReluAttention(Attention):
    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        T = q.shape[-2]
        scores = torch.relu(q @ k.transpose(-1, -2) * self.head_dim**-0.5)  # (B, nh, T, T)
        visible = torch.arange(1, T + 1, device=q.device, dtype=q.dtype)  # keys 0..i: i + 1
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, 0.0) / visible[:, None]
        return scores @ v  # (B, nh, T, hs)
