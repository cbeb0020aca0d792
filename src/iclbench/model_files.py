"""Model files: safetensors with the model's spec in the metadata, checked before anything is built.

A file's metadata is one JSON object under the key ``iclbench``: ``spec`` (the
:class:`~iclbench.model.ModelSpec` as a dict), the caller's string metadata (task, variant, seed,
...) and, for a model that is not a plain float decoder, one *format record*: an object under the
format's name (``int8``: its options). :data:`MODEL_FORMATS` maps those names to
:class:`ModelFormat` loaders; the variant that writes a format registers it
(:mod:`iclbench.variants.int8.io`), so :func:`iclbench.model.load_model` reads every registered
format without importing any variant. This module checks files against what a format expects
(metadata, sizes, tensor names, shapes, dtypes, finiteness); it knows no model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from iclbench.metadata import read_metadata
from iclbench.registry import Registry

#: safetensors' names of torch dtypes, as a file's header gives them
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
#: the spec's sizes, which a file's metadata must give as positive integers
SPEC_SIZES = ("n_dims", "n_positions", "n_embd", "n_layer", "n_head")

Header = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)
Bad = Callable[[str], ValueError]  # what is wrong -> the error naming the file


class ModelFormat:
    """How to rebuild a model from a file whose metadata holds this format's record. The float
    decoder's format is :data:`iclbench.model.FLOAT`; others register in :data:`MODEL_FORMATS`
    under the record's name."""

    def options(self, record: Any) -> Any:
        """The format's options from its metadata record; ValueError saying what is wrong."""
        return None

    def skeleton(self, spec: Any, options: Any) -> nn.Module:
        """The model with the file's tensor names, shapes and dtypes (built on the meta device:
        it must allocate nothing)."""
        raise NotImplementedError

    def state_problems(self, state: Mapping[str, Tensor]) -> list[str]:
        """Values the format's writer never writes (finite values assumed)."""
        return []

    def load(self, spec: Any, options: Any, state: Mapping[str, Tensor],
             device: torch.device | str) -> nn.Module:
        """The model holding ``state`` (already checked), on ``device``, in eval mode."""
        raise NotImplementedError


MODEL_FORMATS: Registry[ModelFormat] = Registry("model format")


