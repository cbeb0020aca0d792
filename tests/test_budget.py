"""Memory bounds at DAG build: huge values are rejected naming the key, and the estimates cover the
peaks measured with the CPU allocator's events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from iclbench.budget import (
    FUNCTION,
    MEM_MB,
    Estimate,
    _inference,
    _prompts,
    _training,
    check_budget,
    estimates,
    mem_limits,
)
from iclbench.config import ConfigError, check, load
from iclbench.evaluate import make_prompts
from iclbench.model import Decoder, ModelSpec
from iclbench.profiling import peak_memory
from iclbench.tasks import TASKS, build_task
from iclbench.variants import get_variant

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
CPU = torch.device("cpu")


def default() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT)


def test_depth_40_tree_is_rejected_naming_the_key() -> None:
    raw = default()
    raw["tasks"]["decision_tree"]["options"]["depth"] = 40
    with pytest.raises(ConfigError, match=r"^tasks\.decision_tree\.options\.depth: job "
                       r"sample_eval_prompts .* needs an estimated [\d,]+ MB, over the rule's "
                       r"mem_mb of 2,000 MB"):
        check(raw)


@pytest.mark.parametrize("path, value, key", [
    (("tasks", "relu_2nn", "options", "hidden"), 1_000_000, "tasks.relu_2nn.options.hidden"),
    (("tasks", "linear_regression", "n_points"), 5000, "linear_regression"),
    (("train", "batch_size"), 1_000_000, "train.batch_size"),
    (("model", "n_embd"), 65536, "model"),
    (("eval", "n_prompts"), 10**8, "eval.n_prompts"),
    (("eval", "bootstrap"), 10**9, "eval.bootstrap"),
    (("profile", "context_tokens"), [1 << 20], "profile.context_tokens"),
])
def test_sizes_past_a_jobs_memory_are_rejected(path: tuple[str, ...], value: Any,
                                               key: str) -> None:
    raw = default()
    *parents, last = path
    node = raw
    for p in parents:
        node = node[p]
    node[last] = value
    if path[0] == "eval" and path[1] == "n_prompts":
        raw["eval"]["n_prompts_ood"] = 8
    with pytest.raises(ConfigError, match="needs an estimated") as err:
        check(raw)
    assert key in str(err.value).split(": job")[0] + str(err.value)


def test_a_larger_mem_mb_admits_the_job() -> None:
    raw = default()
    raw["tasks"]["decision_tree"]["options"]["depth"] = 18  # 2^19 numbers per function
    with pytest.raises(ConfigError, match=r"resources\.sample_eval_prompts\.mem_mb"):
        check(raw)
    raw["resources"] = {rule: {"mem_mb": 64_000} for rule in MEM_MB}
    check(raw)  # from the config
    raw.pop("resources")
    check(raw, {rule: {"mem_mb": 64_000} for rule in MEM_MB})  # from --set-resources


def test_mem_limits_merge_defaults_config_and_overrides() -> None:
    raw = {"resources": {"train_model": {"mem_mb": 3000}}}
    limits = mem_limits(raw, {"train_model": {"mem_mb": 5000, "runtime": 10},
                              "evaluate_model": {"runtime": 5}, "other_rule": {"mem_mb": 1}})
    assert limits == {**MEM_MB, "train_model": 5000}
    assert mem_limits(raw)["train_model"] == 3000


@pytest.mark.parametrize("path, value", [
    (("train", "lr"), float("nan")),
    (("train", "grad_clip"), float("inf")),
    (("eval", "confidence"), float("nan")),
    (("ood", "shift", "levels"), [1.0, float("inf")]),
    (("figures", "icl_curves", "ymax"), float("-inf")),
])
def test_non_finite_numbers_are_rejected_naming_the_key(path: tuple[str, ...],
                                                        value: Any) -> None:
    raw = default()
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    where = ".".join(path)
    with pytest.raises(ConfigError, match=rf"config key {where}(\[1\])?: .* not a finite"):
        check(raw)


@pytest.mark.parametrize("name", ["config.yaml", "full.yaml", "smoke.yaml", "paper.yaml",
                                  "harder.yaml"])
def test_shipped_configs_fit_their_memory(name: str) -> None:
    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    check_budget(raw)
    jobs = list(estimates(raw))
    assert {e.rule for e in jobs} >= {"sample_eval_prompts", "train_model", "evaluate_model",
                                      "evaluate_baseline", "profile_model"}
    load(ROOT / "config" / name)


def test_every_task_declares_the_size_of_its_functions() -> None:
    """``function_numel`` is what ``sample_functions`` holds per prompt, for every task."""
    for name in TASKS.names():
        task = build_task(name, 6)
        params = task.sample_functions(3, 6, torch.Generator().manual_seed(0))
        assert sum(t.numel() for t in params.values()) == 3 * task.function_numel(), name


def _bytes(terms: tuple[Any, ...], *keys: str) -> int:
    return sum(t.bytes for t in terms if not keys or t.key in keys)


# the variants of the default config (trained), at the default model's width
VARIANTS = list(DEFAULT["variants"].items()) + [
    ("nystrom", DEFAULT["swapped"]["nystrom"]), ("nystrom", DEFAULT["finetuned"]["nystrom"])]


@pytest.mark.parametrize("variant, options", VARIANTS,
                         ids=[f"{v}-{o.get('landmarks_source', '')}{o.get('landmarks', '')}"
                              for v, o in VARIANTS])
@pytest.mark.parametrize("batch, points", [(16, 21), (2, 161), (6, 101)])
def test_training_and_inference_estimates_cover_the_measured_peak(
        variant: str, options: dict[str, Any], batch: int, points: int) -> None:
    """One training step (forward and backward) and one forward without autograd, peaks from
    the allocator's events, against the model's terms of the estimate (without the margin)."""
    torch.manual_seed(0)
    raw = default()
    raw["tasks"]["linear_regression"]["n_points"] = points
    p = _prompts("linear_regression", raw["tasks"]["linear_regression"], raw["n_dims"])
    kind = get_variant(variant)
    m = raw["model"]
    spec = kind.model_spec(ModelSpec(raw["n_dims"], 2 * points, m["n_embd"], m["n_layer"],
                                     m["n_head"]), options)
    model = kind.prepare_training(Decoder(spec), options)
    xs, ys = torch.randn(batch, points, raw["n_dims"]), torch.randn(batch, points)

    def step() -> None:
        (model(xs, ys) - ys).square().mean().backward()

    model.train()
    step()
    measured, _ = peak_memory(step, CPU)
    train = {**raw["train"], "batch_size": batch}
    terms = _training(raw, p, variant, options, train, f"variants.{variant}", "train.batch_size")
    model_terms = [t for t in terms if not t.what.startswith("a batch of")]
    assert measured <= sum(t.bytes for t in model_terms), (measured, model_terms)

    model.eval()
    with torch.inference_mode():
        model(xs, ys)
        measured, _ = peak_memory(lambda: model(xs, ys), CPU)
    terms = _inference(raw, 2 * points, variant, options, batch, f"variants.{variant}",
                       "eval.batch_size")
    assert measured <= _bytes(terms), (measured, terms)


@pytest.mark.parametrize("task, options", [("decision_tree", {"depth": 8}),
                                           ("relu_2nn", {"hidden": 400}),
                                           ("linear_regression", {})])
def test_prompt_sampling_estimate_covers_the_measured_peak(task: str,
                                                           options: dict[str, Any]) -> None:
    raw = default()
    tcfg = {**raw["tasks"][task], "options": options}
    p = _prompts(task, tcfg, raw["n_dims"])
    fn = build_task(task, raw["n_dims"], options)
    n_prompts = 256
    measured, _ = peak_memory(lambda: make_prompts(fn, task, n_prompts, p.n_points, 0), CPU)
    from iclbench.budget import _file, _sampling

    est = Estimate("sample_eval_prompts", task,
                   _sampling(p, n_prompts, task) + _file(p, 1, n_prompts, "none"))
    assert measured <= _bytes(est.terms), (measured, est.terms)
    # and the functions' part is what they hold: within 2x of the measurement
    held = FUNCTION * n_prompts * (p.function + p.workspace)
    assert held <= 2 * measured or p.function < 100
