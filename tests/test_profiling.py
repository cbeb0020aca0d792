"""Profiling: measured FLOPs against analytic oracles, sub-quadratic growth, complete rows, figures.

The oracles are plain formulas from the model's shape (SPEC section 2) with the conventions of
:mod:`iclbench.profiling`: a multiply-add is 2 FLOPs; causal fused attention visits T(T+1)/2
(query, key) pairs per head; explicit matmuls count the full T x T square; int8 multiply-adds are
2 int8 operations each, counted apart from the FLOPs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from iclbench.analysis import crossovers, fitted_exponent, total_ops
from iclbench.attention import ATTENTION, _blocks, build_attention
from iclbench.config import ConfigError, ProfileConfig, check
from iclbench.figures import FIGURES
from iclbench.jobs import aggregate_profile, profile_model
from iclbench.kernels.int8 import Int8Linear
from iclbench.model import ModelSpec
from iclbench.profiling import (
    FLOP_FORMULAS, INT8_OPS, build_model, count_flops, warm_up, profile_variant,
)
from iclbench.results import PROFILE, read_parquet
from iclbench.variants import EXTRA_VARIANTS

SPEC = ModelSpec(n_dims=3, n_positions=512, n_embd=16, n_layer=2, n_head=2)
BATCH = 2


def _linear_flops(s: ModelSpec, T: int, B: int) -> int:
    """Read-in (d -> C) at every token, per layer qkv (3C^2) + out (C^2) + MLP (8C^2) at every
    token, read-out (C -> 1) at the T/2 x-tokens; 2 FLOPs per multiply-add."""
    C = s.n_embd
    return 2 * B * T * s.n_dims * C + s.n_layer * 24 * B * T * C * C + 2 * B * (T // 2) * C


def softmax_oracle(s: ModelSpec, T: int, B: int) -> int:
    # causal SDPA: scores and PV over the T(T+1)/2 visible pairs, per head: 2 * 2 * pairs * hs
    return _linear_flops(s, T, B) + s.n_layer * 2 * B * s.n_embd * T * (T + 1)


def relu_oracle(s: ModelSpec, T: int, B: int) -> int:
    # same matmuls as softmax, written out: q @ k^T and A @ v for each block of QUERY_BLOCK
    # queries against the keys up to its last query (the full square up to one block)
    from iclbench.attention.relu import QUERY_BLOCK

    pairs = sum((min(i0 + QUERY_BLOCK, T) - i0) * min(i0 + QUERY_BLOCK, T)
                for i0 in range(0, T, QUERY_BLOCK))
    return _linear_flops(s, T, B) + s.n_layer * 4 * B * s.n_embd * pairs


def int8_oracle(s: ModelSpec, T: int, B: int) -> int:
    # FLOPs: only the attention stays float (causal SDPA); the linear layers are int8
    return softmax_oracle(s, T, B) - _linear_flops(s, T, B)


def int8_ops_oracle(s: ModelSpec, T: int, B: int) -> int:
    # int8 operations: every linear layer of the model (2 per int8 multiply-add)
    return _linear_flops(s, T, B)


def pinv_macs(m: int, iterations: int) -> int:
    """Multiply-adds of one m x m iterative pseudo-inverse: 4 m x m products per iteration (AZ,
    then the three right-to-left products of the cubic polynomial)."""
    return iterations * 4 * m**3


def nystrom_segments_core(T: int, n: int, hs: int, o: dict) -> int:
    """Multiply-adds x 2 of design (a) for ``n`` = batch x heads: ``m = ceil(T / s)`` segments of ``s`` tokens.

    Per head: landmark logits against every (padded) key ``ql K^T`` (m x hs x ms) and the per-
    segment sums ``e V`` (m x m x s x hs); the prefix combination of those sums for numerator
    (m^3 hs) and denominator (m^3); ``ql kl^T`` (m^2 hs); m pseudo-inverses (one per prefix) and
    their product with the prefix values (m^3 hs); per segment the exact in-segment scores and PV
    (2 s^2 hs) and the summary scores and values (2 s m hs).
    """
    s = math.ceil(T / min(o["landmarks"], T))
    m = math.ceil(T / s)
    per_head = (m * hs * m * s + m * m * s * hs + m**3 * hs + m**3 + m * m * hs
                + m * pinv_macs(m, o["pinv_iterations"]) + m**3 * hs
                + m * (2 * s * s * hs + 2 * s * m * hs))
    return 2 * n * per_head + conv_flops(T, n, hs, o)


def conv_flops(T: int, n: int, hs: int, o: dict) -> int:
    """The optional depthwise conv skip on V: ``conv_kernel`` multiply-adds per value entry."""
    return 2 * n * T * hs * o["conv_kernel"]


def learned_spans(Bsz: int, H: int, n_chunks: int, per_chunk: int) -> list[tuple[int, int]]:
    """(rows, chunks) of each span of design (b): the batch and then the chunks are cut so that a
    span's intermediates (rows x chunks x per_chunk numbers) fit WORK_ELEMENTS, with at most
    MAX_SPAN_CHUNKS chunks (the rule stated in
    iclbench.attention._nystrom_learned.learned_spans)."""
    from iclbench.attention._nystrom_learned import MAX_SPAN_CHUNKS

    budget = _blocks.WORK_ELEMENTS
    rows = max(1, budget // (n_chunks * per_chunk))
    spans = []
    for b0 in range(0, Bsz, rows):
        b = min(rows, Bsz - b0)
        k = min(MAX_SPAN_CHUNKS, max(1, budget // (b * per_chunk)))
        spans += [(b, min(k, n_chunks - c0)) for c0 in range(0, n_chunks, k)]
    return spans


def nystrom_learned_core(T: int, Bsz: int, H: int, hs: int, o: dict,
                         first_forward: bool = False) -> int:
    """Design (b): ``m`` learned landmarks, chunks of ``C = min(chunk, T)``, ``Tp`` = T rounded up
    to whole chunks.

    Per head, once per model (not per forward without autograd: the landmarks' pseudo-inverse
    is cached, and the profile stage counts a second forward): ``Ql Kl^T`` (m^2 hs) and its
    pseudo-inverse, counted only with ``first_forward``. Per (padded) position: its key
    against the landmarks (m hs), its share of the chunk's landmark numerators and sums of
    weights ``e^T [V 1]`` (m (hs + 1)),
    its query against the landmarks (m hs) times ``pinv`` (m^2), the within-chunk weights
    ``G e^T`` (C m) and their PV (C hs), and the carried numerators read by the position (m hs).
    Per span of K chunks: the carried numerators and denominators of K + 1 chunk starts from K
    chunk sums (m (K + 1) K (hs + 1)). Random inputs never take the exact path of a clamped
    chunk, which these counts leave out.
    """
    m, C = o["landmarks"], min(o["chunk"], T)
    nc = math.ceil(T / C)
    once = H * (m * m * hs + pinv_macs(m, o["pinv_iterations"])) if first_forward else 0
    per_position = 4 * m * hs + m + m * m + C * m + C * hs
    # the span's memory per position and head, as stated in span_numbers' docstring
    numbers = C + 3 * hs // 2 + 1 + m + math.ceil(3 * m * (hs + 1) / (2 * C))
    carry = sum(b * H * m * (k + 1) * k * (hs + 1)
                for b, k in learned_spans(Bsz, H, nc, H * C * numbers))
    return 2 * (once + Bsz * H * nc * C * per_position + carry) + conv_flops(T, Bsz * H, hs, o)


def combiner_core(T: int, n: int, hs: int, o: dict) -> int:
    """Combiner-Fixed for ``n`` = batch x heads, blocks of ``s`` (sqrt(T), even, by default).

    Per block: the max-pooled query's scores and the summary value (2 s hs), the exact in-block
    scores and PV (2 s^2 hs), and every query's scores against all nb summary keys and the
    summary values (2 s nb hs; padded blocks included, masked afterwards).
    """
    s = o["block_size"] or max(2, 2 * round(math.sqrt(T) / 2))
    nb = math.ceil(T / s)
    return 2 * n * nb * (2 * s * hs + 2 * s * s * hs + 2 * s * nb * hs)


def core_oracle(core: Callable[[int, int, int, int, dict], int], name: str, mode: str
                ) -> Callable[[ModelSpec, int, int], int]:
    def oracle(s: ModelSpec, T: int, B: int) -> int:
        hs = s.n_embd // s.n_head
        return _linear_flops(s, T, B) + s.n_layer * core(T, B, s.n_head, hs, options(name, mode))

    return oracle


def _per_head(core: Callable[[int, int, int, dict], int]) -> Callable[..., int]:
    return lambda T, B, H, hs, o: core(T, B * H, hs, o)


#: (variant, mode) -> forward FLOPs of the whole model at T tokens and batch B, with the variant's
#: options of config/smoke.yaml; add one per merged variant
ORACLES: dict[tuple[str, str], Callable[[ModelSpec, int, int], int]] = {
    **{(n, mode): oracle for n, oracle in (("softmax", softmax_oracle), ("relu", relu_oracle),
                                           ("int8", int8_oracle))
       for mode in ("trained", "swapped")},
    ("nystrom", "trained"): core_oracle(nystrom_learned_core, "nystrom", "trained"),
    ("nystrom", "swapped"): core_oracle(_per_head(nystrom_segments_core), "nystrom", "swapped"),
    **{("combiner", mode): core_oracle(_per_head(combiner_core), "combiner", mode)
       for mode in ("trained", "swapped")},
}


#: (variant, mode) -> forward int8 operations; 0 for any variant not named
INT8_ORACLES: dict[tuple[str, str], Callable[[ModelSpec, int, int], int]] = {
    ("int8", mode): int8_ops_oracle for mode in ("trained", "swapped")}


def options(name: str, mode: str = "trained") -> dict:
    """The variant's options as config/smoke.yaml states them for ``mode`` ({} where it names
    none)."""
    import yaml

    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/smoke.yaml").read_text())
    return dict(smoke["variants" if mode == "trained" else "swapped"].get(name) or {})


def registered(name: str) -> bool:
    return name in ATTENTION or name in EXTRA_VARIANTS


def all_variants() -> list[str]:
    return sorted({*ATTENTION.names(), *EXTRA_VARIANTS.names()})


@pytest.mark.parametrize("tokens", [64, 256, 500])  # 500: relu in 2 query blocks
@pytest.mark.parametrize(("name", "mode"), sorted(ORACLES))
def test_flops_match_oracle(name: str, mode: str, tokens: int) -> None:
    if not registered(name):
        pytest.skip(f"variant {name!r} is not registered in this checkout")
    model = build_model(name, mode, options(name, mode), SPEC, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(BATCH, tokens // 2, SPEC.n_dims, generator=g)
    ys = torch.randn(BATCH, tokens // 2, generator=g)
    with torch.inference_mode():
        model(xs, ys)  # what a model does once (see profile_variant)
        count = count_flops(lambda: model(xs, ys))
    assert count.uncounted == ()
    assert count.flops == ORACLES[name, mode](SPEC, tokens, BATCH), count.by_op
    int8_ops = INT8_ORACLES.get((name, mode), lambda *_: 0)(SPEC, tokens, BATCH)
    assert count.int8_ops == int8_ops, count.by_op
    assert count.total == count.flops + count.int8_ops


@pytest.mark.parametrize("mode", ["trained", "swapped"])  # oneDNN blocks; fbgemm per layer
def test_int8_ops_are_its_linear_layers_and_leave_the_flops(mode: str) -> None:
    """int8's int8_ops are 2 x in x out x rows of each of its int8 linear layers (read-in and the
    blocks' layers at every token, read-out at the x tokens), and exactly those are missing from
    its FLOPs next to softmax's; a float model counts no int8 operations."""
    if not registered("int8"):
        pytest.skip("variant 'int8' is not registered in this checkout")
    tokens = 64
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(BATCH, tokens // 2, SPEC.n_dims, generator=g)
    ys = torch.randn(BATCH, tokens // 2, generator=g)
    counts, models = {}, {}
    for name in ("softmax", "int8"):
        models[name] = build_model(name, mode, options(name, mode), SPEC, torch.device("cpu"),
                                   torch.float32)
        with torch.inference_mode():
            models[name](xs, ys)
            counts[name] = count_flops(lambda: models[name](xs, ys))
    layers = {n: m for n, m in models["int8"].named_modules() if isinstance(m, Int8Linear)}
    blocks = [f"blocks.{i}.{layer}" for i in range(SPEC.n_layer)
              for layer in ("attn.c_attn", "attn.c_proj", "mlp.0", "mlp.2")]
    assert set(layers) == {"read_in", *blocks, "read_out"}
    assert not any(isinstance(m, torch.nn.Linear) for m in models["int8"].modules())
    rows = {n: BATCH * (tokens // 2 if n == "read_out" else tokens) for n in layers}
    expected = sum(2 * m.in_features * m.out_features * rows[n] for n, m in layers.items())
    assert counts["int8"].int8_ops == expected > 0
    assert counts["softmax"].int8_ops == 0
    assert counts["softmax"].flops - counts["int8"].flops == expected
    assert counts["int8"].total == counts["softmax"].total


def test_nystrom_learned_first_forward_also_counts_the_pseudo_inverse() -> None:
    opts = options("nystrom", "trained")
    assert opts["landmarks_source"] == "learned"
    model = build_model("nystrom", "trained", opts, SPEC, torch.device("cpu"), torch.float32)
    xs, ys = torch.randn(BATCH, 32, SPEC.n_dims), torch.randn(BATCH, 32)
    with torch.inference_mode():
        first, second = (count_flops(lambda: model(xs, ys)).total for _ in range(2))
    hs = SPEC.n_embd // SPEC.n_head
    once = SPEC.n_layer * (nystrom_learned_core(64, BATCH, SPEC.n_head, hs, opts, True)
                           - nystrom_learned_core(64, BATCH, SPEC.n_head, hs, opts))
    assert once > 0 and first - second == once


def test_causal_sdpa_is_counted_as_computed() -> None:
    """torch 2.13 counts 0 for SDPA on the CPU; ours counts the visible pairs (all if not causal)."""
    B, h, T, hs = 2, 3, 40, 8
    q = torch.randn(B, h, T, hs)
    causal = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    full = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert causal.total == 2 * B * h * (T * (T + 1) // 2) * 2 * hs
    assert full.total == 2 * B * h * T * T * 2 * hs


def test_int8_dynamic_linear_has_a_formula() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(12, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic is deprecated in favour of torchao
        qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
    x = torch.randn(3, 7, 12)
    count = count_flops(lambda: qmodel(x))
    assert count.uncounted == ()
    assert count.int8_ops == 2 * 3 * 7 * 12 * 20 and count.flops == 0


def test_int_mm_counts_int8_ops_and_float_matmuls_flops() -> None:
    a = torch.randint(-8, 8, (32, 16), dtype=torch.int8)
    b = torch.randint(-8, 8, (16, 24), dtype=torch.int8)
    count = count_flops(lambda: (torch._int_mm(a, b), a.float() @ b.float()))
    assert count.uncounted == ()
    assert count.int8_ops == 2 * 32 * 16 * 24 and count.flops == 2 * 32 * 16 * 24
    assert "aten::_int_mm" in INT8_OPS and "aten::mm" not in INT8_OPS


@torch.library.custom_op("iclbench_test::mystery_mm", mutates_args=())
def _mystery_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def test_unknown_op_warns_and_a_formula_fixes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    with pytest.warns(UserWarning, match="iclbench_test::mystery_mm has no FLOP formula"):
        count = count_flops(lambda: _mystery_mm(a, b))
    assert count.uncounted == ("iclbench_test::mystery_mm",)
    monkeypatch.setitem(FLOP_FORMULAS, "iclbench_test::mystery_mm",
                        lambda a, b, out_val=None: 2 * a.shape[0] * a.shape[1] * b.shape[1])
    count = count_flops(lambda: _mystery_mm(a, b))
    assert count.uncounted == () and count.total == 2 * 4 * 5 * 6


def _attention_flops(name: str, tokens: int, opts: dict | None = None) -> int:
    n_head, head_dim = 2, 16
    attention = build_attention(name, n_head, head_dim, opts).eval()
    q, k, v = (torch.randn(1, n_head, tokens, head_dim) for _ in range(3))
    with torch.inference_mode():
        attention(q, k, v)  # what it does once (the learned landmarks' pseudo-inverse)
        return count_flops(lambda: attention(q, k, v)).total


LENGTHS = [512, 1024, 2048, 4096]


def test_softmax_flops_grow_quadratically() -> None:
    """The control for the next test: exact causal attention has exponent ~2."""
    assert fitted_exponent(LENGTHS, [_attention_flops("softmax", t) for t in LENGTHS]) > 1.9


@pytest.mark.parametrize("name", [n for n in ATTENTION.names() if ATTENTION.get(n).subquadratic]
                         or [pytest.param(None, marks=pytest.mark.skip(
                             reason="no attention variant flagged subquadratic is registered"))])
def test_subquadratic_flops(name: str) -> None:
    flops = [_attention_flops(name, t) for t in LENGTHS]
    assert fitted_exponent(LENGTHS, flops) < 1.8


@pytest.mark.parametrize(("name", "opts", "low", "high"), [
    # linear: every term but the constant m x m pseudo-inverse is proportional to T
    ("nystrom", {"landmarks_source": "learned", "landmarks": 16, "chunk": 16}, 0.9, 1.05),
    # T sqrt(T): s^2 hs per block and s nb hs summary terms with s ~ sqrt(T), plus linear terms
    ("combiner", {"block_size": None}, 1.3, 1.5),
])
def test_flop_exponents(name: str, opts: dict, low: float, high: float) -> None:
    """The fitted FLOP exponent over 512..4096 tokens, checked against the oracle too."""
    flops = [_attention_flops(name, t, opts) for t in LENGTHS]
    full = {**ATTENTION.get(name).options, **opts}
    core = {"nystrom": lambda T: nystrom_learned_core(T, 1, 2, 16, full),
            "combiner": lambda T: combiner_core(T, 2, 16, full)}[name]
    assert flops == [core(t) for t in LENGTHS]
    exponent = fitted_exponent(LENGTHS, flops)
    print(f"{name} {opts}: FLOP exponent {exponent:.3f}")
    assert low < exponent < high


def _tiny_params(smoke_config: dict) -> dict:
    return {"profile": smoke_config["profile"], "n_dims": smoke_config["n_dims"],
            "model": smoke_config["model"],
            "train_tokens": [2 * t["n_points"] for t in smoke_config["tasks"].values()]}


def test_rows_complete_for_every_variant(smoke_config: dict, tmp_path: Path) -> None:
    """Every registered variant, trained and swapped, in a tiny config: one finite row per point."""
    names = all_variants()
    smoke_config["variants"] = {n: options(n, "trained") for n in names}
    smoke_config["swapped"] = {n: options(n, "swapped") for n in names}
    check(smoke_config)
    params = _tiny_params(smoke_config)
    grid = ProfileConfig.from_dict(params["profile"], params["train_tokens"]).grid()
    outputs = []
    for mode in ("trained", "swapped"):
        for name in names:
            out = tmp_path / f"{name}-{mode}.parquet"
            profile_model(name, mode, {**params, "variant_options": options(name, mode)}, 1,
                          out)
            outputs.append(out)
    aggregate_profile(outputs, tmp_path / "profile.parquet")
    df = read_parquet(tmp_path / "profile.parquet")
    assert list(df.columns) == list(PROFILE)
    for (name, mode), g in df.groupby(["model", "mode"]):
        assert sorted(zip(g["batch_size"], g["context_tokens"])) == sorted(grid), (name, mode)
    assert len(df) == 2 * len(names) * len(grid)
    assert np.isfinite(df["latency_s"]).all() and (df["latency_s"] > 0).all()
    assert np.isfinite(df["softmax_latency_s"]).all() and (df["softmax_latency_s"] > 0).all()
    own = df[(df["model"] == "softmax") & (df["mode"] == "trained")]
    assert (own["softmax_latency_s"] == own["latency_s"]).all()
    assert np.isfinite(df["latency_iqr_s"]).all() and (df["latency_iqr_s"] >= 0).all()
    assert (df["flops"] > 0).all() and (df["peak_mem_bytes"] > 0).all()
    int8 = df["model"] == "int8"
    assert (df.loc[~int8, "int8_ops"] == 0).all() and (df.loc[int8, "int8_ops"] > 0).all()
    # int8 moves its linear layers' multiply-adds from FLOPs to int8 operations, all else equal
    soft = df[df["model"] == "softmax"].set_index(["mode", "batch_size", "context_tokens"])
    mine = df[int8].set_index(["mode", "batch_size", "context_tokens"])
    assert (total_ops(mine) == soft.loc[mine.index, "flops"]).all()
    assert (mine["flops"] < soft.loc[mine.index, "flops"]).all()
    assert (df["n_timed"] >= smoke_config["profile"]["replicates"]).all()
    assert (df["threads"] == 1).all() and (df["uncounted_ops"] == "").all()
    assert set(df["context_tokens"]) >= set(params["train_tokens"])


def test_warm_up_calls_at_least_once_and_until_the_time_is_spent() -> None:
    calls: list[float] = []
    assert warm_up(lambda: calls.append(time.perf_counter()), 0.0) == 1 and len(calls) == 1
    start = time.perf_counter()
    n = warm_up(lambda: calls.append(time.perf_counter()), 0.02)
    assert n == len(calls) - 1 >= 1
    assert calls[-1] - start >= 0.0 and time.perf_counter() - start >= 0.02


def test_grid_caps_batch_tokens_but_keeps_every_length() -> None:
    spec = ProfileConfig.from_dict({"context_tokens": [128, 8192], "batch_sizes": [64, 1],
                                    "max_batch_tokens": 8192, "min_run_time": 0.1,
                                    "replicates": 3, "warmup": 0, "dtype": "float32",
                                    "device": "cpu"}, [22])
    assert spec.grid() == [(1, 22), (64, 22), (1, 128), (64, 128), (1, 8192)]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("context_tokens", [33], "profile.context_tokens: [33] odd"),
    ("device", "tpu", "profile.device: 'tpu' is not a torch device"),
])
def test_bad_profile_config_names_the_key(smoke_config: dict, key: str, value: object,
                                          message: str) -> None:
    smoke_config["profile"][key] = value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(smoke_config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_profile_synchronises_and_measures_memory() -> None:
    spec = ProfileConfig.from_dict({"context_tokens": [64, 256], "batch_sizes": [1],
                                    "max_batch_tokens": 256, "min_run_time": 0.05,
                                    "replicates": 3, "warmup": 0.2, "dtype": "float32",
                                    "device": "cuda"})
    df = profile_variant("softmax", "trained", {}, SPEC, spec, torch.device("cuda"), 1)
    assert (df["device"].str.startswith("cuda")).all()
    assert (df["mem_method"] == "cuda_max_memory_allocated").all()
    assert (df["peak_mem_bytes"] > 0).all() and (df["latency_s"] > 0).all()
    assert (df["flops"] == [softmax_oracle(SPEC, t, 1) for t in (64, 256)]).all()


def _synthetic_profile() -> pd.DataFrame:
    rows = []
    for t in [128, 256, 512, 1024, 2048]:
        for model, mode, lat, fl in [("softmax", "trained", 1e-8 * t * t, 2.0 * t * t),
                                     ("fast", "swapped", 4e-6 * t, 800.0 * t)]:
            rows.append({"model": model, "mode": mode, "context_tokens": t, "batch_size": 1,
                         "device": "cpu", "dtype": "float32", "threads": 2, "flops": int(fl),
                         "int8_ops": 0,
                         "latency_s": lat, "latency_iqr_s": lat / 10, "n_timed": 5,
                         "softmax_latency_s": 1e-8 * t * t,
                         "peak_mem_bytes": 1, "mem_method": "x", "uncounted_ops": "",
                         "n_dims": 3, "n_embd": 16, "n_layer": 1, "n_head": 2,
                         "torch_version": torch.__version__})
    return pd.DataFrame(rows).astype(PROFILE)


def test_crossover_is_where_the_variant_becomes_faster() -> None:
    # 1e-8 t^2 = 4e-6 t  <=>  t = 400
    row = crossovers(_synthetic_profile(), batch_size=1).iloc[0]
    assert (row["model"], row["mode"]) == ("fast", "swapped")
    assert math.isclose(row["crossover_tokens"], 400.0, rel_tol=1e-6)
    assert math.isclose(row["speedup_at_longest"], 1e-8 * 2048 / 4e-6)
    assert math.isclose(row["flop_ratio_at_longest"], 2.0 * 2048 / 800.0, rel_tol=1e-3)
    assert row["ops_ratio_at_longest"] == row["flop_ratio_at_longest"]  # no int8 operations


def test_flop_ratio_is_floating_point_and_ops_ratio_adds_int8() -> None:
    """A model that moved most of softmax's work to int8: its FLOP ratio counts the float rest,
    its operations ratio every operation (1 where it only changed what the work runs in)."""
    prof = _synthetic_profile()
    fast = prof["model"] == "fast"
    prof.loc[fast, "flops"] = prof.loc[~fast, "flops"].to_numpy() // 4
    prof.loc[fast, "int8_ops"] = prof.loc[~fast, "flops"].to_numpy() * 3 // 4
    row = crossovers(prof, batch_size=1).iloc[0]
    assert row["flop_ratio_at_longest"] == 4.0 and row["ops_ratio_at_longest"] == 1.0
    # a table from before int8_ops: the operations are the FLOPs
    old = crossovers(prof.drop(columns="int8_ops"), batch_size=1).iloc[0]
    assert old["ops_ratio_at_longest"] == old["flop_ratio_at_longest"] == 4.0


def test_crossover_uses_the_softmax_timed_in_turns() -> None:
    """The variant's job timed softmax in turns with it: that pair gives the speed-up, not the
    softmax job's own rows (here made 3x slower, as a drifting machine between jobs would)."""
    prof = _synthetic_profile()
    own = (prof["model"] == "softmax")
    prof.loc[own, ["latency_s", "softmax_latency_s"]] *= 3.0
    row = crossovers(prof, batch_size=1).iloc[0]
    assert math.isclose(row["speedup_at_longest"], 1e-8 * 2048 / 4e-6)
    assert math.isclose(row["crossover_tokens"], 400.0, rel_tol=1e-6)
    unpaired = crossovers(prof.drop(columns="softmax_latency_s"), batch_size=1).iloc[0]
    assert math.isclose(unpaired["speedup_at_longest"], 3 * 1e-8 * 2048 / 4e-6)


def test_scaling_and_pareto_figures_draw() -> None:
    prof = _synthetic_profile()
    at_train = prof[prof["context_tokens"] == 128].assign(context_tokens=26)  # 13 points
    prof = pd.concat([prof, at_train], ignore_index=True)
    errors = pd.DataFrame([
        {"task": "linear_regression", "model": m, "kind": "transformer", "mode": mode, "seed": 0,
         "ood": "none", "ood_level": 0.0, "n_examples": k, "error": e, "error_lo": e * 0.9,
         "error_hi": e * 1.1, "confidence": 0.9, "norm": 3.0, "n_prompts": 8, "device": "cpu",
         "torch_version": torch.__version__}
        for m, mode, e in [("softmax", "trained", 0.1), ("fast", "swapped", 0.3)]
        for k in range(13)])
    for name, tables in [("scaling", {"profile": prof}),
                         ("pareto", {"profile": prof, "icl_errors": errors})]:
        fig = FIGURES.get(name).render(tables, {"batch_size": 1})
        assert fig.axes
        import matplotlib.pyplot as plt

        plt.close(fig)
