"""The harder function classes (issue 9): random forests, 3-layer ReLU networks, MuJoCo
cart-pole transitions (vector outputs), and their baselines. Seeded determinism and Var(y) of
every task are also checked registry-wide in tests/test_tasks.py; these tests pin what is
particular to each class."""

from __future__ import annotations

import math

import pytest
import torch

from iclbench.attention import ATTENTION
from iclbench.baselines import BASELINES, build_baseline
from iclbench.evaluate import evaluate, make_prompts
from iclbench.model import Decoder, ModelSpec, interleave, load_model, save_model
from iclbench.seeding import generator
from iclbench.tasks import build_task, sample_prompts
from iclbench.tasks.mujoco_dynamics import CARTPOLE_XML, PHYSICS, CartPoleSimulator

D = 5


@pytest.mark.parametrize("name", ["random_forest", "relu_3nn", "mujoco_dynamics"])
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
    xs, ys = sample_prompts(task, 3, 12, generator(0, "rf-fit"))
    preds = build_baseline("random_forest_fit", {"n_estimators": 5}).predict(xs, ys)
    assert preds.shape == ys.shape and torch.all(preds[:, 0] == 0)
    again = build_baseline("random_forest_fit", {"n_estimators": 5}).predict(xs, ys)
    assert torch.equal(preds, again)  # seeded
    # it learns: at 40 examples, well below always-0 (one fit per prompt, at the last position)
    xs, ys = sample_prompts(task, 60, 41, generator(1, "rf-fit"))
    model = build_baseline("random_forest_fit", {"n_estimators": 10})
    x, y = xs.double().numpy(), ys.double().numpy()
    last = torch.tensor([model.fit_predict(x[p, :40], y[p, :40], x[p, 40:41]) for p in range(60)])
    assert (last - ys[:, 40]).square().mean() < 0.7 * ys[:, 40].square().mean()


def test_gd_3nn_fits_a_three_layer_network() -> None:
    task = build_task("relu_3nn", D, {"hidden": 100})
    xs, ys = sample_prompts(task, 4, 21, generator(0, "gd3"))
    model = build_baseline("gd_3nn", {"steps": 60, "hidden": 32})
    preds = model.predict(xs, ys)
    assert preds.shape == ys.shape and torch.all(preds[:, 0] == 0)
    assert torch.equal(preds, build_baseline("gd_3nn", {"steps": 60, "hidden": 32}).predict(xs, ys))
    err = (preds - ys).square().mean(dim=0) / D
    assert err[-5:].mean() < 0.5


# --- MuJoCo cart-pole transitions: vector outputs ---------------------------------------------


@pytest.fixture(scope="module")
def cartpole():  # type: ignore[no-untyped-def]
    return build_task("mujoco_dynamics", D)


def test_mujoco_outputs_are_normalised_vectors(cartpole) -> None:
    xs, ys = sample_prompts(cartpole, 2000, 20, generator(0, "mj-var"))
    assert cartpole.vector_output and cartpole.out_dims == 4 and ys.shape == (2000, 20, 4)
    assert cartpole.normaliser == 1.0
    # E[y_j^2] = 1 for every coordinate (module doc: calibrated on a fixed sample)
    torch.testing.assert_close(ys.square().mean(dim=(0, 1)), torch.ones(4), atol=0.08, rtol=0)
    assert ys.var().item() == pytest.approx(1.0, abs=0.06)


def test_mujoco_next_state_depends_on_the_physics(cartpole) -> None:
    """One state and action, systems that differ in one physical parameter: other next states."""
    base = cartpole.sample_functions(1, D, generator(0, "mj-phys"))
    x = torch.tensor([[[0.3, 0.5, -0.4, 0.8, 0.9]]])
    y0 = cartpole.evaluate(base, x)
    for j, name in enumerate(PHYSICS):
        other = {k: v.clone() for k, v in base.items()}
        other["physics"][0, j] *= 1.5
        y1 = cartpole.evaluate(other, x)
        assert not torch.allclose(y0, y1, rtol=1e-4, atol=1e-6), name
    # and the same physics gives the same next state, whatever else is in the batch
    both = {k: torch.cat([v, v]) for k, v in base.items()}
    torch.testing.assert_close(cartpole.evaluate(both, x.expand(2, 1, D)), y0.expand(2, 1, 4))


