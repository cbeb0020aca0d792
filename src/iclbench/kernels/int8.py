"""int8 inference: int8 layers and blocks and the CPU kernels that run them.

The int8 variant (:mod:`iclbench.variants.int8`) converts a model to these modules at inference;
its quantization-aware training simulates the integer grid defined here (:func:`fake_quantize`),
so the integers the kernels multiply are the ones training used.

**Layers.** :class:`Int8Linear` holds an int8 weight with its per-tensor scale and runs the
x86/fbgemm kernel ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` (float32 in; the
input is quantized inside the kernel with a *static* scale; int8 x uint8 products with int32
accumulation; float32 out with the bias). A QAT model's layers use the static scales it learned
(``EMA(max|x|) / M``); a float model's (post-training quantization, no learned scales) use a
*dynamic per-token* scale ``max|x_t| / M`` for each row: rows are divided by their own max before
the kernel and multiplied back after, which keeps the model causal and each prompt's prediction
independent of the rest of the batch (PyTorch's ``quantize_dynamic`` uses one scale per tensor,
which would let later tokens change earlier predictions). :class:`Int8Embedding` is the position
table in int8.

**Blocks (oneDNN, fused).** :class:`Int8Block` is a decoder block of int8 layers. Where all four
of its linear layers have static scales (the QAT model) and the CPU has oneDNN, it quantizes each
layer's input once (:func:`quantize_u8`) and runs ``onednn::qlinear_pointwise``, the maintained
int8 kernel behind PyTorch's x86 inductor quantization flow (plain uint8/int8 tensors, no
quantized-tensor API): the first MLP layer's kernel applies GELU (exact, float) and writes its
output already quantized to uint8 with the second layer's input scale, and both residual adds
happen in the kernels of ``c_proj`` and the second MLP layer. The block's output equals the
per-layer kernels' to float rounding. Default model, batch 64, 2 threads (AVX-512 with VNNI):
1.2-1.4x float32's speed where fbgemm per layer gave 1.1-1.3x, against float32 blocks on MKL;
1.0-1.3x against float32 blocks on oneDNN's float linear layer (:mod:`iclbench.kernels.cpu`,
what CPU inference runs since 2026-12-02; ``benchmarks/int8_speed.py``, README). The read-in and
read-out (5 and 1 features) and the dynamic layers keep fbgemm.

**Why these kernels (torch 2.13).** ``torch.ao.quantization`` (``quantize_dynamic`` etc.) is
deprecated in favour of torchao and creating quantized tensors warns the same; the aten kernels
themselves are not deprecated. torchao 0.18 installs from PyPI and runs, but its int8 x int8 path
on CPU goes through ``torch._int_mm``, which is 20-50x *slower* than float32 on an AVX2 machine
without VNNI, and ``Int8WeightOnlyConfig`` keeps float activations. ``onednn::qlinear_pointwise``
needs its input quantized first; :func:`quantize_u8` does it in a few vectorised passes (int8 then
a flipped sign bit: float32 -> uint8 conversion itself is not vectorised), and int8 inputs (zero
point 0) fall back to a reference kernel 1000x slower, so inputs are uint8 with zero point 128. The
fbgemm kernel quantizes inside, which suits layers without a fused neighbour; the one deprecated
call it needs (building the quantized weight for ``linear_prepack``, once per layer at
conversion) is logged, not hidden. Off the CPU (CUDA), :class:`Int8Linear` computes the same
numbers with dequantized float weights (simulated int8, logged): neither kernel runs there.

**Saturation.** Without VNNI, fbgemm (and oneDNN, see its "Nuances of int8 computations")
multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds pairs of products into
int16 and saturates when
``2 * max_u8 * max|w_q| > 32767``. With 8-bit activations (uint8 with zero point 128, so
``max_u8 = 255``) and 8-bit weights this overflows (measured: 7% error on realistic tensors), so on
such CPUs the weights must use 7 bits (``2 * 255 * 63 = 32130``) or the activations 7 bits (what
PyTorch's x86 qconfig does, ``reduce_range``). :func:`check_kernel_exact` enforces it; the configs
use 7-bit weights and 8-bit activations (int8 storage and kernels either way).
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclbench.kernels.cpu import onednn_ops, residual_forward
from iclbench.model import Block

log = logging.getLogger(__name__)

_TINY = 1e-12  # smallest scale; keeps an all-zero tensor from dividing by zero


def qmax(bits: int) -> int:
    """M: the largest quantized magnitude of a symmetric ``bits``-bit grid (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def fake_quantize(x: Tensor, absmax: Tensor, bits: int) -> Tensor:
    """Q8BERT eq. (1) and back: ``clamp(round(x * M / absmax), -M, M) * absmax / M``.

    ``absmax`` is a 0-d tensor (no gradient flows to it). Straight-through gradient: 1 where x is
    inside ``[-absmax, absmax]`` (up to half a step), 0 where it is clipped. Rounding is half to
    even, as in the int8 kernels. Same shape as ``x``. The grid of every int8 weight here, and
    what quantization-aware training (:mod:`iclbench.variants.int8.qat`) trains through.
    """
    m = qmax(bits)
    step = (absmax.detach().float() / m).clamp_min(_TINY).reshape(())
    zero = torch.zeros((), dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x, step, zero, -m, m)


def kernel_engine() -> str:
    """The quantized engine that runs :class:`Int8Linear` on CPU (e.g. ``x86``, which uses fbgemm)."""
    return str(torch.backends.quantized.engine)


def _onednn_version() -> str:
    found = re.search(r"(?:MKL-DNN|oneDNN) (v[\w.]+)", torch.__config__.show())
    return found.group(1) if found else "version unknown"


def kernels(model: nn.Module, device: torch.device | str = "cpu") -> str:
    """Which int8 kernels run ``model`` on ``device``, in words (benchmarks and logs print it)."""
    if torch.device(device).type != "cpu":
        return f"simulated int8 (float matmuls on {torch.device(device).type})"
    fbgemm = f"fbgemm ({kernel_engine()} quantized engine)"
    blocks = [m for m in model.modules() if isinstance(m, Int8Block)]
    probe = torch.empty(0)
    if blocks and all(b.fused(probe) for b in blocks):
        return (f"oneDNN ({_onednn_version()}) qlinear_pointwise for the blocks' "
                f"linear layers (GELU, residual adds and requantization fused), {fbgemm} for "
                "read-in and read-out")
    return f"{fbgemm} for every linear layer"


def check_kernel_exact(weight_bits: int, activation_bits: int) -> None:
    """Raise where the CPU kernel would saturate int16 pair sums (no VNNI; see module docstring)."""
    if torch.cpu._is_vnni_supported():
        return
    max_u8 = 2 ** (activation_bits - 1) + qmax(activation_bits)
    if 2 * max_u8 * qmax(weight_bits) > 32767:
        raise ValueError(
            f"weight_bits={weight_bits} with activation_bits={activation_bits} saturates the "
            "int8 kernel on this CPU (no VNNI: vpmaddubsw sums pairs of products in int16); "
            "use weight_bits: 7 or activation_bits: 7")


def _quantize_weight(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Per-tensor symmetric: int8 values (same shape as w) and the float32 step ``max|w| / M``."""
    absmax = w.detach().abs().max().float()
    step = (absmax / qmax(bits)).clamp_min(_TINY)
    # through fake_quantize itself, so the int8 values are exactly the ones QAT trained with
    q = torch.round(fake_quantize(w.detach().float(), absmax, bits) / step).to(torch.int8)
    return q, step


_WARNED: set[str] = set()


def _log_once(key: str, msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


def _prepack(weight_q: Tensor, step: Tensor, bias: Tensor | None) -> Any:
    """fbgemm's packed weight (int8, per-tensor scale, zero point 0), with the bias if given."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qw = torch._make_per_tensor_quantized_tensor(weight_q.cpu(), float(step), 0)
        packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.cpu())
    for w in caught:
        _log_once("prepack", "int8 weight packing: %s (%s); see iclbench.kernels.int8's "
                  "docstring for why this kernel", w.category.__name__,
                  str(w.message).splitlines()[0])
    return packed


_ZERO_POINTS = torch.zeros(1, dtype=torch.int64)  # the weights' (symmetric: zero)


def quantize_u8(x: Tensor, step: float, bits: int) -> Tensor:
    """``clamp(round(x / step), -M, M) + 2^(bits-1)`` as uint8 (round half to even, as
    :func:`fake_quantize`). For 8 bits the integers go through int8 and the zero point 128 is
    added by flipping the sign bit of the same bytes: float32 -> int8 conversion is vectorised,
    float32 -> uint8 is not (about 8x slower at 2M numbers)."""
    m = qmax(bits)
    q = x.mul(1.0 / step).round_().clamp_(-m, m)
    if bits == 8:
        return q.to(torch.int8).view(torch.uint8).bitwise_xor_(0x80)
    return q.add_(2 ** (bits - 1)).to(torch.uint8)


class Int8Linear(nn.Module):
    """A linear layer with int8 weight and int8 input: ``y = (x_q W_qᵀ) s_x s_w + b``.

    Buffers (all saved): ``weight`` int8 (out, in), ``weight_scale`` float32 0-d (the step
    ``max|W| / M_w``), ``bias`` float32 (out,), ``input_scale`` float32 0-d (the static step
    ``EMA(max|x|) / M_x``; 0 means dynamic per-token steps ``max|x_t| / M_x``).
    Input (..., in) float32 -> output (..., out) float32.
    """

    def __init__(self, in_features: int, out_features: int, activation_bits: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation_bits = activation_bits
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(()))
        self.register_buffer("bias", torch.zeros(out_features))
        self.register_buffer("input_scale", torch.zeros(()))
        self._packed: Any = None  # fbgemm's packed weight (forward)
        self._onednn: tuple[Tensor, Tensor] | None = None  # oneDNN's (int8_matmul)

    @classmethod
    def from_float(
        cls, weight: Tensor, bias: Tensor | None, weight_bits: int, activation_bits: int,
        input_absmax: Tensor | None,
    ) -> Int8Linear:
        """Quantize a float layer; ``input_absmax`` None -> dynamic per-token input scales."""
        out_features, in_features = weight.shape
        new = cls(in_features, out_features, activation_bits)
        q, step = _quantize_weight(weight, weight_bits)
        new.weight.copy_(q)
        new.weight_scale.copy_(step)
        if bias is not None:
            new.bias.copy_(bias.detach())
        if input_absmax is not None:
            new.input_scale.copy_((input_absmax.detach().float() / qmax(activation_bits))
                                  .clamp_min(_TINY))
        return new.to(weight.device)

    @property
    def dynamic(self) -> bool:
        return float(self.input_scale) <= 0.0

    @property
    def zero_point(self) -> int:
        """The uint8 zero point of this layer's quantized input (``q + 2^(bits-1)``)."""
        return 2 ** (self.activation_bits - 1)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed = self._onednn = None  # repack from the loaded int8 weight
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> Int8Linear:
        self._packed = self._onednn = None
        return super()._apply(fn, recurse)

    def quantize(self, x: Tensor) -> Tensor:
        """The static-scale input ``clamp(round(x / step), -M, M)`` as uint8 (+ zero point),
        (..., in) float32 -> (..., in) uint8: what :meth:`int8_matmul` reads."""
        return quantize_u8(x, float(self.input_scale), self.activation_bits)

    def int8_matmul(self, xq: Tensor, add: Tensor | None = None, in_place: bool = False,
                    gelu_for: Int8Linear | None = None) -> Tensor:
        """oneDNN's int8 linear layer (``onednn::qlinear_pointwise``) on a quantized input.

        xq (N, in) uint8 from :meth:`quantize` (static scale only) -> (N, out): float32
        ``(x_q W_q^T) s_x s_w + b``, plus ``add`` (N, out) float32 if given (in place into
        ``add`` with ``in_place``, oneDNN's sum post-op), or, with ``gelu_for``,
        ``GELU(...)`` (exact, erf) quantized in the kernel to uint8 with ``gelu_for``'s static
        input scale: the quantized input of that next layer, never written in float.
        """
        if self._onednn is None:
            self._onednn = (torch.ops.onednn.qlinear_prepack(self.weight, None),
                            self.weight_scale.reshape(1).float())
        w, w_scale = self._onednn
        ops = torch.ops.onednn.qlinear_pointwise
        step, zp, w_zp = float(self.input_scale), self.zero_point, _ZERO_POINTS
        if gelu_for is not None:
            return ops(xq, step, zp, w, w_scale, w_zp, self.bias, float(gelu_for.input_scale),
                       gelu_for.zero_point, torch.uint8, "gelu", [None], "none")
        if add is None:
            return ops(xq, step, zp, w, w_scale, w_zp, self.bias, 1.0, 0, torch.float32,
                       "none", [None], "")
        return ops.binary(xq, step, zp, w, w_scale, w_zp, add, self.bias, 1.0, 0, torch.float32,
                          1.0, 0, "sum" if in_place else "add", 1.0, "none", [], "")

    def forward(self, x: Tensor) -> Tensor:
        m = qmax(self.activation_bits)
        zero_point = 2 ** (self.activation_bits - 1)  # uint8 = q + zero_point
        shape = x.shape
        x = x.reshape(-1, self.in_features).float()
        if self.dynamic:
            row_max = x.abs().amax(dim=1, keepdim=True).clamp_min(_TINY)
            x, step = x / row_max, 1.0 / m  # each row now spans [-1, 1]: step 1/M
        else:
            row_max, step = None, float(self.input_scale)
        if self.activation_bits < 8:  # uint8 range [0, 255] would not clip at +-M by itself
            x = x.clamp(-m * step, m * step)
        if x.device.type == "cpu":
            if self._packed is None:
                self._packed = _prepack(self.weight, self.weight_scale,
                                        None if self.dynamic else self.bias)
            y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x.contiguous(), step, zero_point, self._packed)
        else:
            _log_once("sim", "int8 kernels run on CPU only; on %s Int8Linear computes the same "
                      "quantized numbers with float matmuls (simulated int8)", x.device.type)
            xq = torch.clamp(torch.round(x / step), -m - 1, m) * step
            y = F.linear(xq, self.weight.float() * self.weight_scale,
                         None if self.dynamic else self.bias)
        if row_max is not None:
            y = y * row_max + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "dynamic per-token" if self.dynamic else f"static step {float(self.input_scale):.3g}"
        return (f"in={self.in_features}, out={self.out_features}, "
                f"activations {self.activation_bits}-bit {kind}")


