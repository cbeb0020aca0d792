"""Building the DAG: the plan of a checked config is kept, and only a passing config's plan.

Also the derived values that the rules and the memory bounds share (iclbench.config): which
models the DAG evaluates and which file each reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import iclbench.config
from iclbench.config import ConfigError, ModelRun, model_runs
from iclbench.plan import Plan, checked_plan, gather, plan_key, source_digest


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the full check ran."""
    calls: list[int] = []
    real = iclbench.config.check

    def check(raw: Any, overrides: Any = None) -> Any:
        calls.append(1)
        return real(raw, overrides)

    monkeypatch.setattr(iclbench.config, "check", check)
    return calls


def test_a_passing_config_is_checked_once(tmp_path: Path, smoke_config, counted) -> None:
    first = checked_plan(smoke_config, cache_dir=tmp_path)
    again = checked_plan(smoke_config, cache_dir=tmp_path)
    assert counted == [1]
    assert first == again == gather(smoke_config)
    assert len(list(tmp_path.glob("plan-*.json"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_a_changed_config_or_limit_is_checked_again(tmp_path: Path, smoke_config,
                                                    counted) -> None:
    checked_plan(smoke_config, cache_dir=tmp_path)
    smoke_config["eval"]["bootstrap"] += 1
    checked_plan(smoke_config, cache_dir=tmp_path)
    checked_plan(smoke_config, {"train_model": {"mem_mb": 3000}}, cache_dir=tmp_path)
    assert counted == [1, 1, 1]


def test_a_failing_config_is_never_stored(tmp_path: Path, smoke_config, counted) -> None:
    smoke_config["tasks"]["decision_tree"]["options"]["depth"] = 40
    for _ in range(2):
        with pytest.raises(ConfigError, match="tasks.decision_tree.options.depth"):
            checked_plan(smoke_config, cache_dir=tmp_path)
    assert counted == [1, 1]
    assert not list(tmp_path.iterdir())


def test_an_unreadable_plan_is_checked_again(tmp_path: Path, smoke_config, counted) -> None:
    checked_plan(smoke_config, cache_dir=tmp_path)
    (stored,) = tmp_path.glob("plan-*.json")
    stored.write_text('{"baselines": ')  # cut short
    assert checked_plan(smoke_config, cache_dir=tmp_path) == gather(smoke_config)
    assert counted == [1, 1]


def test_the_key_follows_the_package_source(tmp_path: Path, smoke_config) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("DEFAULT = 1\n")
    before = source_digest(package)
    (package / "a.py").write_text("DEFAULT = 2\n")
    assert source_digest(package) != before
    limits = {"train_model": 2000}
    assert plan_key(smoke_config, limits, before) != plan_key(smoke_config, limits, "other")


def test_the_plan_holds_what_the_registries_say(smoke_config) -> None:
    from iclbench.baselines import BASELINES
    from iclbench.figures import FIGURES
    from iclbench.ood import OOD

    plan = gather(smoke_config)
    assert isinstance(plan, Plan)
    for task in smoke_config["tasks"]:
        assert plan.baselines[task] == [b for b in sorted(smoke_config["baselines"])
                                        if BASELINES.get(b).applies_to(task)]
        assert plan.oods[task][0] == "none"
        assert set(plan.oods[task][1:]) == {o for o in smoke_config["ood"]
                                            if OOD.get(o).applies_to(task)}
    assert set(plan.oods["linear_regression"]) > set(plan.oods["decision_tree"])
    # in the sorted config's order, as the rules read it: a reordered YAML file changes nothing
    assert plan.oods["linear_regression"][1:] == sorted(plan.oods["linear_regression"][1:])
    reordered = {**smoke_config, "ood": dict(reversed(smoke_config["ood"].items()))}
    assert gather(reordered) == plan
    for fig in smoke_config["figures"]:
        assert plan.figure_tables[fig] == list(FIGURES.get(fig).tables)
        assert plan.figure_captions[fig] == FIGURES.get(fig).caption


def test_building_the_dag_needs_no_torch() -> None:
    """What common.smk imports loads neither torch nor a registry."""
    code = ("import sys, iclbench.config, iclbench.plan, iclbench.budget, iclbench.storage; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', "
            "'pandas') or m in ('iclbench.tasks', 'iclbench.baselines', 'iclbench.ood')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_runs_and_the_files_they_read(smoke_config) -> None:
    smoke_config["tasks"]["decision_tree"]["variants"] = ["relu"]  # no softmax: no swaps there
    runs = model_runs(smoke_config)
    modes = [r.mode for r in runs]
    assert modes == sorted(modes, key=["trained", "swapped", "finetuned"].index)
    swapped = {(r.task, r.variant) for r in runs if r.mode == "swapped"}
    assert swapped == {(t, v) for t in smoke_config["tasks"] if t != "decision_tree"
                       for v in smoke_config["swapped"]}
    assert ModelRun("t", "nystrom", "swapped").reads == ("trained", "softmax")
    assert ModelRun("t", "nystrom", "trained").reads == ("trained", "nystrom")
    assert ModelRun("t", "int8", "finetuned").reads == ("finetuned", "int8")
    assert ModelRun("t", "int8", "finetuned").section == "finetuned"
    assert ModelRun("t", "int8", "swapped").section == "swapped"
