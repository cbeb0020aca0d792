"""OOD settings: each transform does what it says, touches the function only where it should, and
keeps least squares exact where it must be; prompt files and evaluation carry the settings."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from iclbench.baselines import build_baseline
from iclbench.evaluate import evaluate, load_prompts, make_prompts, save_prompts
from iclbench.ood import IN_DISTRIBUTION, OOD, build_transform
from iclbench.seeding import generator
from iclbench.tasks import TASKS, build_task, sample_inputs

D, P, N = 5, 512, 11
OPTIONS = {"sparse_linear_regression": {"sparsity": 2}}
#: a level of each setting that differs from the identity
LEVEL = {"shift": 3.0, "scale_x": 2.0, "scale_y": 3.0, "skewed": 1.0, "half_subspace": 0.5,
         "random_quadrants": 1.0, "orthogonal_query": 1.0, "noisy": 1.0}
LABELS = {"model": "m", "kind": "baseline", "mode": "baseline", "seed": pd.NA, "device": "cpu"}


def prompts(task: str, ood: str, levels: tuple[float, ...], n_prompts: int = P):
    fn = build_task(task, D, OPTIONS.get(task))
    return make_prompts(fn, task, n_prompts, N, seed=7, ood=ood, levels=levels)


def base(task: str, n_prompts: int = P) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The functions and inputs every setting starts from (make_prompts' own stream)."""
    fn = build_task(task, D, OPTIONS.get(task))
    rng = generator(7, "eval", task)
    params = fn.sample_functions(n_prompts, D, rng)
    return params, sample_inputs(n_prompts, N, D, D, rng)


def test_every_setting_except_none_is_tested() -> None:
    assert set(OOD) == {IN_DISTRIBUTION, *LEVEL}


def test_in_distribution_is_the_identity() -> None:
    fn = build_task("linear_regression", D)
    a = make_prompts(fn, "linear_regression", 64, N, seed=7)
    params, xs = base("linear_regression", 64)
    assert a.ood == IN_DISTRIBUTION and a.levels == (0.0,) and a.query_xs is None
    assert torch.equal(a.xs[0], xs) and torch.equal(a.ys[0], fn.evaluate(params, xs))
    with pytest.raises(ValueError, match="level 1.0 out of range"):
        make_prompts(fn, "linear_regression", 8, N, seed=7, ood=IN_DISTRIBUTION, levels=(1.0,))


# half_subspace at level 1 keeps all of R^d in a random basis: the same law, other samples
@pytest.mark.parametrize("name", sorted(set(LEVEL) - {"half_subspace"}))
def test_identity_level_reproduces_in_distribution(name: str) -> None:
    identity = OOD.get(name).identity_level
    a = prompts("linear_regression", name, (identity,), 64)
    b = prompts("linear_regression", IN_DISTRIBUTION, (0.0,), 64)
    if name == "skewed":  # a rotation of N(0, I) inputs: same law, other samples
        torch.testing.assert_close(a.xs[0].square().mean(), b.xs[0].square().mean(), rtol=0.1,
                                   atol=0)
        return
    torch.testing.assert_close(a.xs, b.xs)
    torch.testing.assert_close(a.ys, b.ys)
    if a.query_xs is not None:
        torch.testing.assert_close(a.query_xs, b.xs)


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("name", sorted(LEVEL))
def test_functions_are_untouched(task: str, name: str) -> None:
    """Input transforms re-evaluate the same functions; only scale_y and noisy move labels."""
    transform = build_transform(name)
    if not transform.applies_to(task):
        with pytest.raises(ValueError, match="does not apply"):
            prompts(task, name, (LEVEL[name],), 8)
        return
    params, xs = base(task, 64)
    fn = build_task(task, D, OPTIONS.get(task))
    p = prompts(task, name, (LEVEL[name],), 64)
    if name == "scale_y":
        torch.testing.assert_close(p.xs[0], xs)
        torch.testing.assert_close(p.ys[0], LEVEL[name] * fn.evaluate(params, xs))
    elif name == "noisy":
        torch.testing.assert_close(p.xs[0], xs)
        scale = math.sqrt(D / (D + LEVEL[name] ** 2))
        residual = p.ys[0] / scale - fn.evaluate(params, xs)
        assert residual.std().item() == pytest.approx(LEVEL[name], rel=0.1)
    else:
        assert not transform.changes_labels
        torch.testing.assert_close(p.ys[0], fn.evaluate(params, p.xs[0]))
        if p.query_xs is not None:
            torch.testing.assert_close(p.query_ys[0], fn.evaluate(params, p.query_xs[0]))


