"""A GPT-2-style causal decoder for in-context regression (Garg et al. 2022, section 3).

Pre-LayerNorm blocks, a GELU MLP of width 4x, learned absolute positions, no dropout. A prompt
``(x_1, y_1, ..., x_k, y_k)`` becomes 2k tokens: ``x_i`` and ``[y_i, 0, ..., 0]`` (y zero-padded to
d), read in by one ``Linear(d, n_embd)``; the read-out ``Linear(n_embd, 1)`` at the ``x_i`` tokens
predicts ``y_i`` from the prefix ending at ``x_i``. How queries meet keys is a pluggable
:class:`~iclbench.attention.Attention` from the registry.

The blocks are the textbook ones; CPU inference runs them through fused kernels that the
variants' inference hooks put in (:mod:`iclbench.kernels`).

Vector outputs (``ModelSpec.n_out = m > 1``, tasks with ``vector_output``): the y token is
``[y_i, 0, ..., 0]`` with the m coordinates of ``y_i`` first (so ``m <= d``), and the read-out is
``Linear(n_embd, m)``, predictions (B, n, m). With ``n_out = 1`` every tensor, weight draw and file
is what it was before vector outputs existed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor, nn

from iclbench.attention import build_attention
from iclbench.attention.base import Attention


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes the decoder's shape and its attention."""

    n_dims: int
    n_positions: int  # tokens, i.e. 2 * points
    n_embd: int
    n_layer: int
    n_head: int
    attention: str = "softmax"
    attention_options: Mapping[str, Any] = field(default_factory=dict)
    #: outputs per prediction: 1 (scalar y, predictions (B, n)) or m (vector y, (B, n, m))
    n_out: int = 1

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if not 1 <= self.n_out <= self.n_dims:
            raise ValueError(f"a y token holds at most n_dims ({self.n_dims}) outputs, "
                             f"got {self.n_out}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values for a file's metadata. ``n_out`` is left out when it is 1, so
        that scalar models' files stay byte-identical to those written before it existed."""
        out = {**asdict(self), "attention_options": dict(self.attention_options)}
        if self.n_out == 1:
            del out["n_out"]
        return out


class SelfAttention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.n_head = spec.n_head
        self.c_attn = nn.Linear(spec.n_embd, 3 * spec.n_embd)
        self.c_proj = nn.Linear(spec.n_embd, spec.n_embd)
        self.core = build_attention(
            spec.attention, spec.n_head, spec.n_embd // spec.n_head, spec.attention_options
        )

    def attend(self, qkv: Tensor) -> Tensor:
        """The core on the output of ``c_attn``, (B, T, 3C): split into heads, attention, heads
        merged again, (B, T, C) (the input of ``c_proj``)."""
        B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in qkv.split(C, dim=2))
        q, k = self.core.norm_qk(q, k)
        y = self.core(q, k, v)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, C)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.attend(self.c_attn(x)))


class Block(nn.Module):
    """GPT-2's pre-LayerNorm block (CPU inference: :class:`iclbench.kernels.cpu.CpuBlock`)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(spec.n_embd)
        self.attn = SelfAttention(spec)
        self.ln_2 = nn.LayerNorm(spec.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(spec.n_embd, 4 * spec.n_embd),
            nn.GELU(),
            nn.Linear(4 * spec.n_embd, spec.n_embd),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def interleave(xs: Tensor, ys: Tensor) -> Tensor:
    """Tokens ``(x_1, [y_1, 0..], x_2, ...)`` of shape (B, 2n, d) from xs (B, n, d) and ys (B, n),
    or vector ys (B, n, m) with ``m <= d``, whose coordinates fill the y token's first m places."""
    B, n, d = xs.shape
    ys_wide = torch.zeros_like(xs)
    if ys.dim() == 2:
        ys_wide[..., 0] = ys
    else:
        ys_wide[..., : ys.shape[-1]] = ys
    return torch.stack((xs, ys_wide), dim=2).view(B, 2 * n, d)


