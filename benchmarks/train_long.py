"""Seconds per training step of every variant at long prompts, at equal tokens per step.

What is timed: one training step as in the loop of ``iclbench.train.train`` (forward, the
normalised MSE over every position, ``zero_grad``, backward, gradient clipping as configured,
fused Adam) on one fixed batch of ``relu_2nn`` prompts (sampling excluded), CPU, float32. Each
length holds the tokens per step fixed (``--tokens-per-step``, default 8192: batch = 8192 //
tokens), so the times compare what the same amount of training data costs at each length. The
default lengths are 512, 1024 and 2048 tokens (256, 512 and 1024 in-context examples).

The models are built as the pipeline's jobs build them, from the config file (default
``config/long.yaml``): the shape from its ``model:`` section and ``n_dims``, the task's options and
``lr`` / ``grad_clip`` from its ``relu_2nn`` training section; every variant under ``variants:`` as
a training job does (``variant.prepare_training(Decoder(variant.model_spec(...)), options)``:
int8's is quantization-aware training, fake quantisation), and every one under ``finetuned:``
whose options differ from its ``variants:`` ones as a fine-tuning job does
(``variant.convert(softmax model, options)``: e.g. nystrom with segment landmarks, relu without
qk_norm), labelled ``<variant> (finetuned options)``. Weights are a fixed random initialisation:
cost does not depend on them.

At each length the forms are timed in turns (``iclbench.profiling.time_in_turns``: each warmed up
for ``--warmup`` seconds, then ``--rounds`` rounds of one block of ``--min-run-time`` seconds of
each), median seconds per step; the ratio is the form's time over softmax's (> 1: slower).
``--threads`` defaults to 1, the pipeline's training jobs' count. Run it on an otherwise idle
machine (at 2048 tokens a step takes seconds; the whole run some minutes):

    .venv/bin/python benchmarks/train_long.py
    .venv/bin/python benchmarks/train_long.py --tokens 512 2048 --rounds 3 --json train_long.json
    .venv/bin/python benchmarks/train_long.py --tokens 64 128 --tokens-per-step 256 --rounds 2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from iclbench.config import ModelConfig, prompt_tokens, task_train
from iclbench.model import Decoder, ModelSpec
from iclbench.profiling import time_in_turns
from iclbench.runtime import keep_freed_memory
from iclbench.tasks import Task, build_task, sample_prompts
from iclbench.train import optimiser_step, prompt_loss
from iclbench.variants import get_variant

ROOT = Path(__file__).resolve().parents[1]
TASK = "relu_2nn"
BASE = "softmax"


@dataclass(frozen=True)
class Form:
    """One trained form: a variant with its options, from one config section."""

    label: str
    variant: str
    section: str  # "variants" (trained from scratch) or "finetuned" (converted from softmax)
    options: Mapping[str, Any]


def forms(raw: Mapping[str, Any]) -> list[Form]:
    """Every ``variants:`` entry, then the ``finetuned:`` entries whose options differ."""
    trained = {str(k): dict(v or {}) for k, v in (raw.get("variants") or {}).items()}
    if BASE not in trained:  # the reference of the ratios
        trained = {BASE: {}, **trained}
    out = [Form(name, name, "variants", opts) for name, opts in trained.items()]
    for name, opts in (raw.get("finetuned") or {}).items():
        opts = dict(opts or {})
        if trained.get(name) != opts:
            out.append(Form(f"{name} (finetuned options)", str(name), "finetuned", opts))
    return out


def build(form: Form, base: ModelSpec, softmax_options: Mapping[str, Any],
          seed: int = 0) -> nn.Module:
    """The model that the form's training job trains (random weights)."""
    kind = get_variant(form.variant)
    init = torch.Generator().manual_seed(seed)
    if form.section == "finetuned":  # iclbench.jobs.finetune_model: convert the softmax model
        softmax = Decoder(get_variant(BASE).model_spec(base, softmax_options), generator=init)
        return kind.convert(softmax, form.options)
    # iclbench.jobs.train_model
    return kind.prepare_training(Decoder(kind.model_spec(base, form.options), generator=init),
                                 form.options)


