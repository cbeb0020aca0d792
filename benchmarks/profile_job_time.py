"""Wall time of profile_model jobs for a config (the budget: <= 5 min for all of them on 2 cores).

Runs the same function the rule runs, in this process, for each (variant, mode) of the config (or
those named), and prints each job's wall time, the table, and the crossovers at batch size 1.

    .venv/bin/python benchmarks/profile_job_time.py config/config.yaml [variant/mode ...]

With PROFILE_OUT=path set, the aggregated table is also written there.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from iclbench.analysis import crossovers
from iclbench.config import check
from iclbench.jobs import aggregate_profile, profile_model
from iclbench.results import read_parquet


def main(config_path: str, only: list[str]) -> None:
    # names and cross-field rules (the schema check needs jsonschema, absent on some machines)
    cfg = check(yaml.safe_load(Path(config_path).read_text()))
    jobs = [(v, "trained") for v in cfg.variants] + [(v, "swapped") for v in cfg.swapped]
    if only:
        jobs = [j for j in jobs if f"{j[0]}/{j[1]}" in only]
    params = {"profile": dict(cfg.profile), "n_dims": cfg.n_dims,
              "model": {"n_embd": cfg.model.n_embd, "n_layer": cfg.model.n_layer,
                        "n_head": cfg.model.n_head},
              "train_tokens": [2 * t.n_points for t in cfg.tasks.values()]}
    threads = int(cfg.profile["threads"])
    print(f"torch {torch.__version__}, {threads} threads, config {config_path}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        outputs, total = [], 0.0
        for variant, mode in jobs:
            out = Path(tmp) / f"{variant}-{mode}.parquet"
            options = cfg.variants[variant] if mode == "trained" else cfg.swapped[variant]
            start = time.perf_counter()
            profile_model(variant, mode, {**params, "variant_options": dict(options)}, threads,
                          out)
            took = time.perf_counter() - start
            total += took
            print(f"{variant}/{mode}: {took:.1f} s", flush=True)
            outputs.append(out)
        aggregate_profile(outputs, Path(tmp) / "profile.parquet")
        df = read_parquet(Path(tmp) / "profile.parquet")
        if os.environ.get("PROFILE_OUT"):
            shutil.copy(Path(tmp) / "profile.parquet", os.environ["PROFILE_OUT"])
    print(f"total {total:.1f} s for {len(jobs)} jobs")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df[["model", "mode", "batch_size", "context_tokens", "flops", "latency_s",
                  "latency_iqr_s", "n_timed", "peak_mem_bytes", "device", "threads"]])
        if ((df["model"] == "softmax") & (df["mode"] == "trained")).any():
            print(crossovers(df, batch_size=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