def test_mujoco_physics_written_in_place_match_a_compiled_model() -> None:
    """Overwriting an MjModel's fields (what the sampler does) equals compiling those values."""
    import mujoco
    import numpy as np

    p = np.array([1.7, 0.35, 0.8, 0.4, 0.03, 7.0])
    xml = (CARTPOLE_XML.replace('damping="0.1"', 'damping="0.4"')
           .replace('damping="0.01"', 'damping="0.03"').replace('gear="5"', 'gear="7"')
           .replace('mass="1" diaginertia', 'mass="1.7" diaginertia')
           .replace('pos="0 0 0.3" mass="0.2" diaginertia="0.006 0.006 0.0001"',
                    f'pos="0 0 0.4" mass="0.35" diaginertia="{0.35 * 0.64 / 12} '
                    f'{0.35 * 0.64 / 12} 0.0001"'))
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    state = np.array([0.3, 0.5, -0.4, 1.6])
    data.qpos[:], data.qvel[:], data.ctrl[:] = state[:2], state[2:], 0.9
    for _ in range(5):
        mujoco.mj_step(model, data)
    sim = CartPoleSimulator(0.01, 5)
    nxt = sim.step(p[None], state[None, None], np.array([[[0.9]]]))[0, 0]
    np.testing.assert_allclose(nxt, np.concatenate([data.qpos, data.qvel]), rtol=1e-10, atol=1e-12)


def test_mujoco_curriculum_and_bad_options() -> None:
    with pytest.raises(ValueError, match="n_dims >= 5"):
        build_task("mujoco_dynamics", 3)
    with pytest.raises(ValueError, match="frame_skip"):
        build_task("mujoco_dynamics", D, {"frame_skip": 0})
    with pytest.raises(ValueError, match="framskip"):
        build_task("mujoco_dynamics", D, {"framskip": 2})


def test_vector_y_token_and_readout_shapes() -> None:
    xs = torch.randn(2, 3, D)
    ys = torch.randn(2, 3, 4)
    tokens = interleave(xs, ys)
    assert torch.equal(tokens[:, 1::2, :4], ys) and torch.all(tokens[:, 1::2, 4] == 0)
    model = Decoder(ModelSpec(D, 6, 16, 1, 2, n_out=4), generator=generator(0, "v"))
    assert model(xs, ys).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="at most n_dims"):
        ModelSpec(D, 6, 16, 1, 2, n_out=6)


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_vector_readout_is_causal(attention: str) -> None:
    """Changing y_t and every token after x_t never changes a prediction at positions <= t."""
    n = 10
    spec = ModelSpec(D, 2 * n, 32, 2, 2, attention=attention, n_out=4)
    model = Decoder(spec, generator=generator(0, "vc")).eval()
    g = generator(1, "vc")
    xs, ys = torch.randn(3, n, D, generator=g), torch.randn(3, n, 4, generator=g)
    with torch.no_grad():
        base = model(xs, ys)
        for t in range(n):
            xs2, ys2 = xs.clone(), ys.clone()
            ys2[:, t:] = torch.randn(3, n - t, 4, generator=g) * 10
            xs2[:, t + 1 :] = torch.randn(3, n - t - 1, D, generator=g) * 10
            out = model(xs2, ys2)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
            if t + 1 < n:
                assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_vector_model_file_roundtrip_and_scalar_files_unchanged(tmp_path) -> None:
    import json

    from safetensors import safe_open

    vec = Decoder(ModelSpec(D, 8, 16, 1, 2, n_out=4), generator=generator(0, "f"))
    save_model(vec, tmp_path / "v.safetensors")
    loaded = load_model(tmp_path / "v.safetensors")
    assert loaded.spec.n_out == 4
    xs, ys = torch.randn(2, 4, D), torch.randn(2, 4, 4)
    with torch.no_grad():
        assert torch.equal(vec.eval()(xs, ys), loaded(xs, ys))
    save_model(Decoder(ModelSpec(D, 8, 16, 1, 2)), tmp_path / "s.safetensors")
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as f:
        spec = json.loads(f.metadata()["iclbench"])["spec"]
    assert "n_out" not in spec  # scalar files keep the metadata they had before vector outputs


