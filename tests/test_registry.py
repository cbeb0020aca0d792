"""The registries' one options pattern (``options`` + ``ranges``, :func:`resolve_options`) and the
task tags that baselines and OOD settings match on."""

from __future__ import annotations

import math
from typing import Any

import pytest

from iclbench.attention import ATTENTION, build_attention
from iclbench.baselines import BASELINES
from iclbench.figures import FIGURES
from iclbench.ood import OOD
from iclbench.registry import Configurable, Range, above, at_least, resolve_options
from iclbench.tasks import TASKS, Task, build_task

#: (task, baseline) and (task, OOD setting) pairs that apply, as computed from the task-name tuples
#: the registries had before tags (pinned: tags must select exactly these)
ALL_TASKS = ["decision_tree", "linear_regression", "mujoco_dynamics", "random_forest", "relu_2nn",
             "relu_3nn", "sparse_linear_regression"]
TREES = ["decision_tree", "random_forest"]
BASELINE_TASKS = {
    "averaging": ALL_TASKS, "knn3": ALL_TASKS, "least_squares": ALL_TASKS, "zero": ALL_TASKS,
    "gd_2nn": ["relu_2nn"], "gd_3nn": ["relu_3nn"], "lasso": ["sparse_linear_regression"],
    "greedy_tree": TREES, "random_forest_fit": TREES, "xgboost": TREES,
}
OOD_TASKS = {
    "none": ALL_TASKS, "shift": ALL_TASKS, "scale_x": ALL_TASKS, "scale_y": ALL_TASKS,
    "half_subspace": ["linear_regression"], "noisy": ["linear_regression"],
    "orthogonal_query": ["linear_regression"], "random_quadrants": ["linear_regression"],
    "skewed": ["linear_regression"],
}


def test_tags_select_the_same_pairs_as_the_task_names_did() -> None:
    assert TASKS.names() == ALL_TASKS
    assert {b: [t for t in TASKS if BASELINES.get(b).applies_to(t)]
            for b in BASELINES} == BASELINE_TASKS
    assert {o: [t for t in TASKS if OOD.get(o).applies_to(t)] for o in OOD} == OOD_TASKS
    # a name that is not a task carries no tag: only what requires none applies to it
    assert {b for b in BASELINES if BASELINES.get(b).applies_to("nope")} == {
        "averaging", "knn3", "least_squares", "zero"}
    assert {o for o in OOD if OOD.get(o).applies_to("nope")} == {
        "none", "shift", "scale_x", "scale_y"}


def test_vector_output_is_a_tag() -> None:
    for name in TASKS:
        task = TASKS.get(name)
        assert task.vector_output == ("vector_output" in task.tags)
    assert TASKS.get("mujoco_dynamics").vector_output
    with pytest.raises(TypeError, match="vector_output comes from the 'vector_output' tag"):
        type("Untagged", (Task,), {"vector_output": True})


def test_resolve_options_types_and_ranges() -> None:
    defaults = {"n": 3, "x": 0.5, "flag": False, "name": "a", "limit": None, "anything": None}
    ranges = {"n": at_least(1), "x": Range(0, 1), "limit": at_least(1)}
    assert resolve_options(defaults, {"x": 1, "limit": 4}, ranges) == {**defaults, "x": 1,
                                                                        "limit": 4}
    assert resolve_options(defaults, {"limit": None, "anything": [1]}, ranges)["anything"] == [1]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"m": 1}, r"unknown option\(s\) \['m'\]; known are: \['anything', 'flag'"),
        ({"n": True}, "n must be an integer >= 1, got True"),
        ({"n": 2.0}, "n must be an integer >= 1, got 2.0"),
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"x": math.nan}, r"x must be a number in \[0, 1\], got nan"),
        ({"x": math.inf}, "x must be a number in"),
        ({"x": 1.5}, r"x must be a number in \[0, 1\], got 1.5"),
        ({"x": "0.5"}, "x must be a number in"),
        ({"flag": 1}, "flag must be true or false, got 1"),
        ({"name": 1}, "name must be a string, got 1"),
        ({"limit": 0}, "limit must be an integer >= 1, got 0"),
        ({"limit": 2.5}, "limit must be an integer >= 1"),
    ]
    for given, message in bad:
        with pytest.raises(ValueError, match=message):
            resolve_options(defaults, given, ranges)
    with pytest.raises(ValueError, match=r"rate must be a number > 0, got 0"):
        resolve_options({"rate": 0.1}, {"rate": 0}, {"rate": above(0)})
    with pytest.raises(ValueError, match=r"t must be a number in \(0, 5\] s, got 0"):
        resolve_options({"t": 1.0}, {"t": 0}, {"t": Range(0, 5, open_low=True, unit=" s")})


def test_declarations_are_checked_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        type("Stray", (Configurable,), {"options": {"k": 1}, "ranges": {"kk": at_least(1)}})
    with pytest.raises(TypeError, match="k must be an integer >= 1, got 0"):
        type("Bad", (Configurable,), {"options": {"k": 0}, "ranges": {"k": at_least(1)}})


def _check(kind: str, name: str):  # type: ignore[no-untyped-def]
    """The options check of one entry of each registry, as the config validation calls it."""
    if kind == "task":
        return lambda opts: build_task(name, 8, opts)
    if kind == "attention":
        return lambda opts: build_attention(name, 2, 8, opts)
    registry = {"baseline": BASELINES, "ood": OOD, "figure": FIGURES}[kind]
    return registry.get(name).check_options


def _defaults(kind: str, name: str) -> dict[str, Any]:
    if kind == "task":
        return dict(TASKS.get(name).options)
    if kind == "attention":
        return dict(ATTENTION.get(name).option_defaults())
    return dict({"baseline": BASELINES, "ood": OOD, "figure": FIGURES}[kind].get(name).options)


ENTRIES = ([("task", n) for n in TASKS] + [("attention", n) for n in ATTENTION]
           + [("baseline", n) for n in BASELINES] + [("ood", n) for n in OOD]
           + [("figure", n) for n in FIGURES])


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}-{n}" for k, n in ENTRIES])
def test_every_registry_checks_options_one_way(kind: str, name: str) -> None:
    """Every entry of the five registries rejects an unknown option listing the known ones, and a
    value of another type than its default's, naming the option (the defaults themselves are
    checked when an entry is defined: test_declarations_are_checked_when_the_class_is_defined)."""
    check, defaults = _check(kind, name), _defaults(kind, name)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['not_an_option'\]; known are"):
        check({"not_an_option": 1})
    for key, default in defaults.items():
        if default is None:
            continue
        wrong = 1.5 if isinstance(default, (bool, int, str)) else "x"
        with pytest.raises(ValueError, match=f"^{key} must be "):
            check({key: wrong})
    if kind != "task" or name != "mujoco_dynamics":  # its calibration takes about a second
        check({})
