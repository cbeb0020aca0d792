"""The decoder: shapes, no future leak for every registered attention, save/load without pickle;
its CPU inference blocks (iclbench.kernels.cpu) against the textbook block."""

from __future__ import annotations

import pytest
import torch

from iclbench.attention import ATTENTION
from iclbench.kernels.cpu import CpuBlock, fast_inference, onednn_linear_available
from iclbench.model import Block, Decoder, ModelSpec, interleave, load_model, save_model
from iclbench.seeding import generator


def make(attention: str = "softmax", n_points: int = 12) -> Decoder:
    spec = ModelSpec(n_dims=4, n_positions=2 * n_points, n_embd=32, n_layer=2, n_head=2,
                     attention=attention)
    return Decoder(spec, generator=generator(0, "m")).eval()


def fast(attention: str = "softmax", n_points: int = 12) -> Decoder:
    """:func:`make`'s model with the CPU inference blocks, as the variants' inference hooks
    give it."""
    return fast_inference(make(attention, n_points))  # type: ignore[return-value]


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
    check_no_future_leak(attention, n_points)


def check_no_future_leak(attention: str, n_points: int) -> None:
    """Changing y_t and every token after x_t leaves the predictions at positions <= t unchanged
    (at inference: the CPU inference blocks)."""
    model = fast(attention, 12)
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


def _use_onednn(model: Decoder, on: bool) -> Decoder:
    for block in model.blocks:
        block.use_onednn = on
    return model


@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_inference_forward_equals_the_autograd_one(no_grad) -> None:
    """Without autograd (and without oneDNN's kernels) a block applies GELU in place and adds
    the residual into its own tensor: the same numbers, bit for bit, as the forward that
    training differentiates; the caller's inputs are left unchanged."""
    model = _use_onednn(fast(), False)
    g = generator(1, "inference")
    xs, ys = torch.randn(3, 12, 4, generator=g), torch.randn(3, 12, generator=g)
    before = xs.clone(), ys.clone()
    with_grad = model(xs, ys)
    with no_grad():
        without = model(xs, ys)
    assert torch.equal(with_grad.detach(), without)
    assert torch.equal(xs, before[0]) and torch.equal(ys, before[1])


needs_onednn = pytest.mark.skipif(not onednn_linear_available(),
                                  reason="this torch build has no oneDNN float linear layer")


def _ops_run(fn) -> set[str]:
    """The matrix-product ops of one call of ``fn``, as the profile stage counts them."""
    from iclbench.profiling import count_flops
    return set(count_flops(fn).by_op)


@needs_onednn
@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_cpu_inference_runs_onednn_and_matches_training_forward(no_grad) -> None:
    """At CPU inference the blocks run oneDNN's linear layer with GELU and the residual adds
    fused: the training forward's function to float rounding, repeatable bit for bit, the
    inputs untouched. With autograd on (training), never."""
    model = fast(n_points=64)  # a 4x-wide layer of 128 inputs: MKL and oneDNN sum differently
    g = generator(2, "inference")
    xs, ys = torch.randn(4, 64, 4, generator=g), torch.randn(4, 64, generator=g)
    before = xs.clone(), ys.clone()
    with_grad = model(xs, ys).detach()
    assert "mkldnn::_linear_pointwise" not in _ops_run(lambda: model(xs, ys))
    with no_grad():
        assert "mkldnn::_linear_pointwise" in _ops_run(lambda: model(xs, ys))
        first, second = model(xs, ys), model(xs, ys)
    torch.testing.assert_close(first, with_grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(first, second)
    assert torch.equal(xs, before[0]) and torch.equal(ys, before[1])


@needs_onednn
def test_onednn_weights_are_packed_again_when_the_weights_change() -> None:
    """The packed weights follow the model's: after load_state_dict (an in-place copy) and after
    an optimiser step, inference matches a fresh model holding the same weights."""
    model, other = fast(), fast()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator(3, "w")))
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    with torch.inference_mode():
        old = model(xs, ys)  # packs the first weights
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert torch.equal(model(xs, ys), other(xs, ys))
        assert not torch.equal(model(xs, ys), old)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(xs, ys).square().mean().backward()
    opt.step()
    with torch.inference_mode():
        fresh = fast()
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(model(xs, ys), fresh(xs, ys))


@needs_onednn
def test_onednn_weights_follow_a_fused_optimiser_between_evaluations() -> None:
    """A fused Adam step changes the weights in place without bumping their version counter:
    evaluating during training (eval, step in train mode, eval) must still see the new weights."""
    model = fast()
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    for _ in range(2):
        model.eval()
        with torch.inference_mode():
            model(xs, ys)  # packs the weights of this step
        model.train()
        model(xs, ys).square().mean().backward()
        opt.step()
    model.eval()
    fresh = fast()
    fresh.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert torch.equal(model(xs, ys), fresh.eval()(xs, ys))


