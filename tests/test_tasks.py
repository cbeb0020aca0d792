"""Tasks sample deterministically, with the documented variance, and respect the curriculum."""

from __future__ import annotations

import pytest
import torch

from iclbench.curriculum import Schedule
from iclbench.seeding import generator
from iclbench.tasks import TASKS, build_task, sample_prompts

OPTIONS = {"sparse_linear_regression": {"sparsity": 3}}


@pytest.mark.parametrize("name", TASKS.names())
def test_same_seed_same_tensors(name: str) -> None:
    task = build_task(name, 6, OPTIONS.get(name))
    a = sample_prompts(task, 8, 10, generator(0, "t"))
    b = sample_prompts(task, 8, 10, generator(0, "t"))
    c = sample_prompts(task, 8, 10, generator(1, "t"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("name", TASKS.names())
def test_normalised_variance_of_y_is_one(name: str) -> None:
    task = build_task(name, 8, OPTIONS.get(name))
    _, ys = sample_prompts(task, 4000, 20, generator(0, "var"))
    assert ys.var().item() / task.normaliser == pytest.approx(1.0, abs=0.08)


@pytest.mark.parametrize("name", TASKS.names())
def test_curriculum_zeroes_inactive_coordinates(name: str) -> None:
    task = build_task(name, 8, OPTIONS.get(name))
    xs, ys = sample_prompts(task, 64, 10, generator(0, "c"), active_dims=3)
    assert torch.all(xs[..., 3:] == 0)
    assert torch.all(xs[..., :3] != 0)
    # the function ignores the inactive coordinates: filling them changes nothing
    params = task.sample_functions(64, 3, generator(0, "f"))
    noisy = xs.clone()
    noisy[..., 3:] = torch.randn(noisy[..., 3:].shape, generator=generator(0, "n"))
    assert torch.allclose(task.evaluate(params, xs), task.evaluate(params, noisy))


def test_sparse_support_size() -> None:
    task = build_task("sparse_linear_regression", 10, {"sparsity": 3})
    w = task.sample_functions(500, 10, generator(0, "s"))["w"]
    assert torch.all((w != 0).sum(dim=1) == 3)
    w5 = task.sample_functions(500, 5, generator(0, "s"))["w"]
    assert torch.all(w5[:, 5:] == 0) and torch.all((w5 != 0).sum(dim=1) == 3)


def test_decision_tree_matches_a_plain_walk() -> None:
    task = build_task("decision_tree", 4, {"depth": 4})
    params = task.sample_functions(6, 4, generator(0, "tree"))
    xs = torch.randn(6, 9, 4, generator=generator(1, "tree"))
    ys = task.evaluate(params, xs)
    for b in range(6):
        for i in range(9):
            node = 0
            for _ in range(4):
                c = int(params["coords"][b, node])
                node = 2 * node + (2 if xs[b, i, c] > 0 else 1)
            assert ys[b, i] == params["leaves"][b, node - 15]


def test_unknown_task_option_names_it() -> None:
    with pytest.raises(ValueError, match="sparsty"):
        build_task("sparse_linear_regression", 5, {"sparsty": 2})


def test_schedule() -> None:
    s = Schedule(start=5, end=20, inc=1, interval=2000)
    assert [s.at(0), s.at(1999), s.at(2000), s.at(10**7)] == [5, 5, 6, 20]
    assert s.steps_to_end() == 30000
    assert Schedule(11, 11, 0, 1).at(123) == 11
