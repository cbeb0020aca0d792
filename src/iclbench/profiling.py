"""Inference cost of a model variant: forward FLOPs and int8 operations, latency and peak memory
across context lengths.

SPEC section 6: at the paper's prompt lengths attention is a small share of the work, so the gains
of efficient attention show only at long contexts; this module sweeps the context length far past
the training length. For one variant and mode it builds a model of the trained shape, applies the
variant's hooks exactly as training and evaluation do, and measures, at each (batch size, context
length), with a position table long enough for the longest length. Cost does not depend on the
weights, so the weights are a fixed random initialisation: accuracy is not claimed here.

Conventions (stated in the README too):

- **FLOPs** are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs;
  only matrix products count, as there) extended where it is blind: (1) the fused
  ``scaled_dot_product_attention`` kernels (on CPU torch 2.13 counts 0 for them; on CUDA it counts
  the full T x T square) are counted as a causal kernel computes them, i.e. only the visible
  (query, key) pairs, ``T(T+1)/2`` per head, in both the score and the PV product; (2) int8 matmul
  ops get formulas too, and are counted apart (:data:`INT8_OPS`): an int8 multiply-add (int8 or
  uint8 inputs, int32 accumulation) is 2 *integer* operations, the ``int8_ops`` column, and
  ``flops`` holds the floating-point operations only (for the int8 variant: what stays float, the
  attention matmuls; on CUDA, where :class:`~iclbench.kernels.int8.Int8Linear` simulates int8
  with float matmuls, those are FLOPs); (3) ``mv``/``dot``/``addmv``/``addbmm`` get the obvious
  formulas. Explicit matmuls, such as a custom attention's ``q @ kᵀ``, count what they compute:
  the full square even when a mask is applied afterwards. Ops that look like arithmetic but have
  no formula are reported (a warning and the ``uncounted_ops`` column); :func:`flop_formula` adds
  one.
- **Latency**: ``torch.utils.benchmark.Timer`` with the thread count set explicitly. Untimed
  forwards run first for ``warmup`` seconds (at least one): the first seconds at a new shape run
  slower (the allocator and caches settle; measured: a learned-landmark Nystrom core at 8192 tokens
  took 10.7 ms per call in its first second and 8.4 ms from the third on). ``blocked_autorange``
  estimates a block for ``min_run_time`` seconds, then ``replicates`` rounds time one block of the
  variant and one of the trained softmax model of the same shape in turns
  (:func:`time_in_turns`): median and interquartile range per forward of each, the softmax one as
  ``softmax_latency_s``, the paired reference for speed-ups (a shared machine's speed drifts by
  tens of percent between jobs; in turns both see the same machine). The Timer synchronises
  CUDA around each block.
- **Peak memory**: the peak of bytes held by torch's allocator during one forward (the untimed one
  whose FLOPs are counted), above what was held just before it (weights and inputs excluded: this
  is the forward's working memory). On CUDA
  from ``torch.cuda.max_memory_allocated``; on the CPU from the allocation and free events of
  ``torch.profiler`` (``profile_memory=True``): the running sum of their sizes, in time order.
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

# the analysis of the profile table moved to iclbench.analysis (which needs no torch); its names
# stay importable from here
from iclbench.analysis import crossovers, fitted_exponent, label  # noqa: F401
from iclbench.config import PROFILE_DTYPES, ProfileConfig
from iclbench.model import Decoder, ModelSpec, load_model
from iclbench.seeding import generator
from iclbench.variants import get_variant

log = logging.getLogger(__name__)

MODES = ("trained", "swapped")
DTYPES = {name: getattr(torch, name) for name in PROFILE_DTYPES}

# ---------------------------------------------------------------------------------------------
# FLOPs

#: a formula gets the op's raw arguments (tensors, not shapes) and ``out_val``; returns FLOPs
FlopFormula = Callable[..., int]

#: op name ("namespace::name") -> formula; added to FlopCounterMode's own (and overriding them)
FLOP_FORMULAS: dict[str, FlopFormula] = {}

#: ops whose multiply-adds are integer (int8/uint8 inputs, int32 accumulation): their count goes
#: to ``FlopCount.int8_ops`` (the ``int8_ops`` column), not to the floating-point ``flops``
INT8_OPS: set[str] = set()

#: ops outside aten, or with matmul-like names, that do no arithmetic worth counting
NO_FLOP_OPS: set[str] = {
    "aten::quantize_per_tensor", "aten::quantize_per_tensor_dynamic", "aten::quantize_per_channel",
    "aten::dequantize", "aten::q_scale", "aten::q_zero_point", "aten::int_repr",
    "aten::_make_per_tensor_quantized_tensor", "aten::fake_quantize_per_tensor_affine",
    "quantized::linear_unpack", "quantized::linear_prepack", "quantized::linear_prepack_fp16",
    "aten::_empty_affine_quantized", "aten::_empty_per_channel_affine_quantized",
    "mkldnn::_reorder_linear_weight",  # packs a float weight for oneDNN (iclbench.model.Block)
}

#: an op with no formula whose name matches this is probably a matrix product we cannot see
_LOOKS_LIKE_MATMUL = re.compile(
    r"(mm|matmul|linear|conv(olution)?(\dd)?|attention|einsum|gemm|dot|mv)(_|$)|int8")


def flop_formula(*names: str, int8: bool = False) -> Callable[[FlopFormula], FlopFormula]:
    """Decorator: register ``formula`` for the ops ``names`` ("quantized::linear_dynamic", ...).

    ``int8``: the ops multiply integers (int8 x int8/uint8 into int32); what ``formula`` returns
    (2 per multiply-add) is then counted as int8 operations (:data:`INT8_OPS`), not FLOPs.
    Ops that this torch build lacks are skipped when counting, so formulas for optional backends
    (torchao, onednn) can live here too.
    """

    def decorate(formula: FlopFormula) -> FlopFormula:
        for name in names:
            if name in FLOP_FORMULAS:
                raise ValueError(f"FLOP formula for {name!r} is registered twice")
            FLOP_FORMULAS[name] = formula
            if int8:
                INT8_OPS.add(name)
        return formula

    return decorate


def _packet(name: str) -> torch._ops.OpOverloadPacket | None:
    namespace, op = name.split("::")
    try:
        return getattr(getattr(torch.ops, namespace), op)
    except (AttributeError, RuntimeError):
        return None


def causal_pairs(s_q: int, s_k: int) -> int:
    """(query, key) pairs a causal kernel visits: query i sees keys 0..i (top-left aligned)."""
    if s_q <= s_k:
        return s_q * (s_q + 1) // 2
    return s_k * (s_k + 1) // 2 + (s_q - s_k) * s_k


def _bound(schema: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str,
           default: Any) -> Any:
    for i, arg in enumerate(schema.arguments):
        if arg.name == name:
            if i < len(args):
                return args[i]
            return kwargs.get(name, default)
    return default


def _sdpa_formula(name: str) -> FlopFormula:
    """Score and PV products of a fused SDPA kernel; causal ones visit only the visible pairs."""

    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        q, k, v = args[:3]  # (B, nh, T, hs); keys and values may have fewer heads (GQA)
        packet = _packet(name)
        causal = bool(_bound(packet.default._schema, args, kwargs, "is_causal", False))
        b, h, s_q, d_qk = q.shape
        s_k, d_v = k.shape[-2], v.shape[-1]
        pairs = causal_pairs(s_q, s_k) if causal else s_q * s_k
        return 2 * b * h * pairs * (d_qk + d_v)

    return formula


for _name in ("aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention",
              "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention"):
    flop_formula(_name)(_sdpa_formula(_name))


def _packed_linear_flops(x: torch.Tensor, packed: Any) -> int:
    """2 * tokens * in * out for a linear layer whose weight (out, in) sits in packed params."""
    weight = packed.unpack()[0]
    n_out, n_in = weight.shape
    return 2 * (x.numel() // n_in) * n_in * n_out


@flop_formula("quantized::linear_dynamic", "quantized::linear_relu_dynamic",
              "quantized::linear", "quantized::linear_relu", int8=True)
def _quantized_linear_flop(x: torch.Tensor, packed: Any, *args: Any, out_val: Any = None,
                           **kwargs: Any) -> int:
    # fbgemm/onednn int8 x uint8 products (the dynamic ones quantize the input first)
    return _packed_linear_flops(x, packed)


@flop_formula("quantized::linear_dynamic_fp16")
def _quantized_linear_fp16_flop(x: torch.Tensor, packed: Any, *args: Any, out_val: Any = None,
                                **kwargs: Any) -> int:
    # fp16-stored weights, float arithmetic: FLOPs
    return _packed_linear_flops(x, packed)


@flop_formula("quantized::linear_with_input_q_dq_qweight_dq_output_fp32", int8=True)
def _quantized_linear_fp32_io_flop(x: torch.Tensor, scale: Any, zero_point: Any, packed: Any,
                                   *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # fbgemm's int8 linear with float32 in and out (iclbench.kernels.int8.Int8Linear)
    return _packed_linear_flops(x, packed)


@flop_formula("onednn::qlinear_pointwise", int8=True)
def _onednn_qlinear_flop(qx: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # oneDNN's int8 linear layer, every overload (iclbench.kernels.int8.Int8Linear.int8_matmul): qx
    # (..., in) quantized input, out (..., out); fused bias, GELU and adds are not counted
    return 2 * qx.numel() * out_val.shape[-1]


@flop_formula("mkldnn::_linear_pointwise")
def _onednn_linear_flop(x: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # oneDNN's float32 linear layer, both overloads (iclbench.model.Block at CPU inference): x
    # (..., in), out (..., out); fused bias, GELU and residual adds are not counted
    return 2 * x.numel() * out_val.shape[-1]


@flop_formula("aten::_int_mm", int8=True)
def _int_mm_flop(a: torch.Tensor, b: torch.Tensor, *args: Any, out_val: Any = None,
                 **kwargs: Any) -> int:
    (m, k), n = a.shape, b.shape[1]  # (M, K) @ (K, N), int8 in, int32 out
    return 2 * m * k * n


@flop_formula("aten::_weight_int8pack_mm")
def _weight_int8pack_mm_flop(a: torch.Tensor, w: torch.Tensor, *args: Any, out_val: Any = None,
                             **kwargs: Any) -> int:
    # int8 weights only: float activations times the weights scaled back, float arithmetic: FLOPs
    return 2 * (a.numel() // a.shape[-1]) * a.shape[-1] * w.shape[0]  # A (..., K), W (N, K)


@flop_formula("aten::mv", "aten::addmv")
def _mv_flop(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    m = next(a for a in args if isinstance(a, torch.Tensor) and a.dim() == 2)
    return 2 * m.numel()


@flop_formula("aten::dot", "aten::vdot")
def _dot_flop(a: torch.Tensor, b: torch.Tensor, *args: Any, out_val: Any = None,
              **kwargs: Any) -> int:
    return 2 * a.numel()


@flop_formula("aten::addbmm")
def _addbmm_flop(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *args: Any,
                 out_val: Any = None, **kwargs: Any) -> int:
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


@flop_formula("aten::baddbmm_")
def _baddbmm_inplace_flop(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *args: Any,
                          out_val: Any = None, **kwargs: Any) -> int:
    """``acc += a @ b`` in place (torch's registry counts only the out-of-place ``baddbmm``)."""
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _custom_mapping() -> dict[Any, FlopFormula]:
    mapping: dict[Any, FlopFormula] = {}
    for name, formula in FLOP_FORMULAS.items():
        packet = _packet(name)
        if packet is not None:
            formula._get_raw = True  # type: ignore[attr-defined]  (raw tensors, not shapes)
            mapping[packet] = formula
    return mapping


def _op_name(func: Any) -> str:
    return str(func._overloadpacket._qualified_op_name) if hasattr(func, "_overloadpacket") \
        else str(func)


class _OpWatcher(TorchDispatchMode):
    """Records every op that runs (after FlopCounterMode's decompositions)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.seen.add(_op_name(func))
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class FlopCount:
    flops: int  # floating-point operations (2 per multiply-add)
    int8_ops: int  # integer operations of the ops in INT8_OPS (2 per int8 multiply-add)
    by_op: Mapping[str, int]  # op name -> its operations (float or int8, as INT8_OPS says)
    uncounted: tuple[str, ...]  # ops that look like arithmetic but have no formula

    @property
    def total(self) -> int:
        """Every counted operation, floating-point and int8."""
        return self.flops + self.int8_ops


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """FLOPs and int8 operations of one call of ``fn`` (see the module docstring for the
    conventions): FlopCounterMode counts every op, and the ops of :data:`INT8_OPS` are then
    moved from the FLOPs to the int8 operations.

    Warns once per op that looks like a matrix product but has no formula; such ops are missing
    from the total.
    """
    mapping = _custom_mapping()
    watcher = _OpWatcher()
    # the watcher is entered first, so it sits below the counter and sees the ops that actually
    # run after the counter's decompositions
    with watcher, FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    known = {str(p._qualified_op_name) for p in (*flop_registry, *mapping)
             if hasattr(p, "_qualified_op_name")}
    uncounted = tuple(sorted(
        op for op in watcher.seen
        if op not in known and op not in NO_FLOP_OPS
        and (not op.startswith(("aten::", "prim::", "prims::"))
             or _LOOKS_LIKE_MATMUL.search(op.split("::", 1)[1]))
    ))
    for op in uncounted:
        warnings.warn(f"FLOPs: op {op} has no FLOP formula and is not counted "
                      "(add one with iclbench.profiling.flop_formula)", stacklevel=2)
    by_op = {str(getattr(k, "_qualified_op_name", k)): int(v)
             for k, v in counter.get_flop_counts().get("Global", {}).items()}
    int8_ops = sum(n for op, n in by_op.items() if op in INT8_OPS)
    return FlopCount(int(counter.get_total_flops()) - int8_ops, int8_ops, by_op, uncounted)


# ---------------------------------------------------------------------------------------------
# latency and memory


@dataclass(frozen=True)
class Timing:
    median: float  # seconds per call
    iqr: float  # seconds
    n_blocks: int  # timed blocks behind the median


def warm_up(fn: Callable[[], Any], seconds: float, device: torch.device | None = None) -> int:
    """Call ``fn`` untimed until ``seconds`` have passed (at least once); returns the calls made.
    On CUDA each call is synchronised, so the clock measures work done, not work queued."""
    import time

    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        calls += 1
    return calls


def time_in_turns(fns: Sequence[Callable[[], Any]], threads: int, min_run_time: float,
                  rounds: int, warmup: float = 0.0, device: torch.device | None = None
                  ) -> list[Timing]:
    """Median and IQR of one call of each of ``fns``, timed in turns.

    Each is warmed up (``warmup`` seconds) and its block size estimated with
    ``blocked_autorange(min_run_time)``; then ``rounds`` rounds time one block of each in turn,
    and only those blocks make the medians. A machine whose speed drifts (a shared VM: up to
    +-40% within minutes here) then slows every ``fn`` alike, so their ratio is steadier than
    that of measurements taken one after the other.
    """
    from torch.utils.benchmark import Measurement, Timer

    timers, numbers = [], []
    for fn in fns:
        if warmup > 0:
            warm_up(fn, warmup, device)
        timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
        numbers.append(timer.blocked_autorange(min_run_time=min_run_time).number_per_run)
        timers.append(timer)
    blocks: list[list[Any]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            blocks[i].append(timer.timeit(numbers[i]))
    merged = [Measurement.merge(b)[0] for b in blocks]
    return [Timing(float(m.median), float(m.iqr), len(m.times)) for m in merged]


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Peak bytes allocated during one call of ``fn`` above those held before it, and the method."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before), "cuda_max_memory_allocated"
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # allocation (+) and free (-) events of the CPU allocator during the call, in time order
    events = [e for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return int(peak), "torch_profiler_cpu_allocator"


# ---------------------------------------------------------------------------------------------
# the sweep


def build_model(variant: str, mode: str, options: Mapping[str, Any], base: ModelSpec,
                device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """The model that evaluation would run, with random weights.

    ``trained``: the variant's ``model_spec`` and ``prepare_training`` hooks, then a save/load
    round trip (what training writes and evaluation reads), then ``for_inference``. ``swapped``:
    a softmax model with the variant put in by ``swap``. ``base`` is the softmax shape.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known are: {', '.join(MODES)}")
    kind = get_variant(variant)
    spec = kind.model_spec(base, options) if mode == "trained" else base
    model: nn.Module = Decoder(spec, generator=generator(seed, "profile", variant))
    if mode == "trained":
        model = kind.prepare_training(model, options)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            kind.save(model, path, options)
            model = load_model(path, device)
    model = model.to(device).eval()
    if dtype != torch.float32:
        model = model.to(dtype)
    hook = kind.for_inference if mode == "trained" else kind.swap
    return hook(model, options).eval()  # type: ignore[arg-type]


def _infer(net: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(xs, ys)


def profile_variant(variant: str, mode: str, options: Mapping[str, Any], base: ModelSpec,
                    spec: ProfileConfig, device: torch.device, threads: int) -> pd.DataFrame:
    """One row per (batch, tokens) of :meth:`ProfileConfig.grid` (columns: ``results.PROFILE``).

    Sets ``threads`` and keeps malloc from returning memory (:mod:`iclbench.runtime`) first."""
    from iclbench.runtime import keep_freed_memory

    torch.set_num_threads(threads)
    keep_freed_memory()
    dtype = DTYPES[spec.dtype]
    longest = max(spec.context_tokens)
    # a position table long enough for the longest length: cost does not depend on the weights
    base = ModelSpec(base.n_dims, max(base.n_positions, longest), base.n_embd, base.n_layer,
                     base.n_head, base.attention, base.attention_options)
    model = build_model(variant, mode, options, base, device, dtype)
    # trained softmax, timed in turns with the variant at every point: the paired reference
    # for speed-ups (softmax_latency_s); softmax itself is its own reference
    reference = None if (variant, mode) == ("softmax", "trained") else \
        build_model("softmax", "trained", {}, base, device, dtype)
    rng = generator(0, "profile-inputs")
    rows = []
    for batch, tokens in spec.grid():
        n = tokens // 2
        xs = torch.randn(batch, n, base.n_dims, generator=rng).to(device, dtype)
        ys = torch.randn(batch, n, generator=rng).to(device, dtype)

        fns = [functools.partial(_infer, net, xs, ys)
               for net in (model, reference) if net is not None]
        # a first forward does what a model does once (int8 weight packing, the learned Nystrom
        # landmarks' pseudo-inverse: it depends on the weights only), so that every point counts
        # a steady-state forward; the next, untimed, gives both the FLOPs and the peak memory
        # (the counter allocates no tensors)
        for fn in fns:
            fn()
        counts: list[FlopCount] = []
        mem, mem_method = peak_memory(lambda: counts.append(count_flops(fns[0])), device)
        flops = counts[0]
        timings = time_in_turns(fns, threads, spec.min_run_time, spec.replicates, spec.warmup,
                                device)
        timing, ref_timing = timings[0], timings[-1]
        log.info("%s/%s B=%d T=%d: %.3g FLOPs, %.3g int8 ops, %.4g s (IQR %.2g, %d blocks; "
                 "softmax in turns %.4g s), %.3g MB", variant, mode, batch, tokens, flops.flops,
                 flops.int8_ops, timing.median, timing.iqr, timing.n_blocks, ref_timing.median,
                 mem / 2**20)
        rows.append({
            "model": variant, "mode": mode, "context_tokens": tokens, "batch_size": batch,
            "device": str(device), "dtype": spec.dtype, "threads": torch.get_num_threads(),
            "flops": flops.flops, "int8_ops": flops.int8_ops, "latency_s": timing.median,
            "latency_iqr_s": timing.iqr, "n_timed": timing.n_blocks,
            "softmax_latency_s": ref_timing.median, "peak_mem_bytes": mem, "mem_method": mem_method,
            "uncounted_ops": ",".join(flops.uncounted), "n_dims": base.n_dims,
            "n_embd": base.n_embd, "n_layer": base.n_layer, "n_head": base.n_head,
            "torch_version": torch.__version__,
        })
    return pd.DataFrame(rows)