@pytest.mark.parametrize("task", TASKS.names())
def test_shift_moves_the_mean_to_distance_c(task: str) -> None:
    p = prompts(task, "shift", (1.0, 4.0))
    for j, c in enumerate(p.levels):
        mean = p.xs[j].reshape(-1, D).mean(dim=0)
        assert mean.norm().item() == pytest.approx(c, abs=0.1)
        # the spread around it is unchanged
        assert (p.xs[j] - mean).square().mean().item() == pytest.approx(1.0, rel=0.05)
    # one fixed direction for every level
    u = [p.xs[j].reshape(-1, D).mean(dim=0) / c for j, c in enumerate(p.levels)]
    torch.testing.assert_close(u[0], u[1], atol=0.1, rtol=0)


def test_scale_x_and_scale_y_scale_what_they_say() -> None:
    x = prompts("relu_2nn", "scale_x", (0.5, 3.0))
    y = prompts("relu_2nn", "scale_y", (0.5, 3.0))
    ref = prompts("relu_2nn", IN_DISTRIBUTION, (0.0,))
    for j, c in enumerate(x.levels):
        torch.testing.assert_close(x.xs[j], c * ref.xs[0])
        torch.testing.assert_close(y.xs[j], ref.xs[0])
        torch.testing.assert_close(y.ys[j], c * ref.ys[0])
        assert y.ys[j].square().mean().item() / D == pytest.approx(c**2, rel=0.15)
    assert torch.all(x.norm == D) and torch.all(y.norm == D)  # in-distribution Var(y), always


def test_skewed_and_half_subspace_keep_the_norm_and_change_the_spectrum() -> None:
    for name, level in [("skewed", 1.0), ("half_subspace", 0.5)]:
        xs = prompts("linear_regression", name, (level,)).xs[0].reshape(-1, D)
        assert xs.square().sum(dim=1).mean().item() == pytest.approx(D, rel=0.1)
        eig = torch.linalg.eigvalsh(xs.T @ xs / xs.shape[0]).flip(0)
        if name == "skewed":  # eigenvalues proportional to 1 / (i + 1)^2
            ratio = (eig / eig[0]).tolist()
            assert ratio == pytest.approx([1 / (i + 1) ** 2 for i in range(D)], abs=0.05)
        else:  # floor(0.5 * 5) = 2 directions only
            assert (eig[2:] < 1e-6).all() and (eig[:2] > 1.0).all()


def test_random_quadrants_puts_examples_in_one_orthant_and_queries_anywhere() -> None:
    p = prompts("linear_regression", "random_quadrants", (1.0,))
    signs = torch.sign(p.xs[0])
    assert torch.all(signs == signs[:, :1])  # one orthant per prompt, for every example
    assert not torch.all(torch.sign(p.query_xs[0]) == signs[:, :1])
    assert p.query_xs[0].square().mean().item() == pytest.approx(1.0, rel=0.05)


def test_orthogonal_query_is_orthogonal_to_the_examples() -> None:
    p = prompts("linear_regression", "orthogonal_query", (1.0,))
    xs, qs = p.xs[0].double(), p.query_xs[0].double()
    for i in range(1, D):
        dots = torch.einsum("pjd,pd->pj", xs[:, :i], qs[:, i])
        assert dots.abs().max().item() < 1e-4
        torch.testing.assert_close(qs[:, i].norm(dim=-1), xs[:, i].norm(dim=-1), rtol=1e-4,
                                   atol=0)
    torch.testing.assert_close(qs[:, D:], xs[:, D:])  # no orthogonal direction left