def train_step(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, normaliser: float,
               lr: float, grad_clip: float) -> Callable[[], float]:
    """One step of the loop body of ``iclbench.train.train`` on the fixed batch (xs, ys)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    model.train()

    def step() -> float:
        loss = prompt_loss(model, xs, ys, normaliser)
        optimiser_step(model, optimiser, loss, grad_clip)
        return loss.item()

    return step


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "long.yaml")
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2048],
                    help="prompt lengths in tokens (2 per in-context example)")
    ap.add_argument("--tokens-per-step", type=int, default=8192,
                    help="tokens per training step: batch = this // tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5,
                    help="timed blocks per form, the forms in turns")
    ap.add_argument("--min-run-time", type=float, default=1.0,
                    help="seconds per timed block (sizes the blocks; at least one step)")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="seconds of untimed steps first (at least one), per form and length")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write the results to OUT as JSON")
    args = ap.parse_args(argv)
    for t in args.tokens:
        if t <= 0 or t % 2:
            ap.error(f"--tokens {t}: a prompt is (x, y) token pairs; give a positive even number")
        if args.tokens_per_step // t < 1:
            ap.error(f"--tokens {t} exceeds --tokens-per-step {args.tokens_per_step}")

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every pipeline job does (iclbench.runtime)
    raw = yaml.safe_load(args.config.read_text())
    n_dims = int(raw["n_dims"])
    model_cfg = ModelConfig.from_dict(raw["model"])
    task_raw = (raw.get("tasks") or {}).get(TASK) or {}
    train_raw = task_train(raw, TASK) if task_raw else dict(raw["train"])
    lr, grad_clip = float(train_raw["lr"]), float(train_raw["grad_clip"])
    task: Task = build_task(TASK, n_dims, task_raw.get("options") or {})
    softmax_options = dict((raw.get("variants") or {}).get(BASE) or {})
    all_forms = forms(raw)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32; "
          f"{args.config.name}: model {model_cfg.n_embd}/{model_cfg.n_layer}/{model_cfg.n_head}, "
          f"{TASK} d = {n_dims}, lr {lr}, grad clip {grad_clip}; {args.tokens_per_step} tokens "
          f"per step; {args.rounds} rounds of {args.min_run_time} s blocks in turns")
    print(f"{'variant':<28} {'tokens':>6} {'batch':>5} {'s/step':>9} {'IQR s':>8} "
          f"{'x softmax':>9}  options", flush=True)
    results: list[dict[str, Any]] = []
    summary: list[str] = []
    for tokens in args.tokens:
        batch = args.tokens_per_step // tokens
        points = tokens // 2
        assert prompt_tokens(points) == tokens
        base = ModelSpec(n_dims, tokens, model_cfg.n_embd, model_cfg.n_layer, model_cfg.n_head,
                         n_out=task.out_dims)
        xs, ys = sample_prompts(task, batch, points, torch.Generator().manual_seed(tokens))
        steps = [train_step(build(f, base, softmax_options), xs, ys, task.normaliser, lr,
                            grad_clip) for f in all_forms]
        timings = time_in_turns(steps, args.threads, args.min_run_time, args.rounds,
                                args.warmup)
        del steps
        ref = next(t for f, t in zip(all_forms, timings, strict=True) if f.label == BASE).median
        parts = []
        for form, timing in zip(all_forms, timings, strict=True):
            ratio = timing.median / ref
            results.append({"variant": form.label, "name": form.variant,
                            "section": form.section, "options": dict(form.options),
                            "tokens": tokens, "examples": points, "batch": batch,
                            "seconds_per_step": timing.median, "iqr_s": timing.iqr,
                            "blocks": timing.n_blocks, "ratio_to_softmax": ratio})
            print(f"{form.label:<28} {tokens:>6} {batch:>5} {timing.median:>9.4f} "
                  f"{timing.iqr:>8.4f} {ratio:>8.2f}x  {json.dumps(dict(form.options))}",
                  flush=True)
            if form.label != BASE:
                parts.append(f"{form.label} {ratio:.2f}x")
        summary.append(f"{tokens} tokens ({points} examples, batch {batch}): softmax "
                       f"{ref:.4f} s/step; " + ", ".join(parts))
    print("\n".join(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "torch": torch.__version__, "threads": args.threads, "config": str(args.config),
            "task": TASK, "n_dims": n_dims, "model": raw["model"],
            "tokens_per_step": args.tokens_per_step, "rounds": args.rounds,
            "min_run_time": args.min_run_time, "warmup": args.warmup, "results": results,
        }, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
