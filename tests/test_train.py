"""Training: determinism, bitwise resume from a checkpoint, divergence, bad checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import iclbench.train as train_module
from iclbench.config import TrainConfig
from iclbench.curriculum import Curriculum, Schedule
from iclbench.jobs import train_model
from iclbench.model import ModelSpec
from iclbench.train import Checkpointing, DivergedError, train
from iclbench.tasks import build_task

TASK = build_task("linear_regression", 3)
MODEL = ModelSpec(n_dims=3, n_positions=14, n_embd=16, n_layer=1, n_head=2)
SPEC = TrainConfig(steps=40, batch_size=8, lr=1e-3, warmup_steps=5, lr_schedule="cosine",
                   grad_clip=1.0, log_every=5, checkpoint_every=10,
                   dims_curriculum={"start": 2, "inc": 1, "interval": 10})
CURRICULUM = Curriculum(SPEC.dims(3), Schedule(3, 7, 2, 10))


def run(checkpointing: Checkpointing | None = None) -> dict[str, torch.Tensor]:
    model, _ = train(TASK, MODEL, SPEC, CURRICULUM, 0, "linear_regression", torch.device("cpu"),
                     progress=False, checkpointing=checkpointing)
    return model.state_dict()


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_config_same_weights() -> None:
    assert_bitwise_equal(run(), run())


class Killed(Exception):
    pass


def test_resume_after_a_kill_is_bitwise_identical(tmp_path: Path, monkeypatch) -> None:
    reference = run()
    ckpt = Checkpointing(tmp_path / "c.ckpt", every=10, fingerprint="abc")
    real_sample = train_module.sample_prompts
    calls = {"n": 0}

    def dying_sample(*args: Any, **kwargs: Any):
        calls["n"] += 1
        if calls["n"] == 27:  # mid-way between the checkpoints at 20 and 30
            raise Killed
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(train_module, "sample_prompts", dying_sample)
    with pytest.raises(Killed):
        run(ckpt)
    assert ckpt.path.exists()
    monkeypatch.setattr(train_module, "sample_prompts", real_sample)
    torch.manual_seed(12345)  # a different global RNG state must not matter
    assert_bitwise_equal(run(ckpt), reference)


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    spec = TrainConfig(**{**SPEC.__dict__, "steps": 20})
    train(TASK, MODEL, SPEC, CURRICULUM, 0, "linear_regression",
          torch.device("cpu"), progress=False,
          checkpointing=Checkpointing(path, every=10, fingerprint="old"))
    assert path.exists()
    with pytest.raises(ValueError, match="c.ckpt: checkpoint was written for a different config"):
        train(TASK, MODEL, spec, CURRICULUM, 0, "linear_regression", torch.device("cpu"), progress=False,
              checkpointing=Checkpointing(path, every=10, fingerprint="new"))


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    train(TASK, MODEL, SPEC, CURRICULUM, 0, "linear_regression", torch.device("cpu"), progress=False,
          checkpointing=Checkpointing(path, every=10, fingerprint="x"))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="c.ckpt: corrupt or truncated checkpoint"):
        run(Checkpointing(path, every=10, fingerprint="x"))


def test_divergence_names_the_step_and_leaves_no_output(
    tmp_path: Path, monkeypatch, smoke_config
) -> None:
    real_sample = train_module.sample_prompts
    calls = {"n": 0}

    def nan_sample(*args: Any, **kwargs: Any):
        calls["n"] += 1
        xs, ys = real_sample(*args, **kwargs)
        return xs, ys * float("nan") if calls["n"] == 7 else ys

    monkeypatch.setattr(train_module, "sample_prompts", nan_sample)
    cfg = smoke_config
    params = {"task": cfg["tasks"]["linear_regression"], "n_dims": cfg["n_dims"],
              "model": cfg["model"], "train": cfg["train"], "variant_options": {},
              "device": "cpu"}
    out = tmp_path / "out"
    with pytest.raises(DivergedError, match=r"diverged at step 7: loss nan.*lr=0.0003|"
                                            r"lr=0.0003.*diverged at step 7: loss nan"):
        train_model("linear_regression", "softmax", 0, params, 1, out / "model.safetensors",
                    out / "config.json", out / "train_log.parquet", out / "ckpt")
    assert not out.exists() or not any(out.iterdir())


def test_an_unknown_lr_schedule_is_an_error_not_a_constant_rate() -> None:
    from iclbench.train import lr_at

    assert lr_at(39, SPEC) < lr_at(10, SPEC)  # cosine decays
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'; known are: constant, cosine"):
        lr_at(10, TrainConfig(**{**SPEC.__dict__, "lr_schedule": "linear"}))


def test_short_prompts_train_beside_the_long_ones(monkeypatch) -> None:
    """Each step draws its batch at the curriculum's length and the short batch (never longer
    than the curriculum's points), at the step's dims; the run stays deterministic and differs
    from one without short prompts."""
    from dataclasses import replace

    drawn: list[tuple[int, int, int]] = []
    original = train_module.sample_prompts

    def spy(task: Any, batch: int, points: int, rng: Any, active_dims: int) -> Any:
        drawn.append((batch, points, active_dims))
        return original(task, batch, points, rng, active_dims=active_dims)

    spec = replace(SPEC, steps=12, short_prompts=(16, 4))
    monkeypatch.setattr(train_module, "sample_prompts", spy)
    model, _ = train(TASK, MODEL, spec, CURRICULUM, 0, "linear_regression", torch.device("cpu"),
                     progress=False)
    assert drawn[:2] == [(8, 3, 2), (16, 3, 2)]  # step 0: 3 points, so 3 short ones too
    assert drawn[-2:] == [(8, 5, 3), (16, 4, 3)]  # step 11: long 5 points, short 4
    assert len(drawn) == 2 * spec.steps
    monkeypatch.setattr(train_module, "sample_prompts", original)
    again, _ = train(TASK, MODEL, spec, CURRICULUM, 0, "linear_regression", torch.device("cpu"),
                     progress=False)
    assert_bitwise_equal(model.state_dict(), again.state_dict())
    plain, _ = train(TASK, MODEL, replace(spec, short_prompts=None), CURRICULUM, 0,
                     "linear_regression", torch.device("cpu"), progress=False)
    assert not torch.equal(plain.state_dict()["wpe.weight"], model.state_dict()["wpe.weight"])


def test_short_prompts_longer_than_the_task_are_refused(smoke_config) -> None:
    from iclbench.config import ConfigError, check

    smoke_config["tasks"]["decision_tree"]["train"]["short_prompts"] = {"batch_size": 4,
                                                                        "n_points": 50}
    with pytest.raises(ConfigError, match=r"tasks.decision_tree.train.short_prompts.n_points "
                                          r"\(50\) exceeds tasks.decision_tree.n_points \(13\)"):
        check(smoke_config)