class Decoder(nn.Module):
    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.read_in = nn.Linear(spec.n_dims, spec.n_embd)
        self.wpe = nn.Embedding(spec.n_positions, spec.n_embd)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(spec.n_embd)
        self.read_out = nn.Linear(spec.n_embd, spec.n_out)
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        # GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer);
        # an attention variant may ask for another std for its own parameters (Attention.init_std).
        # The read-in is outside GPT-2 (Garg et al. build it as a plain nn.Linear): nn.Linear's
        # U(-1/sqrt(d), 1/sqrt(d)) weights, so that a token's content outweighs its position
        # embedding as there, and a zero bias: a shared offset in every token (nn.Linear's own
        # bias) left ReLU attention stuck at predicting 0 (benchmarks/train_recipe.py)
        own = {f"{prefix}.{param}": std for prefix, module in self.named_modules()
               if isinstance(module, Attention) for param, std in module.init_std.items()}
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            elif name == "read_in.weight":
                bound = self.spec.n_dims ** -0.5
                nn.init.uniform_(p, -bound, bound, generator=generator)
            else:
                std = own.get(name, 0.02)
                if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                    std /= math.sqrt(2 * self.spec.n_layer)
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)

    def set_attention(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        """Swap every layer's attention for another registered variant (no retraining). A model
        trained with ``qk_norm`` keeps it, with its learned scales."""
        head_dim = self.spec.n_embd // self.spec.n_head
        options = dict(options or {})
        if "qk_norm" in options:
            raise ValueError("qk_norm comes from the trained model; a swap cannot set it")
        for block in self.blocks:
            old = block.attn.core
            device = block.attn.c_attn.weight.device
            qk_norm = bool(old.opts.get("qk_norm", False))
            core = build_attention(name, self.spec.n_head, head_dim,
                                   {**options, "qk_norm": qk_norm}).to(device)
            if qk_norm:
                core.ln_q.data.copy_(old.ln_q.data)
                core.ln_k.data.copy_(old.ln_k.data)
            block.attn.core = core
        # the spec names the attention the model now has, so a saved converted model loads back
        self.spec = replace(self.spec, attention=name,
                            attention_options={**options, **({"qk_norm": True} if qk_norm else {})})

    def hidden(self, tokens: Tensor) -> Tensor:
        """The final hidden states (B, T, n_embd) of tokens (B, T, d)."""
        T = tokens.shape[1]
        if T > self.spec.n_positions:
            raise ValueError(
                f"prompt of {T} tokens exceeds the model's {self.spec.n_positions} positions"
            )
        pos = torch.arange(T, device=tokens.device)
        h = self.read_in(tokens) + self.wpe(pos)
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (B, n) (or (B, n, m) for ``n_out = m > 1``) of ``y_i`` from
        ``x_1, y_1, ..., x_i`` for every i."""
        h = self.hidden(interleave(xs, ys))
        out = self.read_out(h[:, ::2])
        return out.squeeze(-1) if self.spec.n_out == 1 else out


def save_model(model: Decoder, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write the weights with safetensors (atomically); the spec travels in the metadata."""
    from iclbench.results import write_with

    # one metadata key: safetensors writes metadata in hash order, so several keys are not
    # byte-stable across processes
    info = {"spec": model.spec.to_dict(), **dict(metadata or {})}
    meta = {"iclbench": json.dumps(info, sort_keys=True)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(lambda tmp: save_file(tensors, str(tmp), metadata=meta), path)


#: safetensors' names of torch dtypes, as a file's header gives them
_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
#: the spec's sizes, which a file's metadata must give as positive integers
_SPEC_SIZES = ("n_dims", "n_positions", "n_embd", "n_layer", "n_head")

Header = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Decoder:
    """Rebuild a :class:`Decoder` from a safetensors file (no pickle); raises naming the file.

    Before anything is built, the metadata's spec (and int8 options) must be of the form
    :func:`save_model` (:func:`iclbench.quant.save_int8`) writes, and the file's tensors, read
    from its header, must be exactly those of the model the spec describes, with their shapes and
    dtypes (compared against that model built on the ``meta`` device, which allocates nothing;
    its sizes are first checked against the file's own read-in, position table and blocks, so a
    spec claiming a huge model fails there). Float tensors must be finite. Any of these wrong, or
    an unreadable file, raises ValueError ``"<path>: not a valid model file (<what>)"``.
    """

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: not a valid model file ({what})")

    try:
        with safe_open(str(path), framework="pt") as f:
            info = _model_info(f.metadata(), bad)
            spec = _spec_from_info(info, bad)
            int8 = None
            if "int8" in info:  # an int8 model (iclbench.quant.save_int8)
                from iclbench.quant import int8_options

                try:
                    int8 = int8_options(info["int8"])
                except ValueError as err:
                    raise bad(f"metadata int8 options: {err}") from None
            header: Header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                              for k in f.keys()}
            _check_tensors(header, _expected_tensors(spec, int8, header, bad), bad)
            state = {k: f.get_tensor(k) for k in header}
    except (SafetensorError, OSError) as err:
        raise bad(str(err)) from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise bad(f"tensor {name!r} holds NaN or infinite values")
    try:
        if int8 is not None:
            from iclbench.quant import int8_scale_problems, load_int8

            problems = int8_scale_problems(state)
            if problems:
                raise bad("; ".join(problems))
            return load_int8(spec, int8, state, device)
        model = Decoder(spec)
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as err:  # not expected after the checks above
        raise bad(str(err)) from None
    return model.to(device).eval()


def _model_info(metadata: Mapping[str, str] | None, bad: Any) -> dict[str, Any]:
    """The ``iclbench`` metadata object of a model file."""
    if not metadata or "iclbench" not in metadata:
        raise bad("metadata lacks the 'iclbench' key")
    try:
        info = json.loads(metadata["iclbench"])
    except ValueError as err:
        raise bad(f"metadata 'iclbench' is not JSON: {err}") from None
    if not isinstance(info, dict):
        raise bad(f"metadata 'iclbench' is a {type(info).__name__}, not an object")
    return info


def _spec_from_info(info: Mapping[str, Any], bad: Any) -> ModelSpec:
    """The :class:`ModelSpec` of a file's metadata, its values' types checked (no model built)."""
    raw = info.get("spec")
    if not isinstance(raw, dict):
        raise bad("metadata lacks the model's spec" if raw is None
                  else f"metadata spec is a {type(raw).__name__}, not an object")
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(raw) - known)
    missing = [k for k in _SPEC_SIZES if k not in raw]
    if unknown or missing:
        raise bad("metadata spec" + (f" lacks {missing}" if missing else "")
                  + (f" has unknown key(s) {unknown}" if unknown else ""))
    for key in (*_SPEC_SIZES, "n_out"):
        value = raw.get(key, 1)
        if type(value) is not int or value < 1:
            raise bad(f"metadata spec {key} must be a positive integer, got {value!r}")
    if not isinstance(raw.get("attention", ""), str):
        raise bad(f"metadata spec attention must be a string, got {raw['attention']!r}")
    if not isinstance(raw.get("attention_options", {}), dict):
        raise bad(f"metadata spec attention_options must be an object, got "
                  f"{raw['attention_options']!r}")
    try:
        return ModelSpec(**raw)
    except ValueError as err:
        raise bad(f"metadata spec: {err}") from None


def _expected_tensors(spec: ModelSpec, int8: Any, header: Header, bad: Any) -> Header:
    """Names, shapes and dtypes of the state dict of the model ``spec`` (and ``int8``, the
    int8 options, or None) describes, from that model built on the meta device. Its sizes are
    first checked against the tensors that carry them in ``header``, so the spec of a corrupt
    file never builds (or loops over) more than the file holds."""
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
    try:
        with torch.device("meta"):
            if int8 is not None:
                from iclbench.quant import int8_skeleton

                model = int8_skeleton(spec, int8)
            else:
                model = Decoder(spec)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:  # attention name or options
        raise bad(f"the spec in its metadata does not build a model: {err}") from None
    return {k: (tuple(v.shape), _SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype)))
            for k, v in model.state_dict().items()}


def _check_tensors(header: Header, expected: Header, bad: Any) -> None:
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
