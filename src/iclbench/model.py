"""A GPT-2-style causal decoder for in-context regression (Garg et al. 2022, section 3).

Pre-LayerNorm blocks, a GELU MLP of width 4x, learned absolute positions, no dropout. A prompt
``(x_1, y_1, ..., x_k, y_k)`` becomes 2k tokens: ``x_i`` and ``[y_i, 0, ..., 0]`` (y zero-padded to
d), read in by one ``Linear(d, n_embd)``; the read-out ``Linear(n_embd, 1)`` at the ``x_i`` tokens
predicts ``y_i`` from the prefix ending at ``x_i``. How queries meet keys is a pluggable
:class:`~iclbench.attention.Attention` from the registry.

The blocks are the textbook ones; CPU inference runs them through fused kernels that the
variants' inference hooks put in (:mod:`iclbench.kernels`). Files: :func:`save_model`,
:func:`load_model` (checks in :mod:`iclbench.model_files`).

Vector outputs (``ModelSpec.n_out = m > 1``, tasks with ``vector_output``): the y token is
``[y_i, 0, ..., 0]`` with the m coordinates of ``y_i`` first (so ``m <= d``), and the read-out is
``Linear(n_embd, m)``, predictions (B, n, m). With ``n_out = 1`` every tensor, weight draw and file
is what it was before vector outputs existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open
from torch import Tensor, nn

from iclbench.attention import build_attention
from iclbench.attention.base import Attention
from iclbench import model_files as files


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


class FloatFormat(files.ModelFormat):
    """The float decoder's files (no format record), as :func:`save_model` writes them."""

    def skeleton(self, spec: ModelSpec, options: Any) -> Decoder:
        return Decoder(spec)

    def load(self, spec: ModelSpec, options: Any, state: Mapping[str, Tensor],
             device: torch.device | str) -> Decoder:
        model = Decoder(spec)
        model.load_state_dict(dict(state))
        return model.to(device).eval()


FLOAT = FloatFormat()


def save_model(model: Decoder, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write the weights with safetensors (atomically); the spec travels in the metadata (and a
    format record, such as int8's options, in ``metadata``)."""
    info = {"spec": model.spec.to_dict(), **dict(metadata or {})}
    files.write_model(model.state_dict(), info, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Decoder:
    """Rebuild a model from a safetensors file (no pickle): the float :class:`Decoder`, or the
    format its metadata records (:data:`iclbench.model_files.MODEL_FORMATS`). Metadata, sizes,
    tensor names, shapes, dtypes and values are checked before and as anything is built
    (:mod:`iclbench.model_files`); anything wrong, or an unreadable file, raises ValueError
    ``"<path>: not a valid model file (<what>)"``."""

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: not a valid model file ({what})")

    try:
        with safe_open(str(path), framework="pt") as f:
            info = files.read_info(f.metadata(), bad)
            spec = files.read_spec(info, ModelSpec, bad)
            fmt, options = files.read_format(info, FLOAT, bad)
            header = files.read_header(f)
            files.check_tensors(header, files.expected_tensors(fmt, spec, options, header, bad),
                                bad)
            state = {k: f.get_tensor(k) for k in header}
    except (SafetensorError, OSError) as err:
        raise bad(str(err)) from None
    files.check_values(state, fmt, bad)
    try:
        return fmt.load(spec, options, state, device)  # type: ignore[return-value]
    except (KeyError, TypeError, RuntimeError) as err:  # not expected after the checks above
        raise bad(str(err)) from None
