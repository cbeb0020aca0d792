"""Exact causal softmax attention (Vaswani et al. 2017) via ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from iclbench.attention.base import ATTENTION, Attention


@ATTENTION.register("softmax")
class SoftmaxAttention(Attention):
    approximates_softmax = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
