"""Latency and peak memory of one causal attention core at long context: nystrom (both designs:
segment landmarks and learned landmarks) and combiner vs exact softmax
(``scaled_dot_product_attention(is_causal=True)``).

What is timed: the forward of the attention *core* only (``core(q, k, v)`` on per-head q, k, v of
shape (B, nh, T, hs)), without the q/k/v and output projections, which are the same linear layers
for every variant; ``--with-projections`` times the whole attention sublayer (projections + core)
instead. Latency: the variants timed in turns (``iclbench.profiling.time_in_turns``: a warm-up, then
``--rounds`` blocks of each in turn), median. Peak memory: the pipeline's measurement
(``iclbench.profiling.peak_memory``: the peak of the CPU allocator's running total during one
forward, from ``torch.profiler``'s allocation and free events, above what was held before the
call); inputs are not counted, the output is. No autograd (``torch.inference_mode``).

    .venv/bin/python benchmarks/attention_speed.py            # T = 4096, batch 1, 2 threads
    .venv/bin/python benchmarks/attention_speed.py --tokens 2048 8192 --landmarks 32

The last lines repeat each variant's speed-up (softmax latency / variant latency) and memory ratio
(variant peak / softmax peak) at each length. Issue 3's bar for learned-landmark nystrom at T = 4096
(batch 1, 2 threads): speed-up >= 4 and memory ratio < 1. Time it on an otherwise idle machine:
other processes on the same cores distort every small op of a chunked variant.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from iclbench.attention import _blocks, build_attention
from iclbench.profiling import peak_memory, time_in_turns
from iclbench.runtime import keep_freed_memory

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
_TRAINED = yaml.safe_load(CONFIG.read_text())["variants"].get("nystrom") or {}
#: learned-landmark options: the default config's trained nystrom where it uses them
LEARNED = (_TRAINED if _TRAINED.get("landmarks_source") == "learned"
           else {"landmarks": 8, "chunk": 16})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--landmarks", type=int, default=64, help="nystrom, segment landmarks")
    ap.add_argument("--learned-landmarks", type=int, default=LEARNED["landmarks"],
                    help="nystrom, learned landmarks (default: config/config.yaml's)")
    ap.add_argument("--chunk", type=int, default=LEARNED["chunk"],
                    help="nystrom, learned landmarks: chunk (default: config/config.yaml's)")
    ap.add_argument("--block-size", type=int, default=None, help="combiner; default ~sqrt(T)")
    ap.add_argument("--with-projections", action="store_true")
    ap.add_argument("--work-elements", type=int, default=None,
                    help="override iclbench.attention._blocks.WORK_ELEMENTS (chunk size: memory "
                         "against per-op overhead)")
    ap.add_argument("--min-run-time", type=float, default=0.5,
                    help="seconds per timed block (sizes the blocks)")
    ap.add_argument("--rounds", type=int, default=7,
                    help="timed blocks per variant, the variants in turns")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of untimed calls first")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every pipeline job does (iclbench.runtime)
    if args.work_elements:
        _blocks.WORK_ELEMENTS = args.work_elements
    variants = [("softmax", "softmax", {}),
                ("nystrom", "nystrom", {"landmarks": args.landmarks}),
                ("nystrom-l", "nystrom", {"landmarks_source": "learned",
                                          "landmarks": args.learned_landmarks,
                                          "chunk": args.chunk}),
                ("combiner", "combiner", {"block_size": args.block_size})]
    hs = args.n_embd // args.n_head
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, float32, "
          f"batch {args.batch}, {args.n_head} heads x {hs}, chunks of {_blocks.WORK_ELEMENTS} "
          f"logits, "
          f"{'attention sublayer (projections + core)' if args.with_projections else 'core only'}")
    print(f"{'T':>6} {'variant':>9} {'median ms':>10} {'IQR ms':>8} {'peak MiB':>9} "
          f"{'speed-up':>9} {'mem ratio':>9}  options")
    summary = []
    gen = torch.Generator().manual_seed(0)
    for T in args.tokens:
        calls: list[tuple[str, str, dict, Callable[[], object]]] = []
        for label, name, opts in variants:
            if args.with_projections:
                from iclbench.model import ModelSpec, SelfAttention

                spec = ModelSpec(n_dims=1, n_positions=T, n_embd=args.n_embd, n_layer=1,
                                 n_head=args.n_head, attention=name, attention_options=opts)
                layer = SelfAttention(spec).eval()
                x = torch.randn(args.batch, T, args.n_embd, generator=gen)
                fn: Callable[[], object] = lambda layer=layer, x=x: layer(x)  # noqa: E731
            else:
                core = build_attention(name, args.n_head, hs, opts).eval()
                q, k, v = (torch.randn(args.batch, args.n_head, T, hs, generator=gen)
                           for _ in range(3))
                fn = lambda core=core, q=q, k=k, v=v: core(q, k, v)  # noqa: E731
            calls.append((label, name, opts, fn))
        with torch.inference_mode():
            # in turns: a drifting machine slows every variant alike (the first second at a new
            # shape runs slower: each is warmed up first)
            timings = time_in_turns([c[3] for c in calls], args.threads, args.min_run_time,
                                    args.rounds, args.warmup)
            peaks = [peak_memory(c[3], torch.device("cpu"))[0] for c in calls]
        base = (timings[0].median, peaks[0])
        for (label, name, opts, _), m, peak in zip(calls, timings, peaks, strict=True):
            print(f"{T:>6} {label:>9} {m.median * 1e3:>10.1f} {m.iqr * 1e3:>8.1f} "
                  f"{peak / 2**20:>9.2f} {base[0] / m.median:>8.2f}x {peak / base[1]:>9.2f}  "
                  f"{json.dumps(opts)}", flush=True)
            if name != "softmax":
                summary.append(f"T = {T}: {label} {base[0] / m.median:.2f}x as fast as softmax, "
                               f"{peak / base[1]:.2f}x its peak memory")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
