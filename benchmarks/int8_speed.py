"""Whole-model forward, float32 vs int8 (iclbench.quant), batch 64 on CPU.

    .venv/bin/python benchmarks/int8_speed.py                       # the default config's model
    .venv/bin/python benchmarks/int8_speed.py --n-embd 256 --n-layer 6 --n-head 4

Context lengths: 2 x n_points of linear_regression and of the longest task in the config, and 512
tokens. int8 "static" is the QAT model converted with its learned scales (the trained variant);
"dynamic" is post-training int8 with per-token scales (the swapped variant). The models are
timed in turns (``iclbench.profiling.time_in_turns``: ``--rounds`` blocks each, after a warm-up),
so that a machine whose speed drifts slows all of them alike. Prints the medians, the speed-up
over float32, the kernels that ran each int8 model and the threads.

Also the **bound** on any int8 speed-up of this model (Amdahl): the same float32 model with every
linear layer replaced by a stub that returns a cached zero tensor of the right shape, so that only
what int8 leaves in float (LayerNorm, GELU, the attention matmuls and softmax, residual adds,
embeddings) is timed. ``float32 / bound`` is the speed-up that int8 layers costing nothing would
give. The QAT model's oneDNN blocks also run GELU inside the kernel of the first MLP layer, so a
second bound drops GELU as well ("fused bound"); from it each length's last line states what
``--target`` (default 1.5x) asks of the int8 linear layers: at most ``float32 / target - fused
bound`` ms in all, quantization included, i.e. how many times faster than float32's linear layers
(``float32 - bound``) they must run, beside how many times faster they run now (``int8 - fused
bound``). (VNNI multiplies 4x as many int8 pairs per instruction as AVX-512 float32 FMAs.)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import logging
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from iclbench.model import Decoder, ModelSpec
from iclbench.profiling import time_in_turns
from iclbench.kernels.int8 import kernel_engine, kernels
from iclbench.variants.int8 import QuantOptions, prepare_qat, to_int8
from iclbench.variants.int8.qat import replace_modules as _replace_modules
from iclbench.runtime import keep_freed_memory
from iclbench.kernels.cpu import fast_inference

ROOT = Path(__file__).resolve().parents[1]


class FreeLinear(nn.Module):
    """A linear layer that costs nothing: a cached zero tensor of the output's shape."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features
        self._cache: dict[tuple[int, ...], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        shape = (*x.shape[:-1], self.out_features)
        if shape not in self._cache:
            self._cache[shape] = x.new_zeros(shape)
        return self._cache[shape]


def free_linears(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every ``nn.Linear`` replaced by :class:`FreeLinear`."""
    _replace_modules(model, lambda m: FreeLinear(m.out_features)
                     if isinstance(m, nn.Linear) else None)
    return model


def free_gelus(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every ``nn.GELU`` replaced by ``nn.Identity`` (no pass)."""
    _replace_modules(model, lambda m: nn.Identity() if isinstance(m, nn.GELU) else None)
    return model


def main() -> None:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=cfg["model"]["n_embd"])
    parser.add_argument("--n-layer", type=int, default=cfg["model"]["n_layer"])
    parser.add_argument("--n-head", type=int, default=cfg["model"]["n_head"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds per timed block (sizes the blocks)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed blocks per model, the models in turns")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of untimed calls first")
    parser.add_argument("--target", type=float, default=1.5,
                        help="speed-up whose demand on the int8 linear layers is printed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every pipeline job does (iclbench.runtime)

    lengths = sorted({2 * cfg["tasks"]["linear_regression"]["n_points"],
                      max(2 * t["n_points"] for t in cfg["tasks"].values()), 512})
    d = cfg["n_dims"]
    opts = QuantOptions(**(cfg["variants"].get("int8") or
                           {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.999,
                            "start_step": 0}))
    # the benchmark's QAT model sees a single training forward: quantize from the first one
    opts = dataclasses.replace(opts, start_step=0)
    spec = ModelSpec(d, max(lengths), args.n_embd, args.n_layer, args.n_head)
    g = torch.Generator().manual_seed(0)
    fp32 = Decoder(spec, generator=g).eval()
    qat = prepare_qat(copy.deepcopy(fp32), opts).train()
    with torch.no_grad():  # one training forward sets the EMA input scales
        qat(torch.randn(args.batch, max(lengths) // 2, d, generator=g),
            torch.randn(args.batch, max(lengths) // 2, generator=g))
    per_layer = to_int8(copy.deepcopy(qat), opts)
    for block in per_layer.blocks:
        block.use_onednn = False
    models = {"float32": fast_inference(fp32), "int8 static (QAT)": to_int8(qat, opts),
              "int8 static, per-layer fbgemm": per_layer,
              "int8 dynamic (PTQ)": to_int8(copy.deepcopy(fp32), opts),
              "bound (float32, free linear layers)": free_linears(copy.deepcopy(fp32)),
              "fused bound (free linear layers and GELU)":
                  free_gelus(free_linears(copy.deepcopy(fp32)))}

    print(f"torch {torch.__version__}, quantized engine {kernel_engine()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, model "
          f"{args.n_embd}/{args.n_layer}/{args.n_head}, int8 bits w{opts.weight_bits}"
          f"/a{opts.activation_bits}")
    for name, model in models.items():
        if name.startswith("int8"):
            print(f"  {name}: {kernels(model)}")
    for T in lengths:
        xs = torch.randn(args.batch, T // 2, d, generator=g)
        ys = torch.randn(args.batch, T // 2, generator=g)
        with torch.inference_mode():
            calls = [functools.partial(model, xs, ys) for model in models.values()]
            for call in calls:
                call()  # packs the int8 weights
            timings = time_in_turns(calls, args.threads, args.min_run_time, args.rounds,
                                    args.warmup)
        medians = {n: t.median for n, t in zip(models, timings, strict=True)}
        base = medians["float32"]
        line = ", ".join(f"{n} {t * 1e3:.2f} ms ({base / t:.2f}x)" for n, t in medians.items())
        print(f"T={T:4d} tokens: {line}")
        print("  " + demand(medians["float32"], medians["bound (float32, free linear layers)"],
                            medians["fused bound (free linear layers and GELU)"],
                            medians["int8 static (QAT)"], args.target))


def demand(fp32: float, bound: float, fused_bound: float, int8: float, target: float) -> str:
    """What ``target`` x asks of the int8 linear layers (times in seconds), in words."""
    linear = fp32 - bound  # float32's linear layers
    allowed = fp32 / target - fused_bound  # what the int8 ones (quantization included) may take
    now = int8 - fused_bound
    head = f"{target:g}x needs the int8 linear layers within {allowed * 1e3:.2f} ms"
    if allowed <= 0:
        return f"{head}: unreachable, the fused bound alone takes longer"
    head += f", {linear / allowed:.1f}x faster than float32's {linear * 1e3:.2f} ms"
    if now <= 0:  # the int8 model timed faster than its own bound: noise
        return head
    return f"{head}; they take {now * 1e3:.2f} ms ({linear / now:.1f}x)"

if __name__ == "__main__":
    main()
