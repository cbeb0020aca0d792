"""Our training step against the reference implementation's model, same sizes, same machine.

The reference is Garg et al.'s ``TransformerModel`` (dtsip/in-context-learning, src/models.py):
``_read_in`` Linear(d, n_embd) -> HF ``transformers.GPT2Model(inputs_embeds=...)`` (dropout 0,
``use_cache=False``, ``n_positions = 2 * points``) -> ``_read_out`` Linear(n_embd, 1), predictions
at the x tokens, and its ``train_step`` (Adam, zero_grad, MSE, backward, step). Ours is the body of
the loop in ``iclbench.train.train`` (fused Adam, normalised MSE, gradient clipping as configured).
Both on the same fixed batch (sampling excluded), CPU, timed with ``torch.utils.benchmark.Timer``
(median of blocks after warm-up; the models take turns over ``--rounds`` rounds and the median
round is reported, so a machine whose speed drifts slows each alike). Prints seconds per step and
the ratio reference / ours (> 1: ours is faster), for HF's default attention implementation and
for its eager one (the 2022 code's).

Needs the benchmark extra: ``pip install -e '.[bench]'``.

    .venv/bin/python benchmarks/train_step_vs_hf.py [--threads 2] [--batch 64] [--min-run-time 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.benchmark import Timer

from iclbench.model import Decoder, ModelSpec
from iclbench.runtime import keep_freed_memory
from iclbench.train import optimiser_step, prompt_loss

# (name, n_dims, points, n_embd, n_layer, n_head, grad_clip): the default config's model at its
# longest prompt (26 points) and the paper's standard model at linear regression's 41 points
SIZES = [
    ("default 64/3/2, d=5, 26 points", 5, 26, 64, 3, 2, 1.0),
    ("paper 256/12/8, d=20, 41 points", 20, 41, 256, 12, 8, 0.0),
]


class ReferenceModel(nn.Module):
    """Garg et al.'s TransformerModel, as in their code (GPT-2 backbone from transformers)."""

    def __init__(self, n_dims: int, n_positions: int, n_embd: int, n_layer: int, n_head: int,
                 attn_implementation: str | None) -> None:
        from transformers import GPT2Config, GPT2Model

        super().__init__()
        configuration = GPT2Config(n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer,
                                   n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   use_cache=False)
        if attn_implementation is not None:
            configuration._attn_implementation = attn_implementation
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = GPT2Model(configuration)
        self._read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def _combine(xs_b: torch.Tensor, ys_b: torch.Tensor) -> torch.Tensor:
        bsize, points, dim = xs_b.shape
        ys_b_wide = torch.cat((ys_b.view(bsize, points, 1),
                               torch.zeros(bsize, points, dim - 1, device=ys_b.device)), axis=2)
        zs = torch.stack((xs_b, ys_b_wide), dim=2)
        return zs.view(bsize, 2 * points, dim)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        embeds = self._read_in(self._combine(xs, ys))
        output = self._backbone(inputs_embeds=embeds).last_hidden_state
        return self._read_out(output)[:, ::2, 0]


def reference_step(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> Callable[[], float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> float:  # train_step of the reference code
        optimizer.zero_grad()
        output = model(xs, ys)
        loss = (ys - output).square().mean()
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    return step


def our_step(model: Decoder, xs: torch.Tensor, ys: torch.Tensor, grad_clip: float,
             normaliser: float) -> Callable[[], float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    model.train()

    def step() -> float:  # the loop body of iclbench.train.train
        loss = prompt_loss(model, xs, ys, normaliser)
        optimiser_step(model, optimiser, loss, grad_clip)
        return loss.item()

    return step


def seconds(step: Callable[[], float], threads: int, min_run_time: float) -> float:
    """Median seconds per step over ``min_run_time`` of blocks, after 3 warm-up steps."""
    for _ in range(3):
        step()
    return Timer("step()", globals={"step": step}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time).median


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--min-run-time", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved measurements of each model (a drifting machine then "
                             "slows every model alike); the median is reported")
    parser.add_argument("--sizes", default="default,paper", help="comma-separated: default, paper")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every pipeline job does (iclbench.runtime)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, CPU, "
          f"{args.threads} threads, batch {args.batch}, {args.rounds} interleaved rounds of "
          f"{args.min_run_time} s per model")
    wanted = args.sizes.split(",")
    for name, d, points, n_embd, n_layer, n_head, clip in SIZES:
        if name.split()[0] not in wanted:
            continue
        g = torch.Generator().manual_seed(0)
        xs = torch.randn(args.batch, points, d, generator=g)
        ys = torch.randn(args.batch, points, generator=g)
        ours = Decoder(ModelSpec(d, 2 * points, n_embd, n_layer, n_head),
                       generator=torch.Generator().manual_seed(0))
        steps = {f"ours (grad clip {clip})": our_step(ours, xs, ys, clip, float(d))}
        for impl in (None, "eager"):
            torch.manual_seed(0)
            ref = ReferenceModel(d, points, n_embd, n_layer, n_head, impl)
            steps[f"HF GPT2Model ({ref._backbone.config._attn_implementation})"] = \
                reference_step(ref, xs, ys)
        times: dict[str, list[float]] = {label: [] for label in steps}
        for _ in range(args.rounds):
            for label, step in steps.items():
                times[label].append(seconds(step, args.threads, args.min_run_time))
        med = {label: statistics.median(t) for label, t in times.items()}
        ours_label = next(iter(steps))
        for label, t in times.items():
            ratio = "" if label == ours_label else \
                f"; ratio reference/ours = {med[label] / med[ours_label]:.2f}x"
            print(f"{name}: {label} {med[label] * 1e3:.1f} ms/step (rounds {min(t) * 1e3:.1f}-"
                  f"{max(t) * 1e3:.1f}){ratio}", flush=True)

if __name__ == "__main__":
    main()
