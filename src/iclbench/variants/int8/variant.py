"""The ``int8`` variant: trained = Q8BERT QAT then int8 kernels; swapped = post-training int8;
finetuned = Q8BERT's quantization-aware fine-tuning of the trained float model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from iclbench.kernels.cpu import fast_inference
from iclbench.kernels.int8 import check_kernel_exact, is_int8
from iclbench.model import Decoder, ModelSpec
from iclbench.variants.base import EXTRA_VARIANTS, Variant
from iclbench.variants.int8.convert import to_int8
from iclbench.variants.int8.io import save_int8
from iclbench.variants.int8.options import QuantOptions
from iclbench.variants.int8.qat import prepare_qat


class Int8Variant(Variant):
    """``int8``: the softmax decoder with every linear layer (and the position table) in int8."""

    def check_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        opts = QuantOptions.from_options(options)
        check_kernel_exact(opts.weight_bits, opts.activation_bits)

    def check_steps(self, options: Mapping[str, Any], steps: int, where: str,
                    steps_key: str) -> None:
        start = QuantOptions.from_options(options).start_step
        if start >= steps:
            raise ValueError(f"{where}.start_step ({start}) must be below {steps_key} ({steps}): "
                             "the model would never train quantized")

    def model_spec(self, base: ModelSpec, options: Mapping[str, Any]) -> ModelSpec:
        return replace(base, attention="softmax", attention_options={})

    def prepare_training(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        return prepare_qat(model, QuantOptions.from_options(options))

    def for_inference(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        if is_int8(model):  # the file holds the int8 model already
            return model
        return to_int8(model, QuantOptions.from_options(options))

    def swap(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        return to_int8(model, QuantOptions.from_options(options))

    def convert(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Q8BERT's own procedure: quantization-aware fine-tuning of the trained float model."""
        return fast_inference(self.prepare_training(model, options))

    def save(self, model: nn.Module, path: str | Path, options: Mapping[str, Any],
             metadata: Mapping[str, str] | None = None) -> None:
        opts = QuantOptions.from_options(options)
        save_int8(to_int8(model, opts), path, opts, metadata)  # type: ignore[arg-type]


EXTRA_VARIANTS.register("int8")(Int8Variant("int8"))
