"""Bad configs fail with a message that names the key, before any job runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from iclbench.config import ConfigError, check, load, validate_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def validated(raw: dict[str, Any]) -> None:
    validate_schema(raw, SCHEMA)
    check(raw)


@pytest.mark.parametrize("name", ["config.yaml", "full.yaml", "smoke.yaml", "paper.yaml",
                                  "harder.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load(ROOT / "config" / name)
    assert "softmax" in cfg.variants and cfg.tasks


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        raw = raw[key]
    raw[last] = value


def _delete(raw: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        raw = raw[key]
    del raw[last]


BAD = [
    # (path, value, text the error must contain)
    ("trian", {}, "'trian' was unexpected"),
    ("train.stepz", 10, "config key train: Additional properties are not allowed ('stepz'"),
    ("train.steps", "many", "config key train.steps: 'many' is not of type 'integer'"),
    ("train.steps", 0, "config key train.steps: 0 is less than the minimum of 1"),
    ("train.batch_size", -4, "config key train.batch_size"),
    ("model.n_head", 1.5, "config key model.n_head"),
    ("model.n_head", 3, "model.n_embd (16) must be divisible by model.n_head (3)"),
    ("seeds", [], "config key seeds"),
    ("seeds", [0, 0], "seeds: duplicate"),
    ("eval.confidence", 1.5, "config key eval.confidence"),
    ("tasks.linear_regresion", None, "tasks: unknown task 'linear_regresion'; known are:"),
    ("variants.sofmax", {}, "variants: unknown variant 'sofmax'; known are:"),
    ("baselines.lasso_x", {}, "baselines: unknown baseline 'lasso_x'"),
    ("figures.icl_curve", {}, "figures: unknown figure 'icl_curve'"),
    ("figures.icl_curves.logy", True, "figures.icl_curves: unknown option(s) ['logy']"),
    ("baselines.knn3.kk", 3, "baselines.knn3: unknown option(s) ['kk']"),
    ("tasks.sparse_linear_regression.options", {"sparsty": 2},
     "tasks.sparse_linear_regression.options: unknown option(s) ['sparsty']; known are: "
     "['sparsity']"),
    ("tasks.sparse_linear_regression.options", {"sparsity": 9},
     "tasks.sparse_linear_regression.options: sparsity must lie in [1, n_dims=3], got 9"),
    ("tasks.linear_regression.points_curriculum.start", 99,
     "tasks.linear_regression.points_curriculum"),
    ("device", "tpu", "device: 'tpu' is not a torch device"),
    ("train.lr_schedule", "linear", "config key train.lr_schedule: 'linear' is not one of"),
    ("train.checkpoint_every", 15, "train.checkpoint_every (15) must be a multiple of"),
    ("swapped.nystromm", {}, "swapped: unknown variant 'nystromm'"),
    ("swapped.nystrom.landmarks_source", "learned",
     "swapped.nystrom: landmarks_source: learned cannot be swapped into a softmax-trained model"),
    ("variants.nystrom.landmarks_source", "segmentz",
     "variants.nystrom: landmarks_source must be one of segments, learned, got 'segmentz'"),
    ("variants", {}, "config key variants"),
    ("n_dims", 0, "config key n_dims: 0 is less than the minimum of 1"),
    ("threads", "two", "config key threads: 'two' is not of type 'integer'"),
    ("ood.shfit", {"levels": [1], "options": {}}, "ood: unknown OOD setting 'shfit'; known are:"),
    ("ood.none", {"levels": [0], "options": {}}, "ood.none: the in-distribution setting"),
    ("ood.scale_y.levels", [0], "ood.scale_y: level 0.0 out of range"),
    ("ood.scale_y.levels", [], "config key ood.scale_y.levels"),
    ("ood.shift.options", {"dir": 1}, "ood.shift: unknown option(s) ['dir']"),
    ("ood.shift.lvls", [1], "config key ood.shift: Additional properties are not allowed"),
    ("baselines.xgboost.max_prompts", 0, "baselines.xgboost: max_prompts must be"),
    ("variants.int8.start_step", 40, "variants.int8.start_step (40) must be below train.steps (40)"),
    ("eval.n_prompts_ood", 65, "eval.n_prompts_ood (65) must not exceed eval.n_prompts (64)"),
    ("swapped.nystrom.qk_norm", True, "swapped.nystrom: qk_norm comes from the softmax model"),
    ("variants.relu.qk_norm", "yes", "variants.relu: qk_norm must be true or false, got 'yes'"),
    ("tasks.relu_2nn.variants", ["softmax", "sofmax"],
     "tasks.relu_2nn.variants: 'sofmax' not under variants"),
    ("tasks.relu_2nn.variants", [], "config key tasks.relu_2nn.variants"),
    ("tasks.relu_2nn.train", {"stepz": 5}, "config key tasks.relu_2nn.train: Additional properties"),
    ("tasks.relu_2nn.train", {"steps": 0}, "config key tasks.relu_2nn.train.steps: 0 is less"),
    ("tasks.relu_2nn.train", {"checkpoint_every": 15},
     "tasks.relu_2nn.train.checkpoint_every (15) must be a multiple of"),
    ("tasks.linear_regression.train", {"steps": 20},
     "variants.int8.start_step (20) must be below tasks.linear_regression.train.steps (20)"),
    # int8 is not trained on decision_tree (tasks.decision_tree.variants): its steps may be few
    ("finetuned.sofmax", {}, "finetuned: unknown variant 'sofmax'"),
    ("finetuned.softmax", {}, "finetuned.softmax: softmax is the model conversions start from"),
    ("finetuned.relu", {"qk_norm": True}, "finetuned.relu: qk_norm comes from the softmax model"),
    ("finetuned.combiner", {"block_size": 3}, "finetuned.combiner:"),
    ("finetuned.int8", {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.9, "start_step": 10},
     "finetuned.int8.start_step (10) must be below"),
    ("finetune.stpes", 5, "config key finetune: Additional properties are not allowed ('stpes'"),
    ("finetune.curve_every", 3, "finetune.curve_every (3) must be a multiple of log_every"),
    ("finetune.checkpoint_every", 7, "finetune.checkpoint_every (7) must be a multiple of"),

]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] + "=" + str(b[1]) for b in BAD])
def test_bad_config_names_the_key(smoke_config, path: str, value: Any, message: str) -> None:
    raw = copy.deepcopy(smoke_config)
    if path.startswith("tasks.linear_regresion"):
        raw["tasks"]["linear_regresion"] = raw["tasks"].pop("linear_regression")
    else:
        _set(raw, path, value)
    with pytest.raises(ConfigError) as err:
        validated(raw)
    assert message in str(err.value)


def test_a_task_sets_its_own_training_and_variants(smoke_config) -> None:
    """tasks.<task>.train overrides keys of train for that task only; tasks.<task>.variants
    trains a subset there (the rest of the grid is untouched)."""
    from iclbench.config import task_train, task_variants

    raw = copy.deepcopy(smoke_config)
    raw["tasks"]["relu_2nn"]["train"] = {"steps": 60, "lr": 1e-3}
    raw["tasks"]["relu_2nn"]["variants"] = ["int8", "softmax"]
    validated(raw)
    assert task_train(raw, "relu_2nn") == {**raw["train"], "steps": 60, "lr": 1e-3}
    assert task_train(raw, "linear_regression") == raw["train"]
    assert task_variants(raw, "relu_2nn") == ["softmax", "int8"]  # in the order of variants:
    assert task_variants(raw, "linear_regression") == list(raw["variants"])


def test_swaps_need_softmax_trained_somewhere(smoke_config) -> None:
    raw = copy.deepcopy(smoke_config)
    for task in raw["tasks"].values():
        task["variants"] = ["relu"]
    with pytest.raises(ConfigError, match="swapped: needs softmax trained on some task"):
        validated(raw)


def test_missing_key_is_named(smoke_config) -> None:
    _delete(smoke_config, "eval.seed")
    with pytest.raises(ConfigError, match="config key eval: 'seed' is a required property"):
        validated(smoke_config)


def test_conversions_need_their_recipe_and_the_figure_needs_conversions(smoke_config) -> None:
    raw = copy.deepcopy(smoke_config)
    del raw["finetune"]
    with pytest.raises(ConfigError, match="finetuned: needs a finetune section"):
        validated(raw)
    raw = copy.deepcopy(smoke_config)
    raw["finetuned"] = {}
    with pytest.raises(ConfigError, match="figures.conversion: needs variants under finetuned"):
        validated(raw)
    del raw["figures"]["conversion"]
    validated(raw)  # no conversions, no conversion figure: fine


def test_a_conversion_trains_at_the_task_recipe_with_the_finetune_keys(smoke_config) -> None:
    from iclbench.config import finetune_tasks, finetune_train, task_train

    raw = copy.deepcopy(smoke_config)
    raw["tasks"]["relu_2nn"]["train"] = {"batch_size": 8}
    ft = finetune_train(raw, "relu_2nn")
    assert ft == {**task_train(raw, "relu_2nn"), "steps": 10, "lr": 3e-4, "warmup_steps": 0,
                  "log_every": 5, "checkpoint_every": 5}
    assert ft["batch_size"] == 8 and "curve_every" not in ft
    raw["tasks"]["relu_2nn"]["variants"] = ["relu"]
    assert "relu_2nn" not in finetune_tasks(raw)  # no softmax model to start from there


def test_every_config_has_its_own_results_tree_and_long_is_many_shot() -> None:
    """Runs of two configs never share a file: each config names a results tree of its own; the
    long config's longest task has at least 1024 examples and every task at least 256."""
    import yaml

    from iclbench.config import check

    trees = {}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        if path.name == "schema.yaml":
            continue
        trees[path.name] = yaml.safe_load(path.read_text())["results"]
    assert trees["config.yaml"] == "results"
    assert len(set(trees.values())) == len(trees), trees
    long = check(yaml.safe_load((ROOT / "config" / "long.yaml").read_text()))
    points = [t.n_points for t in long.tasks.values()]
    assert max(points) >= 1024 and min(points) >= 256
    # the profile measures every task's own length
    assert {t.tokens for t in long.tasks.values()} <= set(long.profile.context_tokens)


def test_a_results_tree_inside_the_default_trees_folders_is_refused(smoke_config) -> None:
    from iclbench.config import ConfigError, check

    smoke_config["results"] = "results/models"
    with pytest.raises(ConfigError, match="results: 'results/models' is a folder of the default"):
        check(smoke_config)
