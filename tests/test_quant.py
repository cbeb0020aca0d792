"""int8: Q8BERT fake quantization, conversion to real int8 kernels, storage (iclbench.variants.int8,
iclbench.kernels.int8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iclbench.model import Decoder, ModelSpec, load_model, save_model
from iclbench.kernels.int8 import (
    Int8Block,
    Int8Linear,
    check_kernel_exact,
    is_int8,
    kernel_engine,
    kernels,
    quantize_u8,
)
from iclbench.variants import get_variant
from iclbench.variants.int8 import QATLinear, QuantOptions, fake_quantize, to_int8

SPEC = ModelSpec(n_dims=5, n_positions=22, n_embd=32, n_layer=2, n_head=2)
OPTIONS = {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.9, "start_step": 0}


def _prompts(seed: int = 1, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, 11, 5, generator=g)
    return xs, xs @ torch.randn(5, generator=g)


def _qat_model(steps: int = 10, options: dict | None = None) -> Decoder:
    """A QAT decoder after a few Adam steps, so its EMA scales and weights are not the init."""
    opts = {**OPTIONS, **(options or {})}
    model = get_variant("int8").prepare_training(Decoder(SPEC, torch.Generator().manual_seed(0)),
                                                 opts)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        xs, ys = _prompts(100 + step)
        loss = (model(xs, ys) - ys).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def test_fake_quantize_equals_formula() -> None:
    # absmax 2.54 with 8 bits: step 0.02; round half to even; clamp to +-127 steps
    x = torch.tensor([0.0, 0.013, -0.031, 0.05, 1.0, -2.54, 3.0, -9.0, 0.01, 0.03])
    got = fake_quantize(x, torch.tensor(2.54), 8)
    step = 2.54 / 127
    want = torch.clamp(torch.round(x / step), -127, 127) * step
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got[6].item() == pytest.approx(2.54) and got[7].item() == pytest.approx(-2.54)
    # 4 bits: M = 7
    got4 = fake_quantize(torch.tensor([0.5, -0.49, 2.0]), torch.tensor(0.7), 4)
    torch.testing.assert_close(got4, torch.tensor([0.5, -0.5, 0.7]), rtol=0, atol=1e-6)


def test_straight_through_gradient() -> None:
    x = torch.tensor([0.3, -0.8, 0.999, 1.5, -3.0], requires_grad=True)
    fake_quantize(x, torch.tensor(1.0), 8).backward(torch.arange(1.0, 6.0))
    # unchanged inside [-1, 1] (up to half a step), zero where clipped
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]


def test_weight_scale_and_ema() -> None:
    opts = QuantOptions(8, 8, 0.5, 0)
    layer = QATLinear(4, 3, True, opts).train()
    layer(torch.full((2, 4), 2.0))
    assert layer.input_absmax.item() == 2.0  # first batch initialises the EMA
    layer(torch.full((2, 4), 4.0))
    assert layer.input_absmax.item() == 3.0  # 0.5 * 2 + 0.5 * 4
    assert int(layer.steps) == 2
    w = layer.weight.detach()
    torch.testing.assert_close(
        fake_quantize(w, w.abs().max(), 8),
        torch.round(w * 127 / w.abs().max()) * w.abs().max() / 127)


def test_start_step_delays_quantization() -> None:
    layer = QATLinear(4, 3, True, QuantOptions(8, 8, 0.9, 2)).train()
    x = torch.randn(5, 4)
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), plain)  # step 1
    torch.testing.assert_close(layer(x), plain)  # step 2
    assert not torch.equal(layer(x), plain)  # step 3: quantized


def test_options_are_checked() -> None:
    variant = get_variant("int8")
    with pytest.raises(ValueError, match="unknown option"):
        variant.check_options({**OPTIONS, "bitz": 8}, 2, 16)
    with pytest.raises(ValueError, match="missing"):
        variant.check_options({"weight_bits": 8}, 2, 16)
    with pytest.raises(ValueError, match="weight_bits"):
        variant.check_options({**OPTIONS, "weight_bits": 9}, 2, 16)


@pytest.mark.skipif(torch.cpu._is_vnni_supported(), reason="VNNI CPUs do not saturate")
def test_saturating_bits_are_rejected_without_vnni() -> None:
    with pytest.raises(ValueError, match="saturates"):
        check_kernel_exact(8, 8)
    check_kernel_exact(7, 8)
    check_kernel_exact(8, 7)


@pytest.mark.parametrize("bits", [(7, 8), (8, 7)])
def test_int8_linear_matches_fake_quant_exactly(bits: tuple[int, int]) -> None:
    """One layer: int32 accumulation of the same integers, so only float rounding differs."""
    wb, ab = bits
    layer = QATLinear(32, 48, True, QuantOptions(wb, ab, 0.9, 0)).train()
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(3)) * 2
    layer(x * 0.8)  # EMA below this x's max: some inputs are clipped
    layer.eval()
    q = Int8Linear.from_float(layer.weight, layer.bias, wb, ab, layer.input_absmax)
    assert q.weight.dtype == torch.int8 and not q.dynamic
    with torch.no_grad():
        want = layer(x)
        got = q(x)
    # the kernel clips negative inputs at -128 steps where fake quantization clips at -127
    keep = (x >= -layer.input_absmax).all(dim=1)
    torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 7])
def test_quantize_u8_equals_formula(bits: int) -> None:
    """uint8 = clamp(round(x / step), -M, M) + 2^(bits-1), rounding half to even (8 bits: through
    int8 and a flipped sign bit)."""
    step, m = 0.5, 2 ** (bits - 1) - 1
    x = torch.tensor([0.0, 0.25, 0.75, -0.25, -0.75, 1.3, -1.3, 63.4, -63.4, 1e4, -1e4])
    want = torch.clamp(torch.round(x / step), -m, m) + 2 ** (bits - 1)
    got = quantize_u8(x, step, bits)
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), want.long())
    assert got[1] == got[0] == 2 ** (bits - 1) and got[2] == 2 ** (bits - 1) + 2  # half to even


def test_fused_blocks_match_the_unfused_kernels() -> None:
    """The QAT model's blocks take oneDNN's fused path on CPU (quantized inputs, GELU and
    requantization in the first MLP layer, residual adds in the kernels); it computes what the
    block computes with the per-layer kernels, to float rounding and one-step flips, and leaves
    its input unchanged."""
    model = to_int8(_qat_model(), QuantOptions(**OPTIONS))
    blocks = [b for b in model.blocks if isinstance(b, Int8Block)]
    assert len(blocks) == SPEC.n_layer
    xs, ys = _prompts(3, 32)
    x = torch.randn(32, 22, SPEC.n_embd, generator=torch.Generator().manual_seed(2))
    kept = x.clone()
    if not blocks[0].fused(x):
        pytest.skip("this torch build has no oneDNN int8 linear layer")
    assert "oneDNN" in kernels(model)
    with torch.no_grad():
        fused = [b(x) for b in blocks]
        assert torch.equal(x, kept)
        model_fused = model(xs, ys)
        for b in blocks:
            b.use_onednn = False  # the per-layer path
        assert "oneDNN" not in kernels(model)
        plain = [b(x) for b in blocks]
        model_plain = model(xs, ys)
    for a, b in zip(fused, plain, strict=True):
        diff = (a - b).abs()
        assert diff.max() <= 0.02 * b.abs().max() and diff.mean() <= 1e-3 * b.abs().max()
    scale = model_plain.abs().max()
    assert (model_fused - model_plain).abs().max() <= 0.02 * scale


def test_converted_model_matches_fake_quant() -> None:
    """Whole model: int8 kernels vs fake quantization; stated tolerance.

    Each layer matches to float rounding, but a rounding-boundary input that flips by one step in
    one layer propagates; we require the int8-vs-fake difference to be at most 2% of the output
    scale (max) and 0.2% (mean), and 10x smaller than the quantization error itself.
    """
    model = _qat_model()
    xs, ys = _prompts(7, 64)
    with torch.no_grad():
        fake = model(xs, ys)
        for m in model.modules():
            if hasattr(m, "steps"):
                m._steps = 0  # steps <= start_step: plain float forward
        exact = model(xs, ys)
        for m in model.modules():
            if hasattr(m, "steps"):
                m._steps = int(m.steps)
        int8 = to_int8(model, QuantOptions(**OPTIONS))(xs, ys)
    scale = fake.abs().max()
    diff = (int8 - fake).abs()
    assert diff.max() <= 0.02 * scale
    assert diff.mean() <= 0.002 * scale
    assert diff.mean() * 10 <= (exact - fake).abs().mean()


@pytest.mark.parametrize("mode", ["trained", "swapped"])
def test_int8_model_is_causal(mode: str) -> None:
    """Changing later points never changes earlier predictions (static and per-token scales)."""
    variant = get_variant("int8")
    if mode == "trained":
        model = variant.for_inference(_qat_model(steps=3), OPTIONS)
    else:
        model = variant.swap(Decoder(SPEC, torch.Generator().manual_seed(0)).eval(), OPTIONS)
    assert is_int8(model)
    xs, ys = _prompts(5, 8)
    xs2, ys2 = xs.clone(), ys.clone()
    xs2[:, 6:] = 10 * torch.randn_like(xs2[:, 6:])  # large: would move a per-tensor scale
    ys2[:, 6:] = -50.0
    with torch.no_grad():
        a, b = model(xs, ys), model(xs2, ys2)
        # batch independence: one prompt alone gives the same prediction as in the batch
        alone = model(xs[:1], ys[:1])
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    torch.testing.assert_close(alone, a[:1], rtol=0, atol=1e-6)


def test_save_load_round_trip_and_size(tmp_path: Path) -> None:
    model = _qat_model(steps=3)
    xs, ys = _prompts(9)
    float_path, int8_path = tmp_path / "float.safetensors", tmp_path / "int8.safetensors"
    save_model(Decoder(SPEC), float_path)  # the same shape in float32
    get_variant("int8").save(model, int8_path, OPTIONS, {"task": "linear_regression"})
    loaded = load_model(int8_path)
    assert is_int8(loaded)
    assert loaded.blocks[0].attn.c_attn.weight.dtype == torch.int8
    with torch.no_grad():
        torch.testing.assert_close(loaded(xs, ys), model(xs, ys), rtol=0, atol=0)
    # float32 -> int8 weights; biases, LayerNorms and scales stay float32
    ratio = float_path.stat().st_size / int8_path.stat().st_size
    assert 3.0 <= ratio <= 4.2, ratio
    # the float path is unchanged
    assert not is_int8(load_model(float_path))


def test_qat_training_step_and_determinism() -> None:
    a, b = _qat_model(steps=3), _qat_model(steps=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    qat = [m for m in a.modules() if isinstance(m, QATLinear)]
    assert len(qat) == 2 + 4 * SPEC.n_layer  # read-in, read-out, 4 per block
    assert all(int(m.steps) == 3 and m.input_absmax > 0 for m in qat)
    # gradients reach every parameter through the fake quantizers
    model = _qat_model(steps=0).train()
    xs, ys = _prompts()
    (model(xs, ys) - ys).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_engine_is_reported() -> None:
    assert kernel_engine() in torch.backends.quantized.supported_engines


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_model_on_cuda_matches_cpu() -> None:
    """Off the CPU the int8 layers simulate the kernel with float matmuls: same numbers."""
    model = get_variant("int8").for_inference(_qat_model(steps=3), OPTIONS)
    xs, ys = _prompts(4, 32)
    with torch.no_grad():
        cpu = model(xs, ys)
        gpu = model.to("cuda")(xs.cuda(), ys.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=0.02 * float(cpu.abs().max()))
