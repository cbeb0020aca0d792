"""int8 model files: int8 weights, float32 scales, biases and LayerNorm parameters (safetensors, no
pickle; about 4x smaller than float32), the options under the metadata's ``int8`` record.
Importing this module registers the ``int8`` model format, through which
:func:`iclbench.model.load_model` reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from iclbench.kernels.int8 import Int8Embedding, Int8Linear, int8_blocks, is_int8
from iclbench.model import Decoder, ModelSpec, save_model
from iclbench.model_files import MODEL_FORMATS, ModelFormat
from iclbench.variants.int8.options import QuantOptions
from iclbench.variants.int8.qat import replace_modules

#: the metadata record of an int8 file (and the model format's name)
RECORD = "int8"


def save_int8(model: Decoder, path: str | Path, opts: QuantOptions,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write an int8 decoder: int8 weights, float32 scales/biases/LayerNorms (safetensors)."""
    if not is_int8(model):
        raise ValueError(f"{path}: save_int8 needs a model converted with to_int8")
    save_model(model, path, {RECORD: asdict(opts), **dict(metadata or {})})


def load_int8(spec: ModelSpec, opts: Mapping[str, Any] | QuantOptions,
              state: Mapping[str, Tensor], device: torch.device | str = "cpu") -> Decoder:
    """Rebuild an int8 decoder from the tensors :func:`save_int8` wrote (strict keys).
    :func:`iclbench.model.load_model` checks a file's tensors against :func:`int8_skeleton` and
    its options with :func:`int8_options` before it calls this."""
    qopts = opts if isinstance(opts, QuantOptions) else QuantOptions(**dict(opts))
    model = int8_skeleton(spec, qopts)
    model.load_state_dict(dict(state), strict=True)
    return model.to(device).eval()


def int8_skeleton(spec: ModelSpec, opts: QuantOptions) -> Decoder:
    """The int8 decoder of ``spec`` with placeholder int8 weights and scales: the modules, names,
    shapes and dtypes :func:`save_int8` writes (built under ``torch.device("meta")`` it allocates
    nothing)."""
    model = Decoder(spec)

    def skeleton(m: nn.Module) -> nn.Module | None:
        if type(m) is nn.Linear:
            return Int8Linear(m.in_features, m.out_features, opts.activation_bits)
        if type(m) is nn.Embedding:
            return Int8Embedding(m.num_embeddings, m.embedding_dim)
        return None

    replace_modules(model, skeleton)
    int8_blocks(model)
    return model


def int8_options(raw: Any) -> QuantOptions:
    """The options an int8 file's metadata records (:func:`save_int8` writes every field); raises
    ValueError saying what is wrong where they are not an object of every field with its type."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, got {str(raw)[:100]}")
    fields = asdict(QuantOptions())
    unknown, missing = sorted(set(raw) - set(fields)), sorted(set(fields) - set(raw))
    if unknown or missing:
        raise ValueError((f"missing {missing} " if missing else "")
                         + (f"unknown {unknown}" if unknown else ""))
    for key, default in fields.items():
        value = raw[key]
        ok = (type(value) is int if isinstance(default, int)
              else isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{key} must be {type(default).__name__}, got {value!r}")
    return QuantOptions(**raw)


def int8_scale_problems(state: Mapping[str, Tensor]) -> list[str]:
    """Scales in an int8 state dict that :func:`save_int8` never writes (finite values assumed):
    a weight step at or below 0, a negative input step (0 means dynamic per-token steps)."""
    problems = []
    for name, t in state.items():
        if name.endswith("weight_scale") and not bool((t > 0).all()):
            problems.append(f"{name} must be positive, got {t.tolist()}")
        elif name.endswith("input_scale") and not bool((t >= 0).all()):
            problems.append(f"{name} must be non-negative, got {t.tolist()}")
    return problems


class Int8Format(ModelFormat):
    """Files :func:`save_int8` writes, for :func:`iclbench.model.load_model`."""

    def options(self, record: Any) -> QuantOptions:
        return int8_options(record)

    def skeleton(self, spec: ModelSpec, options: QuantOptions) -> Decoder:
        return int8_skeleton(spec, options)

    def state_problems(self, state: Mapping[str, Tensor]) -> list[str]:
        return int8_scale_problems(state)

    def load(self, spec: ModelSpec, options: QuantOptions, state: Mapping[str, Tensor],
             device: torch.device | str) -> Decoder:
        return load_int8(spec, options, state, device)


MODEL_FORMATS.register(RECORD)(Int8Format())
