"""The training loop: fresh prompts every step, the curriculum, Adam, a log (SPEC section 3).

The loss is the mean squared error over all positions divided by the task's normaliser (Var(y)),
so "predict 0" scores 1 for every task and one learning rate suits all of them (Adam is invariant
to the scale of the loss, up to its epsilon).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from iclbench.checkpoint import TrainState, load_checkpoint, save_checkpoint
from iclbench.config import LR_SCHEDULES, TrainConfig
from iclbench.curriculum import Curriculum
from iclbench.model import Decoder, ModelSpec
from iclbench.seeding import generator
from iclbench.storage import exists
from iclbench.tasks import Task, sample_prompts

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often to checkpoint; ``fingerprint`` identifies the job's configuration.
    ``path`` is a local path, or a URL (``gs://...``) under the workflow's remote storage."""

    path: Path | str
    every: int
    fingerprint: str


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then constant (the paper's) or a cosine decay to 0."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; known are: "
                         f"{', '.join(LR_SCHEDULES)}")
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def prompt_loss(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor,
                normaliser: float) -> torch.Tensor:
    """The training loss of one batch: mean squared error over every position / ``normaliser``."""
    return (model(xs, ys) - ys).square().mean() / normaliser


def optimiser_step(model: torch.nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float) -> None:
    """Backward ``loss``, clip the gradient norm to ``grad_clip`` (0: no clipping), step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()


def train(
    task: Task,
    model_spec: ModelSpec,
    cfg: TrainConfig,
    curriculum: Curriculum,
    seed: int,
    task_name: str,
    device: torch.device,
    progress: bool = True,
    prepare: Callable[[Decoder], Decoder] | None = None,
    checkpointing: Checkpointing | None = None,
    context: str = "",
    on_log: Callable[[int, Decoder], None] | None = None,
) -> tuple[Decoder, pd.DataFrame]:
    """Train one model; returns it (on ``device``, eval mode) and its log as a DataFrame.

    ``prepare`` (a variant's hook) may change the freshly built model before training. With
    ``checkpointing``, the state is saved every ``every`` steps and a run resumes from an existing
    checkpoint; the caller deletes it once the outputs are written. ``context`` (the job's key
    settings) goes into error messages. ``on_log(step, model)`` is called after each log row (a
    benchmark's held-out evaluation; training resumes in train mode afterwards).
    """
    model = Decoder(model_spec, generator=generator(seed, "init", task_name))
    if prepare is not None:
        model = prepare(model)
    model = model.to(device)
    data_rng = generator(seed, "train", task_name)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    rows: list[dict[str, float | int]] = []
    first = 0
    if checkpointing is not None and exists(checkpointing.path):
        state = load_checkpoint(checkpointing.path, checkpointing.fingerprint, device)
        model.load_state_dict(state.model)
        optimiser.load_state_dict(state.optimiser)
        data_rng.set_state(state.data_rng)
        torch.set_rng_state(state.torch_rng)
        rows, first = state.log_rows, state.step
        log.info("resumed from %s at step %d", checkpointing.path, first)
    running, count = 0.0, 0
    start = time.perf_counter() - (rows[-1]["seconds"] if rows else 0.0)
    bar = tqdm(range(first, cfg.steps), desc=f"train {task_name}", mininterval=5.0,
               disable=not progress, initial=first, total=cfg.steps)
    model.train()
    for step in bar:
        dims, points = curriculum.dims.at(step), curriculum.points.at(step)
        xs, ys = sample_prompts(task, cfg.batch_size, points, data_rng, active_dims=dims)
        xs, ys = xs.to(device), ys.to(device)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = prompt_loss(model, xs, ys, task.normaliser)
        if cfg.short_prompts is not None:
            # many short prompts beside the long ones: the mean of the two batches' losses
            n_short, short_points = cfg.short_prompts
            sx, sy = sample_prompts(task, n_short, min(short_points, points), data_rng,
                                    active_dims=dims)
            loss = 0.5 * (loss + prompt_loss(model, sx.to(device), sy.to(device),
                                             task.normaliser))
        optimiser_step(model, optimiser, loss, cfg.grad_clip)
        value = loss.item()
        if not math.isfinite(value):
            raise DivergedError(
                f"training {task_name} (seed {seed}; {context}) diverged at step {step + 1}: "
                f"loss {value}; lower train.lr or raise train.warmup_steps"
            )
        running, count = running + value, count + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            rows.append(
                {
                    "step": step + 1,
                    "loss": running / count,
                    "active_dims": dims,
                    "n_points": points,
                    "lr": lr_at(step, cfg),
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.set_postfix(loss=f"{running / count:.4f}", dims=dims, points=points)
            running, count = 0.0, 0
            if on_log is not None:
                on_log(step + 1, model)
                model.train()
        if checkpointing is not None and (step + 1) % checkpointing.every == 0 \
                and step + 1 < cfg.steps:
            state = TrainState(step + 1, model.state_dict(), optimiser.state_dict(),
                               data_rng.get_state(), torch.get_rng_state(), rows)
            save_checkpoint(checkpointing.path, state, checkpointing.fingerprint)
    model.eval()
    return model, pd.DataFrame(rows)
