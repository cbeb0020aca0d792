"""Whole-model forward at long context: each efficient variant against softmax, and the bound.

Issue 6 asks that at 8192 tokens the measured speed-up of nystrom and combiner over softmax
(latency ratio) reach half their FLOP ratio. This script measures the models the profile stage
measures (the default config's shape and trained variant options, batch 1, 2 threads), in one
process, in turns over ``--rounds`` rounds so that a machine whose speed drifts affects every
variant alike, and adds the **bound**: the same model with a free attention core (it returns
``v``, no arithmetic), i.e. what the linear layers, LayerNorms, GELUs and residual adds cost on
their own. ``softmax / bound`` is the speed-up that an attention costing nothing would give; a
variant whose attention FLOPs are small beside the linear layers' (learned-landmark nystrom) has
a FLOP ratio close to ``softmax FLOPs / linear FLOPs``, so it can reach half of it only if the
rest of the model runs at at least half the FLOP rate of softmax's fused attention kernel.

    .venv/bin/python benchmarks/scaling_bound.py                 # 8192 tokens, batch 1, 2 threads
    .venv/bin/python benchmarks/scaling_bound.py --tokens 4096 8192 --rounds 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from iclbench.model import Decoder, ModelSpec
from iclbench.profiling import count_flops, time_in_turns
from iclbench.runtime import keep_freed_memory
from iclbench.kernels.cpu import fast_inference

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


class FreeCore(nn.Module):
    """An attention core that does no work: returns the values (same shape, causal)."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return v


def build(name: str, options: dict, cfg: dict, tokens: int) -> nn.Module:
    model_cfg = cfg["model"]
    attention = "softmax" if name == "bound" else name
    spec = ModelSpec(cfg["n_dims"], tokens, model_cfg["n_embd"], model_cfg["n_layer"],
                     model_cfg["n_head"], attention, options)
    model = Decoder(spec, generator=torch.Generator().manual_seed(0)).eval()
    if name == "bound":
        for block in model.blocks:
            block.attn.core = FreeCore()
    return fast_inference(model)  # the CPU inference path, as evaluation and profiling run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--tokens", type=int, nargs="+", default=[8192])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per model, in turns")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of untimed calls first")
    args = ap.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every pipeline job does (iclbench.runtime)
    names = ["softmax", "bound", *(v for v in ("nystrom", "combiner") if v in cfg["variants"])]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, float32, batch "
          f"{args.batch}, model {cfg['model']}, {args.rounds} rounds of one block each in turns "
          f"(iclbench.profiling.time_in_turns), {args.warmup} s warm-up each")
    gen = torch.Generator().manual_seed(0)
    for T in args.tokens:
        models = {n: build(n, dict(cfg["variants"].get(n) or {}), cfg, T) for n in names}
        xs = torch.randn(args.batch, T // 2, cfg["n_dims"], generator=gen)
        ys = torch.randn(args.batch, T // 2, generator=gen)
        calls = {n: (lambda m=m: m(xs, ys)) for n, m in models.items()}
        with torch.inference_mode():
            flops = {n: count_flops(f).total for n, f in calls.items()}
            timings = dict(zip(calls, time_in_turns(list(calls.values()), args.threads,
                                                    args.min_run_time, args.rounds,
                                                    args.warmup)))
        med = {n: t.median for n, t in timings.items()}
        base = med["softmax"]
        print(f"\nT = {T}")
        print(f"{'model':>9} {'median ms':>10} {'IQR ms':>7} {'GFLOP':>7} {'GFLOP/s':>8} "
              f"{'speed-up':>9} {'FLOP ratio':>10} {'half':>6}")
        for n in names:
            ratio = flops["softmax"] / flops[n] if flops[n] else float("inf")
            print(f"{n:>9} {med[n] * 1e3:>10.1f} {timings[n].iqr * 1e3:>7.1f} "
                  f"{flops[n] / 1e9:>7.2f} {flops[n] / med[n] / 1e9:>8.1f} "
                  f"{base / med[n]:>8.2f}x {ratio:>10.2f} "
                  f"{ratio / 2:>6.2f}")
        for n in names[2:]:
            ratio = flops["softmax"] / flops[n]
            print(f"T = {T}: {n} {base / med[n]:.2f}x faster than softmax, half its FLOP ratio "
                  f"{ratio / 2:.2f}; a free attention core would give {base / med['bound']:.2f}x")


if __name__ == "__main__":
    main()
