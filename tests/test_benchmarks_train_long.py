"""Smoke test of benchmarks/train_long.py at a tiny size (the real run is minutes long)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_train_long_runs_at_tiny_size(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "train_long.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "train_long.py"), "--tokens", "32",
         "--tokens-per-step", "64", "--rounds", "1", "--min-run-time", "0.01", "--warmup", "0",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["results"]
    labels = {r["variant"] for r in rows}
    assert {"softmax", "relu", "nystrom", "combiner", "int8"} <= labels
    assert "nystrom (finetuned options)" in labels and "relu (finetuned options)" in labels
    assert "combiner (finetuned options)" not in labels  # same options as trained
    for r in rows:
        assert r["tokens"] == 32 and r["batch"] == 2 and r["seconds_per_step"] > 0
    assert next(r for r in rows if r["variant"] == "softmax")["ratio_to_softmax"] == 1.0
    assert "32 tokens (16 examples, batch 2): softmax" in proc.stdout
