"""Baselines: right on the easy cases, one prediction per position, never read y_i."""

from __future__ import annotations

import pytest
import torch

from iclbench.baselines import BASELINES, build_baseline
from iclbench.seeding import generator
from iclbench.tasks import build_task, sample_prompts

D = 5
#: options that keep the slow baselines quick in the registry-wide contract tests
QUICK = {"gd_2nn": {"steps": 5}, "gd_3nn": {"steps": 5}, "lasso": {"max_iter": 1000},
         "xgboost": {"n_estimators": 5}, "random_forest_fit": {"n_estimators": 5}}


def quick(name: str):  # type: ignore[no-untyped-def]
    return build_baseline(name, QUICK.get(name))


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
    xs, ys = linear_prompts[0][:4], linear_prompts[1][:4]
    assert torch.all(quick(name).predict(xs, ys)[:, 0] == 0)


def test_averaging_is_about_half_at_2d(linear_prompts) -> None:
    # E||w_hat - w||^2 / d = (d + 1) / k for Gaussian inputs: 0.6 at k = 2d with d = 5
    err = normalised_errors("averaging", *linear_prompts)
    assert 0.4 < err[2 * D].item() < 0.8


def test_zero_predictor_scores_one(linear_prompts) -> None:
    _, ys = linear_prompts
    assert (ys.square().mean() / D).item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("name", BASELINES.names())
def test_one_prediction_per_position_and_no_peeking(name: str, linear_prompts) -> None:
    xs, ys = linear_prompts[0][:4], linear_prompts[1][:4]
    model = quick(name)
    base = model.predict(xs, ys)
    assert base.shape == ys.shape and torch.isfinite(base).all()
    for i in (0, 1, D - 1, D, ys.shape[1] - 1):
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


def test_zero_baseline_predicts_zero(linear_prompts) -> None:
    assert torch.all(build_baseline("zero").predict(*linear_prompts) == 0)


def _last_position(name: str, xs: torch.Tensor, ys: torch.Tensor, i: int) -> torch.Tensor:
    """Squared errors (P,) of a per-prompt-fit baseline at position ``i`` only (one fit each)."""
    model = build_baseline(name)
    x, y = xs.double().numpy(), ys.double().numpy()
    preds = torch.tensor([model.fit_predict(x[p, :i], y[p, :i], x[p, i : i + 1])
                          for p in range(x.shape[0])])
    return (preds - ys[:, i].double()).square()


def test_lasso_beats_least_squares_on_sparse_below_d() -> None:
    # the paper's Figure 5: with k < d examples, Lasso uses the sparsity and least squares cannot
    d, k = 10, 6
    task = build_task("sparse_linear_regression", d, {"sparsity": 2})
    xs, ys = sample_prompts(task, 200, k + 1, generator(0, "sparse"))
    lasso = _last_position("lasso", xs, ys, k).mean().item() / 2
    ls = ((build_baseline("least_squares").predict(xs, ys)[:, k] - ys[:, k]).square().mean() / 2)
    assert lasso < 0.5 * ls.item()


@pytest.mark.slow  # 200 XGBoost fits: a few seconds
def test_xgboost_beats_knn_on_trees() -> None:
    # the paper's Figure 6 ordering; at d = 5 it needs ~50 examples (at 25 the two are level)
    task = build_task("decision_tree", D, {"depth": 4})
    n = 51
    xs, ys = sample_prompts(task, 200, n, generator(0, "trees"))
    xgb = _last_position("xgboost", xs, ys, n - 1).mean().item()
    knn = (build_baseline("knn3").predict(xs, ys)[:, n - 1] - ys[:, n - 1]).square().mean().item()
    assert xgb < knn


def test_gd_2nn_fits_a_relu_network() -> None:
    # the networks train: with 25 examples the error falls well below the zero predictor's
    task = build_task("relu_2nn", D, {"hidden": 100})
    xs, ys = sample_prompts(task, 16, 26, generator(0, "relu"))
    preds = build_baseline("gd_2nn", {"steps": 100}).predict(xs, ys)
    err = (preds - ys).square().mean(dim=0) / D
    assert err[-5:].mean() < 0.4 and err[1:].mean() < err[1]


@pytest.mark.parametrize("name", ["lasso", "greedy_tree", "xgboost", "gd_2nn", "gd_3nn",
                                  "random_forest_fit"])
def test_max_prompts_option_is_checked(name: str) -> None:
    model = build_baseline(name, {"max_prompts": 3, "max_prompts_ood": 2})
    assert model.prompt_limit("none") == 3 and model.prompt_limit("shift") == 2
    assert build_baseline(name, {"max_prompts": 3}).prompt_limit("shift") == 3
    assert build_baseline(name).prompt_limit("none") is None
    with pytest.raises(ValueError, match="max_prompts"):
        build_baseline(name, {"max_prompts": 0})
