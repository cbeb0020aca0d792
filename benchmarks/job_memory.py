"""Peak resident memory of the heaviest job of each rule, against its estimate (iclbench.budget).

For a config, picks each bounded rule's job with the largest estimate, runs it in a fresh process
(the job function the rule's script calls, with its time cut: a few training steps with the
curriculum at full size from the first, baselines' and profiling's iterations cut; sizes as
configured) and reads the process's peak RSS (``ru_maxrss``). The bar: every job's peak within its
estimate, and the estimate within its rule's ``mem_mb``.

    .venv/bin/python benchmarks/job_memory.py config/config.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

RUNNER = r"""
import json, resource, sys
from pathlib import Path
from iclbench import jobs
spec = json.loads(sys.argv[1]); out = Path(sys.argv[2])
raw, rule, job = spec["raw"], spec["rule"], spec["job"]
task, n_dims = job["task"], raw["n_dims"]
tcfg = raw["tasks"][task]
prompts = out / "prompts.safetensors"
def sample():
    jobs.sample_eval_prompts(task, tcfg, n_dims, raw["eval"], job.get("ood", "none"), prompts,
                             raw["ood"].get(job.get("ood", "none")))
def train(variant, path):
    from iclbench.config import task_train
    jobs.train_model(task, variant, 0, {"task": tcfg, "n_dims": n_dims, "model": raw["model"],
                     "train": task_train(raw, task), "variant_options": raw["variants"][variant],
                     "device": "cpu"}, 1, path, out / "c.json", out / "log.parquet")
if rule == "sample_eval_prompts":
    sample()
elif rule == "train_model":
    swapped = job.get("mode") == "swapped"
    train("softmax" if swapped else job["variant"], out / "m.safetensors")
elif rule == "evaluate_model":
    section = "swapped" if job["mode"] == "swapped" else "variants"
    jobs.evaluate_model(task, job["variant"], job["mode"], 0, {"eval": raw["eval"],
                        "variant_options": raw[section][job["variant"]], "device": "cpu"}, 1,
                        out / "m.safetensors", [prompts], out / "e.parquet")
elif rule == "evaluate_baseline":
    jobs.evaluate_baseline(task, job["baseline"], {"eval": raw["eval"],
                           "options": raw["baselines"][job["baseline"]]}, 1, [prompts],
                           out / "b.parquet")
elif rule == "profile_model":
    jobs.profile_model(job["variant"], "trained", {"profile": raw["profile"], "n_dims": n_dims,
                       "model": raw["model"],
                       "train_tokens": [2 * t["n_points"] for t in raw["tasks"].values()],
                       "variant_options": raw["variants"][job["variant"]]}, 1,
                       out / "p.parquet")
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cut(raw: dict[str, Any]) -> dict[str, Any]:
    """The same sizes, less time: 4 training steps at full size, short timing and baselines."""
    raw = copy.deepcopy(raw)
    raw["train"].update(steps=4, log_every=2, checkpoint_every=2, warmup_steps=0)
    raw["train"]["dims_curriculum"] = {"start": raw["n_dims"], "inc": 0, "interval": 1}
    for t in raw["tasks"].values():
        t.pop("train", None)
        t["points_curriculum"] = {"start": t["n_points"], "inc": 0, "interval": 1}
    raw["profile"].update(min_run_time=0.01, replicates=1, warmup=0.0)
    for name, key in (("gd_2nn", "steps"), ("gd_3nn", "steps"), ("xgboost", "n_estimators")):
        if name in raw["baselines"]:
            raw["baselines"][name][key] = 2
    for name in list(raw["baselines"]):
        if "max_prompts" in {**raw["baselines"][name]}:
            raw["baselines"][name]["max_prompts"] = min(raw["baselines"][name]["max_prompts"] or 8, 8)
    return raw


def heaviest(raw: dict[str, Any]) -> dict[str, Any]:
    from iclbench.budget import estimates

    worst: dict[str, Any] = {}
    for est in estimates(raw):
        if est.rule == "finetune_model" or "finetuned" in est.job:
            continue
        if est.rule not in worst or est.mb > worst[est.rule].mb:
            worst[est.rule] = est
    return worst


def job_of(est: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """The (task, variant/baseline, OOD) of an estimate, from its description."""
    name = est.job
    if est.rule == "profile_model":
        return {"task": next(iter(raw["tasks"])), "variant": name.split("-")[0]}
    task, _, rest = name.partition("/")
    task = task.split(",")[0]
    job: dict[str, Any] = {"task": task}
    if ", OOD " in name:
        job["ood"] = name.split(", OOD ")[1]
    if est.rule == "evaluate_model":
        job["variant"], job["mode"] = rest.split(",")[0].split("-")[:2]
        job["ood"] = "none"
    elif est.rule == "train_model":
        job["variant"] = rest
    elif est.rule == "evaluate_baseline":
        job["baseline"] = rest.split(",")[0]
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="config/config.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                        help="change config keys, e.g. tasks.decision_tree.options.depth=16")
    args = parser.parse_args()
    raw = yaml.safe_load(Path(args.config).read_text())
    for item in args.set:
        key, value = item.split("=", 1)
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    raw = cut(raw)
    from iclbench.budget import mem_limits

    limits = mem_limits(raw)
    print(f"| rule | job | estimate (MB) | peak RSS (MB) | mem_mb |")
    print("|---|---|---|---|---|")
    for rule, est in heaviest(raw).items():
        job = job_of(est, raw)
        with tempfile.TemporaryDirectory() as tmp:
            # the inputs first, each in its own process
            before = {"evaluate_model": ["sample_eval_prompts", "train_model"],
                      "evaluate_baseline": ["sample_eval_prompts"]}.get(rule, [])
            for step in [*before, rule]:
                proc = subprocess.run([sys.executable, "-c", RUNNER,
                                       json.dumps({"raw": raw, "rule": step, "job": job}), tmp],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{step} failed")
        peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
        flag = "" if peak <= est.mb else " **over**"
        print(f"| {rule} | {est.job} | {est.mb:,} | {peak:,.0f}{flag} | {limits[rule]:,} |")


if __name__ == "__main__":
    main()