@pytest.mark.parametrize("name", ["shift", "scale_x", "skewed", "half_subspace",
                                  "random_quadrants"])
def test_least_squares_stays_exact_from_d_examples(name: str) -> None:
    # noiseless linear regression: any full-rank inputs determine w, so a correct transform and
    # normalisation leave the error at 0 from k = d on (half_subspace: from k = d/2, the rank)
    p = prompts("linear_regression", name, (LEVEL[name],), 128)
    df = evaluate(build_baseline("least_squares").predict, p, LABELS, 20, 0.9, 0, 128)
    k0 = 2 if name == "half_subspace" else D
    assert df.loc[df["n_examples"] >= k0, "error"].max() < 1e-6
    assert df.loc[df["n_examples"] == 1, "error"].item() > 0.05


def test_orthogonal_query_defeats_least_squares_below_d() -> None:
    # below d, the minimum-norm solution lies in the examples' span and predicts 0 for an
    # orthogonal query: the error equals the zero predictor's
    p = prompts("linear_regression", "orthogonal_query", (1.0,), 256)
    ls = evaluate(build_baseline("least_squares").predict, p, LABELS, 20, 0.9, 0, 256)
    zero = evaluate(build_baseline("zero").predict, p, LABELS, 20, 0.9, 0, 256)
    torch.testing.assert_close(torch.tensor(ls["error"].values[1:D]),
                               torch.tensor(zero["error"].values[1:D]), rtol=1e-4, atol=1e-6)
    assert ls["error"].values[D:].max() < 1e-6


def test_prompt_file_keeps_levels_and_queries(tmp_path) -> None:
    p = prompts("linear_regression", "orthogonal_query", (0.5, 1.0), 16)
    save_prompts(p, tmp_path / "q.safetensors")
    q = load_prompts(tmp_path / "q.safetensors")
    assert q.ood == "orthogonal_query" and q.levels == (0.5, 1.0)
    assert torch.equal(q.query_xs, p.query_xs) and torch.equal(q.query_ys, p.query_ys)
    assert q.head(4).xs.shape == (2, 4, N, D) and q.head(4).query_ys.shape == (2, 4, N)


def test_evaluate_scores_queries_against_query_labels() -> None:
    p = prompts("linear_regression", "random_quadrants", (1.0,), 32)

    def oracle(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        # knows the label of every query it is asked about: must score 0 at every position
        return ys.clone()

    df = evaluate(oracle, p, LABELS, 20, 0.9, 0, 32)
    assert df["error"].max() == 0.0 and (df["ood"] == "random_quadrants").all()


def test_bad_levels_are_rejected() -> None:
    with pytest.raises(ValueError, match="out of range"):
        build_transform("scale_x").check_levels([0.0])
    with pytest.raises(ValueError, match="duplicate"):
        build_transform("shift").check_levels([1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        build_transform("half_subspace").check_levels([1.5])


def test_job_writes_ood_files_on_the_in_distribution_prompts(tmp_path, smoke_config) -> None:
    from iclbench.jobs import sample_eval_prompts

    task = "linear_regression"
    args = (task, smoke_config["tasks"][task], smoke_config["n_dims"], smoke_config["eval"])
    sample_eval_prompts(*args, "none", tmp_path / "none.safetensors")
    sample_eval_prompts(*args, "scale_y", tmp_path / "scale_y.safetensors",
                        {"levels": [1.0, 2.0], "options": {}})
    ind = load_prompts(tmp_path / "none.safetensors")
    ood = load_prompts(tmp_path / "scale_y.safetensors")
    n_ood = smoke_config["eval"]["n_prompts_ood"]
    assert ind.xs.shape[1] == smoke_config["eval"]["n_prompts"] and ood.xs.shape[1] == n_ood
    torch.testing.assert_close(ood.ys[0], ind.ys[0, :n_ood])  # level 1: the same prompts
    torch.testing.assert_close(ood.ys[1], 2 * ind.ys[0, :n_ood])
