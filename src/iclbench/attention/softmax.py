"""Exact causal softmax attention (Vaswani et al. 2017) via ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch.nn.functional as F
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from iclbench.attention.base import ATTENTION, Attention


@ATTENTION.register("softmax")
class SoftmaxAttention(Attention):
    approximates_softmax = True

    @classmethod
    def workspace_numel(cls, tokens: int, head_dim: int, options: Mapping[str, Any],
                        training: bool) -> int:
        # fused kernels (flash / memory-efficient) keep row statistics, never the T x T scores
        return 4 * tokens + 2 * tokens * head_dim

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
