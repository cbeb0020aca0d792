"""Time every evaluate_baseline job of a config (default: config/config.yaml), OOD included.

Builds the same prompt files the pipeline would (every setting that applies to each task), scores
each baseline on the tasks it applies to exactly as ``iclbench.jobs.evaluate_baseline`` does
(``max_prompts`` cap, batch = eval.n_prompts), and prints one line per job: seconds, prompts,
levels, and the error at the last position in and out of distribution. It also times one
evaluate_model job per task (an untrained softmax decoder of the config's size: the same cost as a
trained one). Job start-up (Python and torch imports) is not included; it prints it once.

    .venv/bin/python benchmarks/baselines.py [config.yaml] [--only NAME ...] [--table OUT.parquet]

``--table`` writes every row (as in icl_errors.parquet) for a closer look, e.g. the orderings of
the paper's baselines at a given number of examples.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from iclbench.baselines import BASELINES, build_baseline
from iclbench.config import load
from iclbench.evaluate import evaluate, make_prompts, model_predictor
from iclbench.model import Decoder, ModelSpec
from iclbench.ood import IN_DISTRIBUTION, build_transform
from iclbench.tasks import build_task
from iclbench.kernels.cpu import fast_inference

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--only", nargs="*", help="baselines to time (default: all configured)")
    parser.add_argument("--table", help="write every row to this Parquet file")
    args = parser.parse_args()
    cfg = load(args.config)
    torch.set_num_threads(cfg.threads)
    print(f"config {args.config}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"eval.n_prompts {cfg.eval.n_prompts}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, iclbench.jobs"], check=True)
    print(f"python + torch + iclbench import (per job): {time.perf_counter() - start:.2f} s")

    settings = {IN_DISTRIBUTION: ((0.0,), {}),
                **{k: (v.levels, dict(v.options)) for k, v in cfg.ood.items()}}
    total = 0.0
    rows = []
    for task_name, task_cfg in cfg.tasks.items():
        task = build_task(task_name, cfg.n_dims, task_cfg.options)
        start = time.perf_counter()
        files = [make_prompts(task, task_name, cfg.eval.n_prompts, task_cfg.n_points, cfg.eval.seed,
                              ood, levels, build_transform(ood, options))
                 for ood, (levels, options) in settings.items()
                 if build_transform(ood, options).applies_to(task_name)]
        # as sample_eval_prompts: OOD files keep the first eval.n_prompts_ood prompts
        files = [f if f.ood == IN_DISTRIBUTION else f.head(cfg.eval.n_prompts_ood) for f in files]
        print(f"{task_name}: {len(files)} prompt files, {sum(len(f.levels) for f in files)} levels,"
              f" sampled in {time.perf_counter() - start:.2f} s")
        spec = ModelSpec(cfg.n_dims, 2 * task_cfg.n_points, cfg.model.n_embd, cfg.model.n_layer,
                         cfg.model.n_head)
        model = fast_inference(Decoder(spec).eval())
        start = time.perf_counter()
        for f in files:
            evaluate(model_predictor(model, torch.device("cpu")), f,
                     {"model": "softmax", "kind": "transformer", "mode": "trained", "seed": 0,
                      "device": "cpu"}, cfg.eval.bootstrap, cfg.eval.confidence, cfg.eval.seed,
                     cfg.eval.batch_size)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"  {'model (softmax)':14s} {seconds:7.2f} s  {cfg.eval.n_prompts:5d}/"
              f"{cfg.eval.n_prompts_ood:<4d} prompts (in/out)")
        for name, opts in cfg.baselines.items():
            if args.only and name not in args.only:
                continue
            if not BASELINES.get(name).applies_to(task_name):
                continue
            model = build_baseline(name, opts)
            labels = {"model": name, "kind": "baseline", "mode": "baseline", "seed": pd.NA,
                      "device": "cpu"}
            start = time.perf_counter()
            df = pd.concat([evaluate(model.predict,
                                     f.head(model.prompt_limit(f.ood) or cfg.eval.n_prompts),
                                     labels, cfg.eval.bootstrap,
                                     cfg.eval.confidence, cfg.eval.seed, cfg.eval.n_prompts)
                            for f in files])
            seconds = time.perf_counter() - start
            total += seconds
            last = df[df["n_examples"] == df["n_examples"].max()]
            ind = last.loc[last["ood"] == IN_DISTRIBUTION, "error"].item()
            rows.append(df)
            n_ind = int(df.loc[df["ood"] == IN_DISTRIBUTION, "n_prompts"].iloc[0])
            n_ood = int(df["n_prompts"].min())
            print(f"  {name:14s} {seconds:7.2f} s  {n_ind:5d}/{n_ood:<4d} prompts (in/out)  "
                  f"error at k={int(last['n_examples'].iloc[0])}: {ind:.3f} in distribution, "
                  f"median {last['error'].median():.3f} over all levels")
    print(f"total baseline compute: {total:.1f} s (+ start-up per job)")
    if args.table:
        pd.concat(rows, ignore_index=True).to_parquet(args.table, index=False)


if __name__ == "__main__":
    main()
