"""Checkpoints under remote default storage: where they live, and a killed job resuming from one.

A local directory behind a ``file://`` URL stands in for the bucket: the checkpoint goes through
fsspec exactly as it would to ``gs://`` (temporary object, then move), and it outlives the process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from iclbench.storage import CHECKPOINTS, TMP_SUFFIX, checkpoint_location, exists, remove
from iclbench.train import Checkpointing, train
from test_deploy import ROOT, SNAKEMAKE, credentials  # noqa: F401  (a fixture)
from test_train import CURRICULUM, MODEL, SPEC, TASK

RELATIVE = f"results/{CHECKPOINTS}/linear_regression/softmax/seed0.ckpt"


def test_checkpoint_location_is_local_or_under_the_storage_prefix() -> None:
    assert checkpoint_location(RELATIVE, None, None) == RELATIVE
    assert checkpoint_location(RELATIVE, None, "gs://b/iclbench") == RELATIVE  # no provider
    for prefix in ("gs://b/iclbench", "gs://b/iclbench/"):
        assert checkpoint_location(RELATIVE, "gcs", prefix) == f"gs://b/iclbench/{RELATIVE}"


# the Snakefile as Snakemake parses it, plus the checkpoint param of both training rules
WRAPPER = """
include: {snakefile!r}


from types import SimpleNamespace

_wc = SimpleNamespace(task="linear_regression", variant="softmax", seed="0")
print("CHECKPOINT", rules.train_model.params.checkpoint(_wc))
print("CHECKPOINT", rules.finetune_model.params.checkpoint(_wc))
"""


@pytest.mark.slow
# (the local path, profile "default", is what tests/test_workflow.py's kill-and-resume uses)
@pytest.mark.parametrize(("profile", "prefix"), [("gcp", "gs://YOUR-BUCKET/iclbench/")])
def test_rules_put_checkpoints_under_the_default_storage_prefix(
    profile: str, prefix: str, credentials: Path, tmp_path: Path  # noqa: F811
) -> None:
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(WRAPPER.format(snakefile=str(ROOT / "Snakefile")))
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
           "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run([SNAKEMAKE, "--profile", str(ROOT / "profiles" / profile), "-s",
                           str(wrapper), "--list-rules"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(" ", 1)[1] for line in proc.stdout.splitlines()
             if line.startswith("CHECKPOINT ")]
    assert lines == [f"{prefix}results/{CHECKPOINTS}/linear_regression/softmax/seed0.ckpt",
                     f"{prefix}results/{CHECKPOINTS}/finetuned/linear_regression/softmax/seed0.ckpt"]


# one training job (iclbench.jobs.train_model, as rule train_model runs it) in its own process;
# "hang": after its first checkpoint it waits to be killed (a VM preempted mid-training)
CHILD = """
import json, logging, sys, time
import iclbench.train as train_module
from iclbench.jobs import train_model

logging.basicConfig(level=logging.INFO)
params, checkpoint, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "hang":
    save = train_module.save_checkpoint

    def save_then_hang(*args, **kwargs):
        save(*args, **kwargs)
        time.sleep(600)

    train_module.save_checkpoint = save_then_hang
train_model("linear_regression", "softmax", 0, params, 1, "out/model.safetensors",
            "out/config.json", "out/train_log.parquet", None if checkpoint == "-" else checkpoint)
