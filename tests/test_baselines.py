"""Baselines: right on the easy cases, one prediction per position, never read y_i."""

from __future__ import annotations

import pytest
import torch

from iclbench.baselines import BASELINES, build_baseline
from iclbench.seeding import generator
from iclbench.tasks import build_task, sample_prompts

D = 5


@pytest.fixture(scope="module")
def linear_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    task = build_task("linear_regression", D)
    return sample_prompts(task, 256, 2 * D + 1, generator(0, "b"))


def normalised_errors(name: str, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    preds = build_baseline(name).predict(xs, ys)
    return (preds - ys).square().mean(dim=0) / D


def test_least_squares_is_exact_from_d_examples(linear_prompts) -> None:
    err = normalised_errors("least_squares", *linear_prompts)
    assert err[D:].max() < 1e-8
    assert err[D - 1] > 0.05  # fewer examples than dimensions: not determined yet


@pytest.mark.parametrize("name", BASELINES.names())
def test_no_example_predicts_zero(name: str, linear_prompts) -> None:
    assert torch.all(build_baseline(name).predict(*linear_prompts)[:, 0] == 0)


def test_averaging_is_about_half_at_2d(linear_prompts) -> None:
    # E||w_hat - w||^2 / d = (d + 1) / k for Gaussian inputs: 0.6 at k = 2d with d = 5
    err = normalised_errors("averaging", *linear_prompts)
    assert 0.4 < err[2 * D].item() < 0.8


def test_zero_predictor_scores_one(linear_prompts) -> None:
    _, ys = linear_prompts
    assert (ys.square().mean() / D).item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("name", BASELINES.names())
def test_one_prediction_per_position_and_no_peeking(name: str, linear_prompts) -> None:
    xs, ys = linear_prompts[0][:16], linear_prompts[1][:16]
    model = build_baseline(name)
    base = model.predict(xs, ys)
    assert base.shape == ys.shape
    for i in range(ys.shape[1]):
        ys2 = ys.clone()
        ys2[:, i:] = 1e3  # y_i and later labels
        xs2 = xs.clone()
        xs2[:, i + 1 :] = 1e3  # later inputs
        torch.testing.assert_close(model.predict(xs2, ys2)[:, : i + 1], base[:, : i + 1])


def test_knn_averages_nearest_earlier_labels() -> None:
    xs = torch.tensor([[[0.0], [1.0], [2.0], [10.0], [1.1]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])
    preds = build_baseline("knn3").predict(xs, ys)
    # position 4 (x = 1.1): nearest earlier are x = 1, 2, 0 -> mean(2, 3, 1)
    assert preds[0, 4].item() == pytest.approx(2.0)
    assert preds[0, 1].item() == pytest.approx(1.0)  # only one earlier example