VECTOR_BASELINES = ["least_squares", "averaging", "knn3", "zero"]


@pytest.mark.parametrize("name", VECTOR_BASELINES)
def test_baselines_predict_vectors_one_coordinate_at_a_time(name: str, cartpole) -> None:
    assert BASELINES.get(name).applies_to("mujoco_dynamics")
    xs, ys = sample_prompts(cartpole, 4, 12, generator(0, "mj-b"))
    model = build_baseline(name)
    preds = model.predict(xs, ys)
    assert preds.shape == ys.shape and torch.all(preds[:, 0] == 0)
    for j in range(4):
        torch.testing.assert_close(preds[..., j], model.predict(xs, ys[..., j]))
    # no peeking: later labels and inputs never change an earlier prediction
    ys2, xs2 = ys.clone(), xs.clone()
    ys2[:, 6:], xs2[:, 7:] = 1e3, 1e3
    torch.testing.assert_close(model.predict(xs2, ys2)[:, :7], preds[:, :7])


def test_scalar_only_baselines_are_inapplicable_to_vector_tasks() -> None:
    for name in ("gd_2nn", "gd_3nn"):
        assert not BASELINES.get(name).vector_outputs
        assert not BASELINES.get(name).applies_to("mujoco_dynamics")
    with pytest.raises(ValueError, match="scalar labels only"):
        build_baseline("gd_2nn", {"steps": 1}).predict(torch.randn(1, 3, D), torch.randn(1, 3, 4))
    # a per-prompt fit handles vector labels one output dimension at a time
    xs, ys = torch.randn(2, 6, D), torch.randn(2, 6, 4)
    preds = build_baseline("greedy_tree").predict(xs, ys)
    assert preds.shape == ys.shape


def test_vector_error_is_the_mean_over_coordinates(cartpole) -> None:
    prompts = make_prompts(cartpole, "mujoco_dynamics", 64, 8, seed=3)
    labels = {"model": "m", "kind": "baseline", "mode": "baseline", "seed": None, "device": "cpu"}
    zero = evaluate(lambda x, y: torch.zeros_like(y), prompts, labels, 50, 0.9, 0, 64)
    ys = prompts.ys[0].double()
    torch.testing.assert_close(torch.tensor(zero["error"].to_numpy()),
                               ys.square().mean(dim=(0, 2)))
    assert zero["error"].mean() == pytest.approx(1.0, abs=0.15)
    # an error in one coordinate of four counts a quarter
    shifted = evaluate(lambda x, y: torch.zeros_like(y) + torch.tensor([2.0, 0, 0, 0]), prompts,
                       labels, 50, 0.9, 0, 64)
    expected = ((ys - torch.tensor([2.0, 0, 0, 0]).double()).square().mean(dim=(0, 2)))
    torch.testing.assert_close(torch.tensor(shifted["error"].to_numpy()), expected)


def test_mujoco_model_trains(tmp_path) -> None:
    from iclbench.config import TrainConfig
    from iclbench.curriculum import Curriculum
    from iclbench.train import train

    task = build_task("mujoco_dynamics", D)
    spec = TrainConfig(30, 8, 1e-3, 0, "constant", 1.0, 10, 10,
                       {"start": D, "inc": 0, "interval": 1})
    model, log = train(task, ModelSpec(D, 18, 16, 1, 2, n_out=4), spec, Curriculum.fixed(D, 9), 0,
                       "mujoco_dynamics", torch.device("cpu"), progress=False)
    assert model.spec.n_out == 4 and log["loss"].notna().all()
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
