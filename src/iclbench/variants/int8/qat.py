"""int8 training: Q8BERT quantization-aware training (Zafrir et al. 2019, section 2).

Every ``nn.Linear`` of the decoder (read-in, attention ``c_attn`` and ``c_proj``, both MLP layers,
read-out) quantizes its weight and its input, and the position embedding quantizes its table,
with the symmetric linear scheme of Q8BERT eq. (1)::

    Quantize(x, S_x, M) = clamp(round(x * S_x), -M, M),   M = 2^(bits-1) - 1,
    fake(x) = Quantize(x, S_x, M) / S_x,

where ``S_W = M / max|W|`` per tensor for weights and ``S_x = M / EMA(max|x|)`` for inputs (the EMA
of the per-batch ``max|x|`` is updated in every training forward with decay ``ema_decay``). The
gradient is straight-through (``d fake(x)/dx = 1`` inside ``[-M, M] / S_x``, 0 where x is clipped);
the scales get no gradient. LayerNorm, softmax, GELU and the attention matmuls stay float32.
Quantization starts after ``start_step`` training forwards (each quantized module counts them in a
``steps`` buffer); the EMA is tracked from the first forward so the scale is warm when it starts.

:func:`fake_quantize` is the int8 kernels' own grid (:mod:`iclbench.kernels.int8`), so the
integers trained with are the ones the converted model multiplies
(:func:`iclbench.variants.int8.convert.to_int8`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.kernels.int8 import fake_quantize, qmax
from iclbench.model import Decoder
from iclbench.variants.int8.options import QuantOptions

__all__ = ["QATEmbedding", "QATLinear", "fake_quantize", "prepare_qat", "qmax", "replace_modules"]


class QATLinear(nn.Linear):
    """``nn.Linear`` with fake-quantized weight and input (same parameters, two more buffers).

    Buffers: ``input_absmax`` (EMA of max|x| over training batches) and ``steps`` (training
    forwards seen). Input (..., in_features) -> output (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, opts: QuantOptions) -> None:
        super().__init__(in_features, out_features, bias)
        self.opts = opts
        self.register_buffer("input_absmax", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._steps = 0  # host copy of ``steps``: no device sync per forward on CUDA

    @classmethod
    def from_linear(cls, linear: nn.Linear, opts: QuantOptions) -> QATLinear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, opts)
        new.to(linear.weight.device)
        new.weight, new.bias = linear.weight, linear.bias  # keep the parameters (and their init)
        return new

    @property
    def quantizing(self) -> bool:
        return self._steps > self.opts.start_step

    def _load_from_state_dict(self, state: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
        self._steps = int(self.steps)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.steps += 1
                self._steps += 1
                batch_max = x.detach().abs().max().float()
                if self._steps == 1:
                    self.input_absmax.copy_(batch_max)
                    absmax = self.input_absmax.clone()
                else:
                    # quantize with the EMA of earlier batches, then fold this batch in, so a
                    # token's scale never depends on the tokens of the current forward
                    absmax = self.input_absmax.clone()
                    self.input_absmax.mul_(self.opts.ema_decay).add_(
                        (1.0 - self.opts.ema_decay) * batch_max)
        else:
            absmax = self.input_absmax
        if not self.quantizing:
            return F.linear(x, self.weight, self.bias)
        w = fake_quantize(self.weight, self.weight.detach().abs().max(), self.opts.weight_bits)
        return F.linear(fake_quantize(x, absmax, self.opts.activation_bits), w, self.bias)


class QATEmbedding(nn.Embedding):
    """``nn.Embedding`` whose table is fake-quantized like a weight (Q8BERT quantizes embeddings)."""

    def __init__(self, num: int, dim: int, opts: QuantOptions) -> None:
        super().__init__(num, dim)
        self.opts = opts
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._steps = 0

    def _load_from_state_dict(self, state: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
        self._steps = int(self.steps)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, opts: QuantOptions) -> QATEmbedding:
        new = cls(emb.num_embeddings, emb.embedding_dim, opts)
        new.to(emb.weight.device)
        new.weight = emb.weight
        return new

    def forward(self, idx: Tensor) -> Tensor:
        if self.training:
            self.steps += 1
            self._steps += 1
        if self._steps <= self.opts.start_step:
            return super().forward(idx)
        w = fake_quantize(self.weight, self.weight.detach().abs().max(), self.opts.weight_bits)
        return F.embedding(idx, w)


def replace_modules(model: nn.Module, fn: Any) -> None:
    """Replace every child ``c`` of ``model`` (recursively) by ``fn(c)`` where that is not None."""
    for name, child in list(model.named_children()):
        new = fn(child)
        if new is not None:
            setattr(model, name, new)
        else:
            replace_modules(child, fn)


def prepare_qat(model: Decoder, opts: QuantOptions) -> Decoder:
    """Insert fake quantization into a float decoder, in place (before the optimiser is built)."""

    def swap(m: nn.Module) -> nn.Module | None:
        if type(m) is nn.Linear:
            return QATLinear.from_linear(m, opts)
        if type(m) is nn.Embedding:
            return QATEmbedding.from_embedding(m, opts)
        return None

    replace_modules(model, swap)
    return model
