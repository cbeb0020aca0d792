"""The Snakemake workflow: dry runs, lint, formatting, and one real run of the smoke config.

The real run goes into a temporary directory (``--directory``); the reruns check that a second run
does nothing, that changing one figure's option reruns that figure only, and that asking for one
figure's file rebuilds just that figure.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from iclbench.results import ICL_ERRORS, PROFILE

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow


def snakemake(*args: str, workdir: Path | None = None, config: Path | None = None,
              check: bool = True, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    # targets first: --configfile takes several values and would swallow them
    cmd = [SNAKEMAKE, *args, "-s", str(ROOT / "Snakefile"), "--cores", "2"]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a (dry) run."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m[1] != "total"}


@pytest.mark.parametrize("name", ["config.yaml", "full.yaml", "smoke.yaml", "paper.yaml",
                                  "harder.yaml", "long.yaml"])
def test_dry_run(name: str, tmp_path: Path) -> None:
    from iclbench.config import task_variants

    jobs = planned_jobs(snakemake("-n", workdir=tmp_path, config=ROOT / "config" / name))
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    # tasks.<task>.variants trains a subset; swaps go into the tasks that train softmax
    n_models = sum(len(task_variants(cfg, t)) for t in cfg["tasks"]) * len(cfg["seeds"])
    softmax_tasks = sum("softmax" in task_variants(cfg, t) for t in cfg["tasks"])
    n_swapped = softmax_tasks * len(cfg["swapped"]) * len(cfg["seeds"])
    n_finetuned = softmax_tasks * len(cfg.get("finetuned") or {}) * len(cfg["seeds"])
    assert jobs["train_model"] == n_models
    assert jobs.get("finetune_model", 0) == n_finetuned
    assert jobs["evaluate_model"] == n_models + n_swapped + n_finetuned
    assert jobs["plot_figure"] == len(cfg["figures"])
    assert jobs["profile_model"] == len(cfg["variants"]) + len(cfg["swapped"])
    # none + the three settings of every task + the linear-only ones on linear regression
    linear_only = {"skewed", "half_subspace", "random_quadrants", "orthogonal_query", "noisy"}
    general = [o for o in cfg["ood"] if o not in linear_only]
    expected = len(cfg["tasks"]) * (1 + len(general)) + len(set(cfg["ood"]) & linear_only)
    assert jobs["sample_eval_prompts"] == expected


def test_lint_is_clean() -> None:
    proc = snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakefiles_are_formatted() -> None:
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "stpes", 5, "config key train: Additional properties are not allowed ('stpes'"),
    # passes the schema and every name check; 2^41 numbers per function (issue 23)
    ("decision_tree", "depth", 40, "tasks.decision_tree.options.depth: job sample_eval_prompts"),
])
def test_bad_config_fails_before_any_job(tmp_path: Path, smoke_config, section: str, key: str,
                                         value: int, message: str) -> None:
    node = (smoke_config["tasks"][section]["options"] if section in smoke_config["tasks"]
            else smoke_config[section])
    node[key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(smoke_config))
    proc = snakemake("-n", workdir=tmp_path, config=bad, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_three_seeds_give_an_interval_over_seeds_and_prompts(tmp_path: Path, smoke_config) -> None:
    """A 3-seed run of the smallest grid: the table over seeds averages the seeds, and its
    interval covers their spread (wider than the prompt-only interval where they differ)."""
    cfg = copy.deepcopy(smoke_config)
    cfg["seeds"] = [0, 1, 2]
    cfg["tasks"] = {"linear_regression": cfg["tasks"]["linear_regression"]}
    cfg["variants"] = {"softmax": {}}
    cfg["swapped"] = {}
    cfg.pop("finetuned", None)
    cfg.pop("finetune", None)
    cfg["baselines"] = {"zero": {}}
    cfg["ood"] = {}
    cfg["figures"] = {"icl_curves": cfg["figures"]["icl_curves"]}
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake("results/smoke/summary/icl_errors_over_seeds.parquet", "results/smoke/figures/icl_curves.pdf",
              workdir=tmp_path, config=path)
    per_seed = pd.read_parquet(tmp_path / "results/smoke/summary/icl_errors.parquet")
    over = pd.read_parquet(tmp_path / "results/smoke/summary/icl_errors_over_seeds.parquet")
    model = over[over["model"] == "softmax"].set_index("n_examples")
    assert (model["n_seeds"] == 3).all()
    seeds = per_seed[per_seed["model"] == "softmax"].pivot(index="n_examples", columns="seed",
                                                            values="error")
    assert list(seeds.columns) == [0, 1, 2]
    assert model["error"].to_numpy() == pytest.approx(seeds.mean(axis=1).to_numpy())
    assert (seeds.std(axis=1) > 0).all()  # three trainings, three models
    assert ((model["error_hi"] - model["error_lo"]) > (model["prompt_hi"] - model["prompt_lo"])).all()
    assert (over.loc[over["model"] == "zero", "n_seeds"] == 0).all()


# The smoke run's tasks: one with the linear-only OOD settings, one with other lengths and its own
# baselines. Every job costs ~3 s of imports, so the run keeps two of smoke.yaml's four tasks
# (each task's sampler and baselines have unit tests); every variant, swap and figure still runs.
SMOKE_TASKS = ("linear_regression", "decision_tree")
SMOKE_CONVERSIONS = ("combiner", "int8")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["tasks"] = {t: cfg["tasks"][t] for t in SMOKE_TASKS}
    # two conversions of the four: an attention (the swap hook) and int8 (QAT); the unit tests
    # convert every variant
    cfg["finetuned"] = {v: cfg["finetuned"][v] for v in SMOKE_CONVERSIONS}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(workdir=workdir, config=workdir / "config.yaml")
    return workdir


def test_smoke_run_builds_everything(smoke_run: Path) -> None:
    from iclbench.config import task_train, task_variants

    cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert cfg["tasks"]["decision_tree"]["variants"] == ["softmax"]  # a subset, and its own steps
    assert task_train(cfg, "decision_tree")["steps"] != cfg["train"]["steps"]
    for task in cfg["tasks"]:
        for ood in ("none", "shift", "scale_y"):
            assert (smoke_run / f"results/smoke/data/{task}/{ood}.safetensors").is_file()
        model_dir = smoke_run / f"results/smoke/models/{task}/softmax/seed0"
        for name in ("model.safetensors", "config.json", "train_log.parquet"):
            assert (model_dir / name).is_file()
        log = pd.read_parquet(model_dir / "train_log.parquet")
        assert {"step", "loss", "active_dims", "n_points", "seconds"} <= set(log.columns)
        assert log["step"].iloc[-1] == task_train(cfg, task)["steps"]
        assert (smoke_run / f"logs/smoke/train_model/{task}/softmax/seed0.log").stat().st_size > 0
    df = pd.read_parquet(smoke_run / "results/smoke/summary/icl_errors.parquet")
    assert list(df.columns) == list(ICL_ERRORS)
    assert set(df["task"]) == set(cfg["tasks"])
    from iclbench.baselines import BASELINES

    applicable = {b for b in cfg["baselines"] for t in cfg["tasks"] if BASELINES.get(b).applies_to(t)}
    assert {"greedy_tree", "xgboost"} <= applicable  # decision_tree's own baselines
    assert set(df["model"]) == {*cfg["variants"], *cfg["swapped"], *applicable}
    swapped = df.loc[df["mode"] == "swapped", "model"]
    assert set(swapped) == set(cfg["swapped"])
    for task in cfg["tasks"]:
        trained = df[(df["task"] == task) & (df["mode"] == "trained")]
        assert set(trained["model"]) == set(task_variants(cfg, task))
        assert set(df[(df["task"] == task) & (df["mode"] == "swapped")]["model"]) == set(
            cfg["swapped"])
    for task in cfg["tasks"]:
        finetuned = df[(df["task"] == task) & (df["mode"] == "finetuned")]
        assert set(finetuned["model"]) == set(cfg["finetuned"])
    curves = pd.read_parquet(smoke_run / "results/smoke/summary/conversion.parquet")
    assert set(zip(curves["task"], curves["model"])) == {
        (t, v) for t in cfg["tasks"] for v in cfg["finetuned"]}
    assert set(curves["step"]) == set(range(0, cfg["finetune"]["steps"] + 1,
                                            cfg["finetune"]["curve_every"]))
    # every model on every (setting, level) that applies to its task
    for (task, model, _), rows in df.groupby(["task", "model", "mode"]):
        settings = set(zip(rows["ood"], rows["ood_level"]))
        expected = {("none", 0.0)} | {(o, float(c)) for o in ("shift", "scale_y")
                                      for c in cfg["ood"][o]["levels"]}
        if task == "linear_regression":
            expected |= {(o, float(c)) for o, s in cfg["ood"].items() for c in s["levels"]}
        assert settings == expected, (task, model)
    per_model = df.groupby(["task", "model", "mode", "ood", "ood_level"])["n_examples"].agg(
        ["min", "max", "count"])
    for (task, *_), row in per_model.iterrows():
        n = cfg["tasks"][task]["n_points"]
        assert (row["min"], row["max"], row["count"]) == (0, n - 1, n)
    # the zero baseline shows what "1" means: 1 in distribution, c^2 under scale_y
    zero = df[(df["model"] == "zero") & (df["n_examples"] == 0)].set_index(
        ["task", "ood", "ood_level"])["error"]
    assert zero.loc[("linear_regression", "scale_y", 2.0)] > 2.0
    assert zero.loc[("linear_regression", "scale_y", 0.5)] < 0.5
    assert ((df["error_lo"] <= df["error"]) & (df["error"] <= df["error_hi"])).all()
    # the table over seeds: one row per key, the one seed's numbers where one seed was trained
    from iclbench.summary import OVER_SEEDS

    over = pd.read_parquet(smoke_run / "results/smoke/summary/icl_errors_over_seeds.parquet")
    assert list(over.columns) == list(OVER_SEEDS)
    keys = ["task", "model", "mode", "ood", "ood_level", "n_examples"]
    assert len(over) == len(df.drop_duplicates(keys))
    joined = df.merge(over, on=keys, suffixes=("", "_s"))
    assert (joined["n_seeds"] == joined["kind"].map({"transformer": len(cfg["seeds"]),
                                                     "baseline": 0})).all()
    if len(cfg["seeds"]) == 1:
        assert (joined["error"] == joined["error_s"]).all()
        assert (joined["error_lo"] == joined["error_lo_s"]).all()
    profile = pd.read_parquet(smoke_run / "results/smoke/summary/profile.parquet")
    assert list(profile.columns) == list(PROFILE)
    assert set(zip(profile["model"], profile["mode"])) == {
        *((v, "trained") for v in cfg["variants"]), *((v, "swapped") for v in cfg["swapped"])}
    for fig in cfg["figures"]:
        assert (smoke_run / f"results/smoke/figures/{fig}.pdf").stat().st_size > 1000
        assert (smoke_run / f"results/smoke/figures/{fig}.png").stat().st_size > 1000


def test_second_run_does_nothing(smoke_run: Path) -> None:
    """... and builds its DAG without importing torch: the config passed its check in the first
    run, whose plan (iclbench.plan) is read back."""
    assert list((smoke_run / ".snakemake/iclbench").glob("plan-*.json"))
    proc = snakemake("-n", workdir=smoke_run, config=smoke_run / "config.yaml",
                     env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert planned_jobs(proc) == {}
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr, re.M)
    assert "iclbench.plan" in imported and "snakemake.workflow" in imported
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_one_figure_option_reruns_that_figure_only(smoke_run: Path) -> None:
    cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    cfg["figures"]["icl_curves"]["log_y"] = True
    changed = smoke_run / "changed.yaml"
    # key order kept: Snakemake compares params by repr, and a reordered dict reads as changed
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    other = (smoke_run / "results/smoke/figures/errors_at_k.pdf").stat().st_mtime_ns
    original = (smoke_run / "results/smoke/figures/icl_curves.pdf").read_bytes()
    proc = snakemake(workdir=smoke_run, config=changed)
    # the figure, and the record of the config the tree was made with
    assert planned_jobs(proc) == {"plot_figure": 1, "run_config": 1, "all": 1}
    assert "results/smoke/figures/icl_curves.pdf" in proc.stdout + proc.stderr
    assert (smoke_run / "results/smoke/figures/errors_at_k.pdf").stat().st_mtime_ns == other
    # and back: the original option reruns it once more, then nothing
    snakemake(workdir=smoke_run, config=smoke_run / "config.yaml")
    assert planned_jobs(snakemake("-n", workdir=smoke_run, config=smoke_run / "config.yaml")) == {}
    assert (smoke_run / "results/smoke/figures/icl_curves.pdf").read_bytes() == original


def test_a_change_to_softmax_reruns_exactly_its_conversions(smoke_run: Path) -> None:
    """Conversions take the softmax model as an input: retraining softmax reruns them (and the
    swaps), and no other variant's training."""
    from iclbench.config import finetune_tasks

    cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    cfg["variants"]["softmax"] = {"qk_norm": True}
    changed = smoke_run / "softmax_changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake("-n", workdir=smoke_run, config=changed)
    jobs = planned_jobs(proc)
    tasks = finetune_tasks(cfg)
    assert jobs["train_model"] == len(tasks) * len(cfg["seeds"])  # softmax's only
    assert jobs["finetune_model"] == len(tasks) * len(cfg["finetuned"]) * len(cfg["seeds"])
    text = proc.stdout + proc.stderr
    outputs = re.findall(r"output: results/smoke/models/\w+/(\w+)/seed\d+/model.safetensors", text)
    assert outputs and set(outputs) == {"softmax"}