def write_model(state: Mapping[str, Tensor], info: Mapping[str, Any], path: str | Path) -> None:
    """Write ``state`` with ``info`` as the ``iclbench`` metadata (atomically)."""
    from iclbench.results import write_with  # keeps pandas out of importing the model

    # one metadata key: safetensors writes metadata in hash order, so several keys are not
    # byte-stable across processes
    meta = {"iclbench": json.dumps(dict(info), sort_keys=True)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_with(lambda tmp: save_file(tensors, str(tmp), metadata=meta), path)


def read_info(metadata: Mapping[str, str] | None, bad: Bad) -> dict[str, Any]:
    """The ``iclbench`` metadata object of a model file."""
    return read_metadata(metadata, bad)


def read_spec(info: Mapping[str, Any], spec_class: type, bad: Bad) -> Any:
    """The ``spec_class`` (a ModelSpec) of a file's metadata, its values' types checked."""
    raw = info.get("spec")
    if not isinstance(raw, dict):
        raise bad("metadata lacks the model's spec" if raw is None
                  else f"metadata spec is a {type(raw).__name__}, not an object")
    known = {f.name for f in fields(spec_class)}
    unknown = sorted(set(raw) - known)
    missing = [k for k in SPEC_SIZES if k not in raw]
    if unknown or missing:
        raise bad("metadata spec" + (f" lacks {missing}" if missing else "")
                  + (f" has unknown key(s) {unknown}" if unknown else ""))
    for key in (*SPEC_SIZES, "n_out"):
        value = raw.get(key, 1)
        if type(value) is not int or value < 1:
            raise bad(f"metadata spec {key} must be a positive integer, got {value!r}")
    if not isinstance(raw.get("attention", ""), str):
        raise bad(f"metadata spec attention must be a string, got {raw['attention']!r}")
    if not isinstance(raw.get("attention_options", {}), dict):
        raise bad(f"metadata spec attention_options must be an object, got "
                  f"{raw['attention_options']!r}")
    try:
        return spec_class(**raw)
    except ValueError as err:
        raise bad(f"metadata spec: {err}") from None


def read_format(info: Mapping[str, Any], default: ModelFormat,
                bad: Bad) -> tuple[ModelFormat, Any]:
    """The file's format (``default`` where it records none) and that format's options. A record
    is an object-valued key besides ``spec`` (callers' metadata values are strings); one that no
    registered format reads is an error, not a float model."""
    records = [k for k in info if k in MODEL_FORMATS]
    unread = [k for k, v in info.items() if k != "spec" and isinstance(v, dict)
              and k not in MODEL_FORMATS]
    if unread or len(records) > 1:
        raise bad(f"metadata records {sorted(unread) or records}: not one registered model "
                  f"format (registered: {', '.join(MODEL_FORMATS.names()) or 'none'}; "
                  "importing iclbench.variants registers the built-in ones)")
    if not records:
        return default, None
    fmt = MODEL_FORMATS.get(records[0])
    try:
        return fmt, fmt.options(info[records[0]])
    except ValueError as err:
        raise bad(f"metadata {records[0]} options: {err}") from None


def read_header(f: Any) -> Header:
    """Names, shapes and dtypes of the tensors of an open safetensors file (nothing is read)."""
    return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def check_sizes(spec: Any, header: Header, bad: Bad) -> None:
    """The spec's sizes against the tensors that carry them in ``header``, so the spec of a
    corrupt file never builds (or loops over) more than the file holds."""
    from_spec = f"(n_dims={spec.n_dims}, n_positions={spec.n_positions}, n_embd={spec.n_embd})"
    for name, want in (("read_in.weight", (spec.n_embd, spec.n_dims)),
                       ("wpe.weight", (spec.n_positions, spec.n_embd))):
        if name not in header:
            raise bad(f"tensor {name!r} is missing")
        if header[name][0] != want:
            raise bad(f"tensor {name!r} has shape {header[name][0]}, the spec in its metadata "
                      f"{from_spec} needs {want}")
    blocks = {k.split(".")[1] for k in header if k.startswith("blocks.")}
    if len(blocks) != spec.n_layer:
        raise bad(f"the file holds {len(blocks)} blocks, the spec in its metadata has "
                  f"n_layer={spec.n_layer}")


def expected_tensors(fmt: ModelFormat, spec: Any, options: Any, header: Header,
                     bad: Bad) -> Header:
    """Names, shapes and dtypes of the state dict of ``fmt``'s model of ``spec``, from that model
    built on the meta device, once the spec's sizes match ``header`` (:func:`check_sizes`)."""
    check_sizes(spec, header, bad)
    try:
        with torch.device("meta"):
            model = fmt.skeleton(spec, options)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:  # attention name or options
        raise bad(f"the spec in its metadata does not build a model: {err}") from None
    return {k: (tuple(v.shape), SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype)))
            for k, v in model.state_dict().items()}


def check_tensors(header: Header, expected: Header, bad: Bad) -> None:
    """The file's tensors must be exactly the expected ones, with their shapes and dtypes."""

    def few(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing or extra:
        raise bad("tensors do not match the spec in its metadata:"
                  + (f" missing {few(missing)}" if missing else "")
                  + (";" if missing and extra else "")
                  + (f" unexpected {few(extra)}" if extra else ""))
    shapes = [f"{k} {header[k][0]} (expected {v[0]})" for k, v in expected.items()
              if header[k][0] != v[0]]
    if shapes:
        raise bad(f"tensor shapes do not match the spec in its metadata: {few(shapes)}")
    dtypes = [f"{k} {header[k][1]} (expected {v[1]})" for k, v in expected.items()
              if header[k][1] != v[1]]
    if dtypes:
        raise bad(f"wrong tensor dtypes: {few(dtypes)}")


def check_values(state: Mapping[str, Tensor], fmt: ModelFormat, bad: Bad) -> None:
    """Float tensors must be finite, and hold what ``fmt``'s writer writes."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise bad(f"tensor {name!r} holds NaN or infinite values")
    problems = fmt.state_problems(state)
    if problems:
        raise bad("; ".join(problems))
