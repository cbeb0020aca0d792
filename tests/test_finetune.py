"""Fine-tuned conversion: a variant put into a trained softmax model, then trained further."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from iclbench.jobs import CONVERSION, CURVE_SEED, finetune_model
from iclbench.evaluate import make_prompts
from iclbench.model import Decoder, ModelSpec, load_model, save_model
from iclbench.variants.int8 import is_int8
from iclbench.results import read_parquet
from iclbench.seeding import generator
from iclbench.tasks import build_task
from iclbench.variants import get_variant

OPTIONS = {
    "nystrom": {"landmarks_source": "segments", "landmarks": 4, "pinv_iterations": 6,
                "conv_kernel": 0},
    "combiner": {"block_size": None, "log_size_bias": False},
    "relu": {},
    "int8": {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.9, "start_step": 0},
}


@pytest.fixture
def softmax_file(tmp_path):
    spec = ModelSpec(n_dims=3, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = Decoder(spec, generator=generator(0, "test-finetune"))
    path = tmp_path / "softmax.safetensors"
    save_model(model, path)
    return path


@pytest.mark.parametrize("variant", sorted(OPTIONS))
def test_a_conversion_starts_from_the_softmax_weights(softmax_file, variant: str) -> None:
    softmax = load_model(softmax_file)
    before = {k: v.clone() for k, v in softmax.state_dict().items()}
    model = get_variant(variant).convert(load_model(softmax_file), OPTIONS[variant])
    params = dict(model.named_parameters())
    # every weight of the softmax model is there, equal, before the first step
    for name, value in before.items():
        assert name in params or name in dict(model.named_buffers()), name
        got = params.get(name, dict(model.named_buffers()).get(name))
        assert torch.equal(got, value), name
    if variant == "int8":
        assert model.spec.attention == "softmax" and not is_int8(model)
        assert any("fake" in type(m).__name__.lower() or "qat" in type(m).__name__.lower()
                   or hasattr(m, "input_absmax") for m in model.modules())
    else:
        assert model.spec.attention == variant
        assert all(type(b.attn.core).__name__.lower().startswith(variant[:4]) for b in model.blocks)


def test_a_converted_model_saved_loads_back_as_its_variant(softmax_file, tmp_path) -> None:
    model = get_variant("combiner").convert(load_model(softmax_file), OPTIONS["combiner"])
    save_model(model, tmp_path / "c.safetensors")
    back = load_model(tmp_path / "c.safetensors")
    assert back.spec.attention == "combiner"
    xs = torch.randn(2, 8, 3, generator=generator(1, "x"))
    ys = torch.randn(2, 8, generator=generator(1, "y"))
    with torch.inference_mode():
        assert torch.equal(model.eval()(xs, ys), back(xs, ys))


def params(steps: int, variant: str) -> dict:
    return {
        "task": {"n_points": 8, "points_curriculum": {"start": 4, "inc": 1, "interval": 10},
                 "options": {}},
        "n_dims": 3,
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0,
                  "lr_schedule": "cosine", "grad_clip": 1.0, "log_every": 2,
                  "checkpoint_every": 2, "dims_curriculum": {"start": 2, "inc": 1, "interval": 5}},
        "curve": {"curve_every": 2, "curve_prompts": 16},
        "variant_options": copy.deepcopy(OPTIONS[variant]),
        "device": "cpu",
    }


def test_finetune_model_writes_the_variant_its_log_and_its_curve(softmax_file, tmp_path) -> None:
    out = {n: tmp_path / n for n in ("m.safetensors", "c.json", "log.parquet", "curve.parquet")}
    finetune_model("linear_regression", "combiner", 0, params(4, "combiner"), 1, softmax_file,
                   out["m.safetensors"], out["c.json"], out["log.parquet"], out["curve.parquet"],
                   tmp_path / "ckpt")
    model = load_model(out["m.safetensors"])
    assert model.spec.attention == "combiner"
    softmax = load_model(softmax_file)
    changed = [k for k, v in softmax.state_dict().items()
               if not torch.equal(v, model.state_dict()[k])]
    assert changed  # it trained
    log = read_parquet(out["log.parquet"])
    assert list(log["step"]) == [2, 4] and (log["active_dims"] == 3).all()
    assert (log["n_points"] == 8).all()  # full size from the first step: no curriculum
    curve = read_parquet(out["curve.parquet"])
    assert list(curve.columns) == list(CONVERSION)
    assert sorted(curve["step"].unique()) == [0, 2, 4]
    # step 0 is the swapped model: the variant just put in, scored on the curve's prompts
    task = build_task("linear_regression", 3, {})
    prompts = make_prompts(task, "linear_regression", 16, 8, CURVE_SEED)
    swapped = get_variant("combiner").swap(load_model(softmax_file), OPTIONS["combiner"])
    with torch.inference_mode():
        err = ((swapped(prompts.xs[0], prompts.ys[0]) - prompts.ys[0]).square().mean(0)
               / task.normaliser)
    at0 = curve[curve["step"] == 0].sort_values("n_examples")["error"].to_numpy()
    assert at0 == pytest.approx(err.double().numpy(), rel=1e-5)
    assert not (tmp_path / "ckpt").exists()  # removed once the outputs are written


def test_an_int8_conversion_is_saved_as_an_int8_model(softmax_file, tmp_path) -> None:
    out = [tmp_path / n for n in ("m.safetensors", "c.json", "log.parquet", "curve.parquet")]
    finetune_model("linear_regression", "int8", 0, params(2, "int8"), 1, softmax_file, *out)
    assert is_int8(load_model(out[0]))
    assert isinstance(pd.read_parquet(out[3]), pd.DataFrame)
