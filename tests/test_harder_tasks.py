"""The harder function classes (issue 9): random forests, 3-layer ReLU networks, and their
baselines. Seeded determinism and Var(y) of every task are also checked registry-wide in
tests/test_tasks.py; these tests pin what is particular to each class."""

from __future__ import annotations

import math

import pytest
import torch

from iclbench.baselines import BASELINES, build_baseline
from iclbench.seeding import generator
from iclbench.tasks import build_task, sample_prompts

D = 5


@pytest.mark.parametrize("name", ["random_forest", "relu_3nn"])
def test_same_seed_same_prompts(name: str) -> None:
    task = build_task(name, D)
    a = sample_prompts(task, 16, 12, generator(3, name))
    b = sample_prompts(task, 16, 12, generator(3, name))
    c = sample_prompts(task, 16, 12, generator(4, name))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("opts", [{"n_trees": 1, "depth": 4}, {"n_trees": 5, "depth": 3},
                                  {"n_trees": 20, "depth": 2}])
def test_forest_variance_is_one_for_any_number_of_trees(opts: dict[str, int]) -> None:
    # the plain mean of T trees has variance 1 / T; the sqrt(T) factor makes it 1 (module doc)
    task = build_task("random_forest", D, opts)
    _, ys = sample_prompts(task, 4000, 20, generator(0, "forest-var"))
    assert task.normaliser == 1.0
    assert ys.var().item() == pytest.approx(1.0, abs=0.06)
    assert ys.mean().item() == pytest.approx(0.0, abs=0.05)


def test_forest_is_the_scaled_mean_of_its_trees() -> None:
    task = build_task("random_forest", D, {"n_trees": 3, "depth": 2})
    params = task.sample_functions(4, D, generator(0, "forest"))
    assert params["coords"].shape == (4, 3, 3) and params["leaves"].shape == (4, 3, 4)
    xs = torch.randn(4, 7, D, generator=generator(1, "forest"))
    ys = task.evaluate(params, xs)
    for b in range(4):
        for i in range(7):
            total = 0.0
            for t in range(3):
                node = 0
                for _ in range(2):
                    c = int(params["coords"][b, t, node])
                    node = 2 * node + (2 if xs[b, i, c] > 0 else 1)
                total += float(params["leaves"][b, t, node - 3])
            assert ys[b, i].item() == pytest.approx(total / math.sqrt(3), abs=1e-6)


@pytest.mark.parametrize("hidden", [20, 100])
def test_relu_3nn_variance_is_d(hidden: int) -> None:
    task = build_task("relu_3nn", D, {"hidden": hidden})
    _, ys = sample_prompts(task, 4000, 20, generator(0, "relu3-var"))
    assert task.normaliser == D
    assert ys.var().item() / D == pytest.approx(1.0, abs=0.08)


def test_relu_3nn_is_a_three_layer_network() -> None:
    task = build_task("relu_3nn", D, {"hidden": 7})
    p = task.sample_functions(2, D, generator(0, "r3"))
    xs = torch.randn(2, 5, D, generator=generator(1, "r3"))
    s = math.sqrt(2 / 7)
    net = [torch.nn.Linear(D, 7, bias=False), torch.nn.Linear(7, 7, bias=False),
           torch.nn.Linear(7, 1, bias=False)]
    with torch.no_grad():
        for b in range(2):
            net[0].weight.copy_(p["w1"][b].T)
            net[1].weight.copy_(s * p["w2"][b].T)
            net[2].weight.copy_(s * p["w3"][b][None])
            ref = net[2](torch.relu(net[1](torch.relu(net[0](xs[b]))))).squeeze(-1)
            torch.testing.assert_close(task.evaluate(p, xs)[b], ref)


@pytest.mark.parametrize(("name", "bad"), [("random_forest", {"n_tres": 3}),
                                           ("relu_3nn", {"hiden": 3})])
def test_unknown_option_names_it(name: str, bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_task(name, D, bad)


@pytest.mark.parametrize("bad", [{"n_trees": 0}, {"depth": 0}, {"n_trees": 2.5}])
def test_bad_forest_option_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_task("random_forest", D, bad)


def test_baselines_declare_the_new_tasks() -> None:
    for name in ("random_forest_fit", "xgboost", "greedy_tree"):
        assert BASELINES.get(name).applies_to("random_forest")
    assert BASELINES.get("gd_3nn").applies_to("relu_3nn")
    assert not BASELINES.get("gd_3nn").applies_to("relu_2nn")
    assert not BASELINES.get("gd_2nn").applies_to("relu_3nn")


def test_random_forest_fit_on_a_tiny_batch() -> None:
    task = build_task("random_forest", D)
    xs, ys = sample_prompts(task, 6, 31, generator(0, "rf-fit"))
    preds = build_baseline("random_forest_fit", {"n_estimators": 10}).predict(xs, ys)
    assert preds.shape == ys.shape and torch.all(preds[:, 0] == 0)
    again = build_baseline("random_forest_fit", {"n_estimators": 10}).predict(xs, ys)
    assert torch.equal(preds, again)  # seeded
    err = (preds - ys).square()[:, -10:].mean().item()
    assert err < 0.8  # learns something from 20-30 examples (always-0 scores ~1)


def test_gd_3nn_fits_a_three_layer_network() -> None:
    task = build_task("relu_3nn", D, {"hidden": 100})
    xs, ys = sample_prompts(task, 4, 21, generator(0, "gd3"))
    model = build_baseline("gd_3nn", {"steps": 60, "hidden": 32})
    preds = model.predict(xs, ys)
    assert preds.shape == ys.shape and torch.all(preds[:, 0] == 0)
    assert torch.equal(preds, build_baseline("gd_3nn", {"steps": 60, "hidden": 32}).predict(xs, ys))
    err = (preds - ys).square().mean(dim=0) / D
    assert err[-5:].mean() < 0.5