@needs_onednn
def test_a_model_that_ran_onednn_can_be_deep_copied() -> None:
    """Packed weights are opaque oneDNN memory that cannot be copied: a copy packs its own."""
    import copy
    model = fast()
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    with torch.inference_mode():
        out = model(xs, ys)
        twin = copy.deepcopy(model)
        assert torch.equal(twin(xs, ys), out)


def test_too_long_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds the model's 24 positions"):
        make()(torch.randn(1, 13, 4), torch.randn(1, 13))


def test_read_in_is_drawn_like_nn_linear_with_a_zero_bias() -> None:
    """The read-in: U(-1/sqrt(d), 1/sqrt(d)) weights from the model's generator (nn.Linear's
    own, as in Garg et al.'s code), a zero bias; the other matrices keep GPT-2's N(0, 0.02)."""
    model = Decoder(ModelSpec(n_dims=16, n_positions=24, n_embd=64, n_layer=2, n_head=2),
                    generator=generator(0, "m"))
    w = model.read_in.weight
    assert w.abs().max() <= 0.25 and w.abs().max() > 0.24  # bound 1/sqrt(16), nearly reached
    assert abs(w.std().item() - 0.25 / 3**0.5) < 0.01  # a uniform's std
    assert torch.equal(model.read_in.bias, torch.zeros(64))
    assert abs(model.blocks[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    again = Decoder(model.spec, generator=generator(0, "m"))
    assert torch.equal(again.read_in.weight, w)


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


@needs_onednn
def test_onednn_inference_holds_no_more_memory_than_the_in_place_path() -> None:
    """The oneDNN forward frees what the other inference path frees (a first version kept the
    attention's q, k, v and output alive through the MLP: 8 MiB more per block at 8192 tokens)."""
    from iclbench.profiling import peak_memory
    model = fast(n_points=256)
    xs, ys = torch.randn(2, 256, 4), torch.randn(2, 256)
    peaks = {}
    with torch.inference_mode():
        for on in (False, True):
            _use_onednn(model, on)
            model(xs, ys)  # packs the weights (held by the model, not by the forward)
            peaks[on] = peak_memory(lambda: model(xs, ys), torch.device("cpu"))[0]
    assert peaks[True] <= peaks[False] * 1.01


def test_cpu_blocks_are_the_textbook_block() -> None:
    """A CPU inference block shares the block's submodules (same state dict) and computes its
    function: bit for bit with autograd (training) and without oneDNN, to float rounding with it.
    Only a model on that path holds packed weights."""
    model, plain = fast(n_points=64), make(n_points=64)
    assert all(type(b) is CpuBlock for b in model.blocks)
    assert all(type(b) is Block for b in plain.blocks)
    assert list(model.state_dict()) == list(plain.state_dict())
    xs, ys = torch.randn(3, 64, 4), torch.randn(3, 64)
    assert torch.equal(model.train()(xs, ys), plain.train()(xs, ys))
    model.eval(), plain.eval()
    with torch.no_grad():
        reference = plain(xs, ys)
        torch.testing.assert_close(model(xs, ys), reference, rtol=1e-5, atol=1e-6)
        assert torch.equal(_use_onednn(model, False)(xs, ys), reference)
    assert fast_inference(model) is model and all(type(b) is CpuBlock for b in model.blocks)


@pytest.mark.parametrize("mode", ["trained", "swapped", "finetuned"])
@pytest.mark.parametrize("variant", ["softmax", "nystrom", "int8"])
def test_every_inference_model_runs_the_fast_path(mode: str, variant: str, tmp_path) -> None:
    """Evaluation's models (trained and fine-tuned: for_inference after load_model; swapped:
    swap), the model a conversion scores while it fine-tunes (convert), and profiling's
    (build_model): CPU inference blocks, or int8 ones for int8's inference models."""
    from iclbench.kernels.int8 import Int8Block
    from iclbench.profiling import build_model
    from iclbench.variants import get_variant

    options = {"int8": {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.9,
                        "start_step": 0}}.get(variant, {})
    kind, base = get_variant(variant), make().spec
    if mode == "finetuned":
        models = [kind.convert(make(), options)]
        fast_block: type = CpuBlock  # trained from there: int8 is fake-quantized until saved
    elif mode == "swapped":
        models = [kind.swap(make(), options)]
        fast_block = Int8Block if variant == "int8" else CpuBlock
    else:
        trained = kind.prepare_training(Decoder(kind.model_spec(base, options)), options)
        kind.save(trained, tmp_path / "m.safetensors", options)
        models = [kind.for_inference(load_model(tmp_path / "m.safetensors"), options)]
        fast_block = Int8Block if variant == "int8" else CpuBlock
    if mode != "finetuned":
        models.append(build_model(variant, mode, options, base, torch.device("cpu"),
                                  torch.float32))
    for model in models:
        assert [type(b) for b in model.blocks] == [fast_block] * base.n_layer