def test_one_figure_target_rebuilds_it(smoke_run: Path) -> None:
    target = smoke_run / "results/smoke/figures/errors_at_k.pdf"
    before = target.read_bytes()
    target.unlink()
    proc = snakemake("results/smoke/figures/errors_at_k.pdf", workdir=smoke_run,
                     config=smoke_run / "config.yaml")
    assert planned_jobs(proc) == {"plot_figure": 1}
    assert target.read_bytes() == before  # figures are deterministic too


def _timed(path: Path) -> bool:
    """Files that hold wall-clock measurements: the training log's seconds, the profile tables
    (latency, memory) and the figures drawn from them."""
    from iclbench.figures import FIGURES

    if path.name == "train_log.parquet" or "profile" in path.parts or path.name == "profile.parquet":
        return True
    figure = path.stem if path.parent.name == "figures" else None
    return figure is not None and "profile" in FIGURES.get(figure).tables


def _hashes(workdir: Path) -> dict[str, str]:
    import hashlib

    out = {}
    for path in sorted((workdir / "results/smoke").rglob("*")):
        # everything not timed must be byte-identical
        if path.is_file() and not _timed(path) and "report" not in path.name:
            out[str(path.relative_to(workdir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_two_runs_give_identical_files(smoke_run: Path, tmp_path: Path) -> None:
    """A second run, in a fresh directory, of one task's prompts, every model trained or
    fine-tuned on it and the trained models' evaluations (swapped and baseline evaluations run
    the same evaluation code on the same files; the summary and figures are pure functions of
    these; test_one_figure_target_rebuilds_it checks a figure's bytes)."""
    first = {k: h for k, h in _hashes(smoke_run).items()
             if k.split("/")[3:4] == ["linear_regression"]
             and (not k.startswith("results/smoke/eval/") or "-trained-" in k)}
    assert any(k.startswith("results/smoke/models/") for k in first)
    assert any(k.startswith("results/smoke/eval/") for k in first)
    snakemake(*first, workdir=tmp_path, config=smoke_run / "config.yaml")
    second = _hashes(tmp_path)
    assert second.keys() == first.keys()
    differing = [k for k in first if first[k] != second[k]]
    assert differing == []


def tiny_long_config() -> dict:
    """config/long.yaml shrunk (tiny model, short prompts, few steps, few prompts), its own
    results tree: the long config's shape (tasks at other lengths, fine-tuned relu and int8,
    tree baselines, the profile at the trained lengths) run end to end in seconds."""
    cfg = yaml.safe_load((ROOT / "config" / "long.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["results"] = "results/long_tiny"
    for task, n_points in zip(cfg["tasks"], (24, 16)):  # a second task, if any, shorter
        cfg["tasks"][task].update(n_points=n_points,
                                  points_curriculum={"start": 8, "inc": 8, "interval": 10})
        cfg["tasks"][task]["train"] = {"steps": 30, "batch_size": 4, "checkpoint_every": 10}
    cfg["variants"]["nystrom"].update(landmarks=4, chunk=8)
    cfg["swapped"]["nystrom"].update(landmarks=4)
    cfg["finetuned"]["nystrom"].update(landmarks=4)
    for key in ("model", "finetune", "eval"):
        cfg[key] = smoke[key]
    cfg["train"].update(warmup_steps=0, log_every=10, checkpoint_every=10,
                        short_prompts={"batch_size": 4, "n_points": 8},
                        dims_curriculum={"start": 2, "inc": 1, "interval": 10})
    cfg["baselines"] = {k: v for k, v in smoke["baselines"].items() if k in cfg["baselines"]}
    cfg["profile"] = {**smoke["profile"], "context_tokens": [32]}
    for fig in cfg["figures"].values():
        fig["dpi"] = 60
    cfg.pop("resources", None)
    return cfg


def test_a_second_config_runs_beside_the_first_and_leaves_it_untouched(smoke_run: Path) -> None:
    """The tiny long config in the smoke run's checkout: every output of it goes to its own
    tree (results/long_tiny, logs/long_tiny); afterwards every file of the smoke run is
    byte-identical and a dry run of the smoke config finds nothing to do."""
    import hashlib

    def files(*roots: str) -> dict[str, str]:
        return {str(p.relative_to(smoke_run)): hashlib.sha256(p.read_bytes()).hexdigest()
                for root in roots for p in sorted((smoke_run / root).rglob("*")) if p.is_file()}

    before = files("results/smoke", "logs/smoke")
    cfg = tiny_long_config()
    other = smoke_run / "long_tiny.yaml"
    other.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(workdir=smoke_run, config=other)
    assert files("results/smoke", "logs/smoke") == before
    assert planned_jobs(snakemake("-n", workdir=smoke_run, config=smoke_run / "config.yaml")) == {}
    # the tiny long run itself: every task at its own length, evaluated at every k, profiled at
    # the trained lengths, every mode
    errors = pd.read_parquet(smoke_run / "results/long_tiny/summary/icl_errors.parquet")
    for task, tc in cfg["tasks"].items():
        sub = errors[errors["task"] == task]
        assert sub["n_examples"].max() == tc["n_points"] - 1
        assert set(sub["mode"]) == {"trained", "swapped", "finetuned", "baseline"}
    profile = pd.read_parquet(smoke_run / "results/long_tiny/summary/profile.parquet")
    assert {2 * tc["n_points"] for tc in cfg["tasks"].values()} <= set(profile["context_tokens"])
    for fig in cfg["figures"]:
        assert (smoke_run / f"results/long_tiny/figures/{fig}.png").stat().st_size > 1000
    assert (smoke_run / "logs/long_tiny/train_model").is_dir()


def test_report_holds_every_figure_and_the_config(smoke_run: Path) -> None:
    report = smoke_run / "report.html"
    snakemake("--report", str(report), workdir=smoke_run, config=smoke_run / "config.yaml")
    html = report.read_text()
    cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    for fig in cfg["figures"]:
        assert f"{fig}.png" in html
    assert "In-context learning curves" in html  # a caption from the figure registry
    assert "checkpoint_every" in html  # the configuration


def test_kill_and_resume_is_bitwise_identical(tmp_path: Path, smoke_config) -> None:
    """Kill a training job hard (SIGKILL to its process group) mid-run, rerun, compare weights."""
    import os
    import signal
    import time

    smoke_config["tasks"] = {"linear_regression": smoke_config["tasks"]["linear_regression"]}
    smoke_config["train"].update(steps=600, log_every=10, checkpoint_every=50)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(smoke_config))
    target = "results/smoke/models/linear_regression/softmax/seed0/model.safetensors"
    reference = tmp_path / "reference"
    snakemake(target, workdir=reference, config=config)

    killed = tmp_path / "killed"
    killed.mkdir()
    ckpt = killed / "results/smoke/checkpoints/linear_regression/softmax/seed0.ckpt"
    cmd = [SNAKEMAKE, target, "-s", str(ROOT / "Snakefile"), "--cores", "1", "--directory",
           str(killed), "--configfile", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists():
            assert proc.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's own process group
        proc.wait()
    assert not (killed / target).exists() and ckpt.exists()

    # a hard kill leaves Snakemake's lock behind: unlock, then rerun (README, "Reliability")
    snakemake("--unlock", workdir=killed, config=config)
    proc2 = snakemake(target, "--rerun-incomplete", workdir=killed, config=config)
    log = (killed / "logs/smoke/train_model/linear_regression/softmax/seed0.log").read_text()
    assert "resumed from" in log, proc2.stderr
    assert (killed / target).read_bytes() == (reference / target).read_bytes()
    assert not ckpt.exists()  # removed once the outputs are written