class Int8Embedding(nn.Module):
    """A position table stored as int8 with one scale; looked up and dequantized (no matmul)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num, dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(()))

    @classmethod
    def from_float(cls, weight: Tensor, bits: int) -> Int8Embedding:
        new = cls(*weight.shape)
        q, step = _quantize_weight(weight, bits)
        new.weight.copy_(q)
        new.weight_scale.copy_(step)
        return new.to(weight.device)

    def forward(self, idx: Tensor) -> Tensor:
        return self.weight[idx].float() * self.weight_scale


class Int8Block(nn.Module):
    """A decoder block of an int8 model: the same submodules (and state-dict keys) as
    :class:`iclbench.model.Block`, the same function ``x + attn(ln_1(x))`` then
    ``x + mlp(ln_2(x))``, run with fewer passes over memory where every linear layer has a
    static input scale (the QAT model) and the CPU has oneDNN:

    - each linear layer's input is quantized once (:func:`quantize_u8`) and multiplied by
      oneDNN's int8 kernel (:meth:`Int8Linear.int8_matmul`);
    - both residual adds happen in the kernels of ``c_proj`` and of the second MLP layer;
    - the first MLP layer's kernel applies GELU (float, exact) and quantizes its output with the
      second layer's input scale, so the MLP's hidden layer is written once, in uint8 (the
      float32 hidden layer was the model's largest tensor).

    LayerNorm, attention and softmax stay float32. The integers are the ones fake quantization
    trained with (the same rounding and clamping at +-M; only float rounding differs). Elsewhere
    (dynamic per-token scales of the swap form, activations below 8 bits, CUDA) it runs
    :func:`iclbench.kernels.cpu.residual_forward` through :class:`Int8Linear`'s own forward.
    """

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = block.ln_1, block.attn, block.ln_2, block.mlp
        #: False: always the per-layer path (benchmarks compare the two)
        self.use_onednn = True

    def _linears(self) -> list[Int8Linear]:
        layers = [self.attn.c_attn, self.attn.c_proj, self.mlp[0], self.mlp[2]]
        return [m for m in layers if isinstance(m, Int8Linear)]

    def fused(self, x: Tensor) -> bool:
        """Whether :meth:`forward` takes the oneDNN path for this input."""
        layers = self._linears()
        gelu = self.mlp[1]
        return (self.use_onednn and x.device.type == "cpu" and len(layers) == 4
                and onednn_ops("onednn::qlinear_pointwise")
                and all(not m.dynamic and m.activation_bits == 8 for m in layers)
                and isinstance(gelu, nn.GELU) and gelu.approximate == "none")

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused(x):
            return residual_forward(self, x)
        B, T, C = x.shape
        c_attn, c_proj, fc1, fc2 = self._linears()
        qkv = c_attn.int8_matmul(c_attn.quantize(self.ln_1(x).reshape(B * T, C)))
        y = self.attn.attend(qkv.view(B, T, 3 * C)).reshape(B * T, C)
        # a new tensor: the caller's x is left as it was
        h = c_proj.int8_matmul(c_proj.quantize(y), add=x.reshape(B * T, C))
        hidden = fc1.int8_matmul(fc1.quantize(self.ln_2(h.view(B, T, C)).reshape(B * T, C)),
                                 gelu_for=fc2)
        return fc2.int8_matmul(hidden, add=h, in_place=True).view(B, T, C)


def is_int8(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def int8_blocks(model: nn.Module) -> None:
    """Every :class:`~iclbench.model.Block` of ``model`` (a decoder; also a
    :class:`~iclbench.kernels.cpu.CpuBlock`) as an :class:`Int8Block` (same submodules), in
    place."""
    model.blocks = nn.ModuleList(Int8Block(b) if isinstance(b, Block) else b
                                 for b in model.blocks)