"""


def _job(params: dict[str, Any], checkpoint: str, mode: str, cwd: Path) -> subprocess.Popen[str]:
    cwd.mkdir()
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(params), checkpoint, mode],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_job_killed_after_a_checkpoint_resumes_from_the_bucket_on_a_fresh_machine(
    tmp_path: Path, smoke_config: dict[str, Any]
) -> None:
    cfg = smoke_config
    params = {"task": cfg["tasks"]["linear_regression"], "n_dims": cfg["n_dims"],
              "model": cfg["model"], "train": cfg["train"], "variant_options": {},
              "device": "cpu"}
    assert cfg["train"]["checkpoint_every"] < cfg["train"]["steps"]
    bucket = tmp_path / "bucket"
    url = checkpoint_location(RELATIVE, "gcs", f"file://{bucket}/iclbench")
    stored = bucket / "iclbench" / RELATIVE

    reference = _job(params, "-", "run", tmp_path / "reference")  # uninterrupted, alongside
    doomed = _job(params, url, "hang", tmp_path / "vm1")
    deadline = time.monotonic() + 120
    while not stored.exists():
        assert doomed.poll() is None, doomed.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate()
    assert doomed.returncode == -signal.SIGKILL
    assert not (tmp_path / "vm1" / "out" / "model.safetensors").exists()
    assert exists(url) and not Path(f"{stored}{TMP_SUFFIX}").exists()

    # a fresh machine: new process, new working directory, only the bucket in common
    retry = _job(params, url, "run", tmp_path / "vm2")
    _, err = retry.communicate(timeout=300)
    assert retry.returncode == 0, err
    assert f"resumed from {url} at step {cfg['train']['checkpoint_every']}" in err
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    assert "resumed" not in err
    assert (_sha256(tmp_path / "vm2" / "out" / "model.safetensors")
            == _sha256(tmp_path / "reference" / "out" / "model.safetensors"))
    assert not stored.exists() and not any(stored.parent.iterdir())  # deleted once written


def test_remote_checkpoint_of_another_config_or_truncated_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    url = f"file://{tmp_path}/bucket/c.ckpt"
    spec = type(SPEC)(**{**SPEC.__dict__, "steps": 20})
    train(TASK, MODEL, SPEC, CURRICULUM, 0, "linear_regression", torch.device("cpu"), progress=False,
          checkpointing=Checkpointing(url, every=10, fingerprint="old"))
    assert exists(url) and not exists(url + TMP_SUFFIX)
    with pytest.raises(ValueError, match=f"{url}: checkpoint was written for a different config"):
        train(TASK, MODEL, spec, CURRICULUM, 0, "linear_regression", torch.device("cpu"), progress=False,
              checkpointing=Checkpointing(url, every=10, fingerprint="new"))
    stored = tmp_path / "bucket" / "c.ckpt"
    stored.write_bytes(stored.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"{url}: corrupt or truncated checkpoint"):
        train(TASK, MODEL, spec, CURRICULUM, 0, "linear_regression", torch.device("cpu"), progress=False,
              checkpointing=Checkpointing(url, every=10, fingerprint="old"))
    remove(url)
    assert not stored.exists()
    remove(url)  # already gone: no error


def test_remote_checkpoint_has_the_bytes_of_a_local_one(tmp_path: Path) -> None:
    from iclbench.checkpoint import TrainState, load_checkpoint, save_checkpoint

    state = TrainState(3, {"w": torch.arange(6.0).reshape(2, 3)}, {"state": {}, "param_groups": []},
                       torch.arange(4, dtype=torch.uint8), torch.arange(5, dtype=torch.uint8),
                       [{"step": 1, "loss": 0.5}])
    save_checkpoint(tmp_path / "local.ckpt", state, "fp")
    url = f"file://{tmp_path}/bucket/sub/remote.ckpt"  # the directory does not exist yet
    save_checkpoint(url, state, "fp")
    assert (tmp_path / "bucket" / "sub" / "remote.ckpt").read_bytes() == \
        (tmp_path / "local.ckpt").read_bytes()
    loaded = load_checkpoint(url, "fp")
    assert loaded.step == 3 and loaded.log_rows == state.log_rows
    assert torch.equal(loaded.model["w"], state.model["w"])


def test_gcp_time_limits_are_the_runtimes_and_training_retries_on_spot() -> None:
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "gcp" / "config.yaml").read_text())
    seconds = lambda s: int(s.removesuffix("s"))  # noqa: E731
    # Batch enforces googlebatch_max_run_duration, not runtime (minutes): the two must agree
    assert seconds(profile["googlebatch-max-run-duration"]) == \
        60 * profile["default-resources"]["runtime"]
    for rule, res in profile["set-resources"].items():
        if "runtime" in res or "googlebatch_max_run_duration" in res:
            assert seconds(res["googlebatch_max_run_duration"]) == 60 * res["runtime"], rule
    assert {"train_model", "finetune_model"} <= set(profile["preemptible-rules"])
    assert profile["preemptible-retries"] >= 1
