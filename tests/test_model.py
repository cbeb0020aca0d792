"""The decoder: shapes, no future leak for every registered attention, save/load without pickle."""

from __future__ import annotations

import pytest
import torch

from iclbench.attention import ATTENTION
from iclbench.model import Decoder, ModelSpec, interleave, load_model, save_model
from iclbench.seeding import generator


def make(attention: str = "softmax", n_points: int = 12) -> Decoder:
    spec = ModelSpec(n_dims=4, n_positions=2 * n_points, n_embd=32, n_layer=2, n_head=2,
                     attention=attention)
    return Decoder(spec, generator=generator(0, "m")).eval()


def test_interleave_order() -> None:
    xs = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    ys = torch.tensor([[10.0, 11, 12], [13, 14, 15]])
    z = interleave(xs, ys)
    assert z.shape == (2, 6, 2)
    assert torch.equal(z[:, ::2], xs)
    assert torch.equal(z[:, 1::2, 0], ys) and torch.all(z[:, 1::2, 1] == 0)


@pytest.mark.parametrize("attention", ATTENTION.names())
@pytest.mark.parametrize("n_points", [5, 12])
def test_no_future_leak(attention: str, n_points: int) -> None:
    """Changing y_t and every token after x_t leaves the predictions at positions <= t unchanged."""
    model = make(attention, 12)
    g = generator(1, "leak")
    xs, ys = torch.randn(3, n_points, 4, generator=g), torch.randn(3, n_points, generator=g)
    with torch.no_grad():
        base = model(xs, ys)
        for t in range(n_points):
            xs2, ys2 = xs.clone(), ys.clone()
            ys2[:, t:] = torch.randn(3, n_points - t, generator=g) * 10
            xs2[:, t + 1 :] = torch.randn(3, n_points - t - 1, 4, generator=g) * 10
            out = model(xs2, ys2)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
            if t + 1 < n_points:  # the test can see a leak: later outputs do change
                assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_shapes_and_backward() -> None:
    model = make().train()
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    out = model(xs, ys)
    assert out.shape == (2, 12)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_inference_forward_equals_the_autograd_one(no_grad) -> None:
    """Without autograd a block applies GELU in place and adds the residual into its own
    tensor: the same numbers, bit for bit, as the forward that training differentiates; the
    caller's inputs are left unchanged."""
    model = make()
    g = generator(1, "inference")
    xs, ys = torch.randn(3, 12, 4, generator=g), torch.randn(3, 12, generator=g)
    before = xs.clone(), ys.clone()
    with_grad = model(xs, ys)
    with no_grad():
        without = model(xs, ys)
    assert torch.equal(with_grad.detach(), without)
    assert torch.equal(xs, before[0]) and torch.equal(ys, before[1])


def test_too_long_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds the model's 24 positions"):
        make()(torch.randn(1, 13, 4), torch.randn(1, 13))


def test_same_generator_same_weights() -> None:
    a, b = make(), make()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_save_load_roundtrip(tmp_path) -> None:
    model = make()
    save_model(model, tmp_path / "m.safetensors", {"task": "x"})
    loaded = load_model(tmp_path / "m.safetensors")
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    with torch.no_grad():
        assert torch.equal(model(xs, ys), loaded(xs, ys))
    assert loaded.spec == model.spec


def test_corrupt_model_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(make(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="m.safetensors: not a valid model file"):
        load_model(path)
