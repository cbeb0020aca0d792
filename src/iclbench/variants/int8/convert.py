"""int8 conversion: a QAT model (static input scales it learned) or a float model (post-training
quantization: dynamic per-token input scales) to the int8 layers and blocks of
:mod:`iclbench.kernels.int8`."""

from __future__ import annotations

import logging

import torch
from torch import nn

from iclbench.kernels.int8 import (
    Int8Embedding,
    Int8Linear,
    check_kernel_exact,
    int8_blocks,
    kernels,
)
from iclbench.model import Decoder
from iclbench.variants.int8.options import QuantOptions
from iclbench.variants.int8.qat import QATLinear, replace_modules

log = logging.getLogger(__name__)


def to_int8(model: Decoder, opts: QuantOptions) -> Decoder:
    """Convert a QAT model (static scales it learned) or a float model (PTQ: dynamic per-token
    input scales) to real int8 layers, in place; returns it in eval mode."""
    check_kernel_exact(opts.weight_bits, opts.activation_bits)

    def swap(m: nn.Module) -> nn.Module | None:
        if isinstance(m, QATLinear):
            if not m.quantizing:
                log.warning("int8: converting a layer that never quantized (steps %d <= "
                            "start_step %d)", int(m.steps), opts.start_step)
            return Int8Linear.from_float(m.weight, m.bias, opts.weight_bits,
                                         opts.activation_bits, m.input_absmax)
        if type(m) is nn.Linear:
            return Int8Linear.from_float(m.weight, m.bias, opts.weight_bits,
                                         opts.activation_bits, None)
        if isinstance(m, nn.Embedding):
            return Int8Embedding.from_float(m.weight, opts.weight_bits)
        return None

    with torch.no_grad():
        replace_modules(model, swap)
    int8_blocks(model)
    log.info("int8 model: %d linear layers, %s activation scales; on CPU: %s",
             sum(isinstance(m, Int8Linear) for m in model.modules()),
             "dynamic per-token" if any(m.dynamic for m in model.modules()
                                        if isinstance(m, Int8Linear)) else "static",
             kernels(model))
    return model.eval()
