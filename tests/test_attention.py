"""Contract tests for every registered attention variant (a new variant is tested for free), plus
each approximation's closeness to exact causal softmax and the cost structure of the sub-quadratic
variants. Inputs: random, and the queries/keys/values of a briefly trained decoder."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from iclbench.attention import ATTENTION, build_attention
from iclbench.attention._nystrom_learned import dense_reference
from iclbench.model import Decoder, ModelSpec, interleave
from iclbench.seeding import generator

VARIANTS = ATTENTION.names()
APPROX = [n for n in VARIANTS if ATTENTION.get(n).approximates_softmax and n != "softmax"]
#: variants that must never form a T x T tensor
SUBQUADRATIC = ["nystrom", "combiner"]
#: extra option sets that exercise block structure at the short test lengths
#: nystrom design (b): chunks that divide none of the lengths, and the default chunk (16)
LEARNED = [{"landmarks_source": "learned", "landmarks": 4, "chunk": 4},
           {"landmarks_source": "learned", "landmarks": 3, "chunk": 5, "conv_kernel": 3},
           {"landmarks_source": "learned", "landmarks": 6}]
EXTRA = {"nystrom": [{"landmarks": 3, "conv_kernel": 3}, {"landmarks": 5, "pinv_iterations": 2},
                     *LEARNED],
         "combiner": [{"block_size": 4}, {"block_size": 6}]}
CASES = [(n, {}) for n in VARIANTS] + [(n, o) for n, opts in EXTRA.items() for o in opts]
IDS = [f"{n}-{o}" if o else n for n, o in CASES]
H, HS = 2, 8
#: lengths including primes, so no block or segment size divides them
LENGTHS = [1, 2, 7, 13, 30, 33]


def qkv(T: int, seed: int = 0, dtype: torch.dtype = torch.float32,
        B: int = 2) -> list[torch.Tensor]:
    g = generator(seed, "qkv", str(T))
    return [torch.randn(B, H, T, HS, generator=g).to(dtype) for _ in range(3)]


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


@pytest.fixture(scope="module")
def trained() -> Decoder:
    return train_small_decoder()


def train_small_decoder() -> Decoder:
    """A softmax decoder after 40 Adam steps of noiseless linear regression (d = 4, 16 points)."""
    spec = ModelSpec(n_dims=4, n_positions=64, n_embd=32, n_layer=2, n_head=H)
    model = Decoder(spec, generator=generator(0, "trained"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = generator(0, "data")
    for _ in range(40):
        xs = torch.randn(16, 16, 4, generator=g)
        ys = (xs @ torch.randn(16, 4, 1, generator=g)).squeeze(-1)
        loss = (model(xs, ys) - ys).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def trained_qkv(model: Decoder, T: int) -> list[torch.Tensor]:
    """The first layer's per-head q, k, v of the trained model on a random prompt of T tokens."""
    g = generator(0, "prompt", str(T))
    tokens = torch.randn(2, T, model.spec.n_dims, generator=g)
    with torch.no_grad():
        h = model.read_in(tokens) + model.wpe(torch.arange(T))
        x = model.blocks[0].ln_1(h)
        q, k, v = model.blocks[0].attn.c_attn(x).split(model.spec.n_embd, dim=2)
    return [t.view(2, T, H, -1).transpose(1, 2) for t in (q, k, v)]


def scrambled(x: torch.Tensor, g: torch.Generator, dim: int) -> torch.Tensor:
    """Copies of x (B, ...) stacked as (T - 1, B, ...): copy t has every position > t along
    ``dim`` (of x) replaced by large random values."""
    T = x.shape[dim]
    copies = x.unsqueeze(0).repeat(T - 1, *[1] * x.dim())
    pos = torch.arange(T).view(*[1] * dim, T, *[1] * (x.dim() - dim - 1))
    for t in range(T - 1):
        noise = 10 * torch.randn(x.shape, generator=g)
        copies[t] = torch.where(pos > t, noise, x)
    return copies


def assert_causal(core: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  atol: float = 1e-5) -> None:
    """Scrambling every position after t leaves outputs <= t unchanged, for every t (all t in
    one batched call)."""
    B, nh, T, hs = q.shape
    if T < 2:
        return
    g = generator(2, "scramble", str(T))
    with torch.no_grad():
        base = core(q, k, v)
        new = [scrambled(x, g, dim=2).view(-1, nh, T, hs) for x in (q, k, v)]
        out = core(*new).view(T - 1, B, nh, T, hs)
    for t in range(T - 1):
        torch.testing.assert_close(out[t, :, :, : t + 1], base[:, :, : t + 1], rtol=0, atol=atol)
        assert not torch.allclose(out[t, :, :, t + 1 :], base[:, :, t + 1 :])  # sees a leak


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_no_future_leak_random(name: str, opts: dict[str, Any], T: int) -> None:
    check_no_future_leak_random(name, opts, T)


# The contract every registered attention meets: the tests parametrized over the registry above
# and below call these, and so can a test that registers a variant of its own
# (tests/test_architecture.py).


def check_no_future_leak_random(name: str, opts: dict[str, Any], T: int) -> None:
    assert_causal(build_attention(name, H, HS, opts), *qkv(T))


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_no_future_leak_trained_model(name: str, opts: dict[str, Any], trained: Decoder) -> None:
    check_no_future_leak_trained_model(name, opts, trained)


def check_no_future_leak_trained_model(name: str, opts: dict[str, Any], trained: Decoder) -> None:
    """With a trained decoder's weights: its own q, k, v, and the whole model with the variant in
    (changing y_t and every token after x_t leaves the predictions up to x_t unchanged)."""
    core = build_attention(name, H, 32 // H, opts)
    assert_causal(core, *trained_qkv(trained, 29))
    model = Decoder(trained.spec)
    model.load_state_dict(trained.state_dict())
    model.set_attention(name, opts)
    g = generator(5, "leak")
    n = 15
    xs, ys = torch.randn(1, n, 4, generator=g), torch.randn(1, n, generator=g)
    tokens = interleave(xs, ys)  # (1, 2n, 4); x_t at 2t, y_t at 2t + 1
    with torch.no_grad():
        base = model.hidden(tokens)[:, ::2]
        new = scrambled(tokens, g, dim=1).view(-1, 2 * n, 4)  # copy t keeps tokens <= t
        out = model.hidden(new)[:, ::2]
    for t in range(0, 2 * n - 1, 2):  # scrambled after x_{t/2}: predictions up to it unchanged
        torch.testing.assert_close(out[t, : t // 2 + 1], base[0, : t // 2 + 1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_shape_dtype_backward_determinism(name: str, opts: dict[str, Any],
                                          dtype: torch.dtype) -> None:
    check_shape_dtype_backward_determinism(name, opts, dtype)


def check_shape_dtype_backward_determinism(name: str, opts: dict[str, Any],
                                           dtype: torch.dtype) -> None:
    core = build_attention(name, H, HS, opts).to(dtype)
    q, k, v = (t.requires_grad_() for t in qkv(13, dtype=dtype))
    out = core(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.equal(out, core(q, k, v))  # deterministic
    out.float().square().sum().backward()
    for t in (q, k, v, *core.parameters()):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    if dtype == torch.bfloat16:  # bfloat16 follows float32 to bfloat16 precision
        ref_core = build_attention(name, H, HS, opts)
        ref_core.load_state_dict({n: t.float() for n, t in core.state_dict().items()})
        ref = ref_core(*(t.detach().float() for t in (q, k, v)))
        torch.testing.assert_close(out.detach().float(), ref, rtol=0.05, atol=0.05)


def test_relu_matches_dense_formula() -> None:
    q, k, v = qkv(9)
    out = build_attention("relu", H, HS)(q, k, v)
    ref = torch.zeros_like(out)
    for i in range(9):
        for j in range(i + 1):
            alpha = torch.relu((q[:, :, i] * k[:, :, j]).sum(-1) / math.sqrt(HS)) / (i + 1)
            ref[:, :, i] += alpha[..., None] * v[:, :, j]
    torch.testing.assert_close(out, ref)


def test_relu_position_does_not_depend_on_total_length() -> None:
    q, k, v = qkv(12)
    core = build_attention("relu", H, HS)
    torch.testing.assert_close(core(q, k, v)[:, :, :5], core(q[:, :, :5], k[:, :, :5], v[:, :, :5]))


@pytest.mark.parametrize("T", [7, 12, 30])
@pytest.mark.parametrize(("name", "opts"), [
    ("combiner", {"block_size": 30}), ("combiner", {"block_size": 32}),
    ("nystrom", {"landmarks": 1}), ("nystrom", {"landmarks": 1, "conv_kernel": 3}),
])
def test_exact_limit(name: str, opts: dict[str, Any], T: int) -> None:
    """One block / one segment covering the sequence is exact causal softmax attention."""
    q, k, v = qkv(T)
    torch.testing.assert_close(build_attention(name, H, HS, opts)(q, k, v), exact(q, k, v),
                               rtol=0, atol=1e-4)


def test_nystrom_one_token_per_segment_is_exact_once_pinv_converges() -> None:
    """landmarks >= T: every landmark is a token, Z_c B_c = V_<c, so only the pinv iterations
    stand between the approximation and exact attention (float64: the landmark matrices of random
    inputs are ill-conditioned)."""
    q, k, v = qkv(16, dtype=torch.float64)
    out = build_attention("nystrom", H, HS, {"landmarks": 16, "pinv_iterations": 40})(q, k, v)
    torch.testing.assert_close(out, exact(q, k, v), rtol=0, atol=1e-4)
    few = build_attention("nystrom", H, HS, {"landmarks": 16, "pinv_iterations": 3})(q, k, v)
    assert rel_err(few, exact(q, k, v)) > 1e-3  # the iterations matter


def test_nystrom_exact_pinv_is_exact_with_one_token_per_segment_in_float32() -> None:
    """pinv: exact (torch.linalg.pinv in float64) needs no iterations: with one token per segment
    the layer is exact causal softmax in float32 too, where the iteration is not (its error
    stays large in float32 on the ill-conditioned landmark matrices of random inputs)."""
    q, k, v = qkv(16, dtype=torch.float32)
    exact_pinv = build_attention("nystrom", H, HS, {"landmarks": 16, "pinv": "exact"})(q, k, v)
    torch.testing.assert_close(exact_pinv, exact(q, k, v), rtol=0, atol=2e-3)
    iterated = build_attention("nystrom", H, HS, {"landmarks": 16, "pinv_iterations": 25})(q, k, v)
    assert rel_err(iterated, exact(q, k, v)) > 10 * rel_err(exact_pinv, exact(q, k, v))
    with pytest.raises(ValueError, match="pinv must be iterative or exact"):
        build_attention("nystrom", H, HS, {"pinv": "svd"})


def learned_core(opts: dict[str, Any], seed: int = 0, head_dim: int = HS) -> torch.nn.Module:
    """A design-(b) nystrom core with N(0, 1) landmarks: far apart, so the landmark matrix is
    well conditioned and every term of the formula matters (a model's init starts them at 0.02)."""
    core = build_attention("nystrom", H, head_dim, {"landmarks_source": "learned", **opts})
    g = generator(seed, "landmarks")
    with torch.no_grad():
        for p in (core.landmark_q, core.landmark_k):
            p.copy_(torch.randn(p.shape, generator=g))
    return core


@pytest.mark.parametrize("T", [1, 7, 32, 45, 70])
@pytest.mark.parametrize("opts", [{"landmarks": 5, "chunk": 1}, {"landmarks": 4, "chunk": 6},
                                  {"landmarks": 8, "chunk": 32, "pinv_iterations": 3}])
def test_nystrom_learned_matches_dense_formula(opts: dict[str, Any], T: int) -> None:
    """The chunked, causal evaluation (carried max, numerator and denominator) is the formula."""
    core = learned_core(opts)
    q, k, v = (2 * t for t in qkv(T))
    with torch.no_grad():
        out = core(q, k, v)
    ref = dense_reference(q, k, v, core.landmark_q.detach(), core.landmark_k.detach(),
                          opts.get("pinv_iterations", 6))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 16])
def test_nystrom_learned_clamped_chunk_takes_the_exact_path(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key whose landmark logits jump far above every earlier one (more than FAST_LIMIT) would
    overflow the fast evaluation's weights: the positions from it on take the exact evaluation,
    the outputs still equal the dense formula, and the positions before it are bitwise those of
    the same inputs without the jump (whatever path the span takes)."""
    from iclbench.attention import _nystrom_learned as learned

    core = learned_core({"landmarks": 4, "chunk": chunk})
    T, jump = 40, 22
    q, k, v = qkv(T)
    big = k.clone()
    big[:, :, jump] = 200 * core.landmark_q.detach().mean(1)[None]  # logit ~ 200 |ql|^2 / sqrt(hs)
    calls = []
    exact_span = learned.exact_span
    monkeypatch.setattr(learned, "exact_span", lambda *a: calls.append(1) or exact_span(*a))
    with torch.no_grad():
        out = core(q, big, v)
        assert calls, "the fast path should hand the clamped positions to the exact one"
        ref = dense_reference(q, big, v, core.landmark_q.detach(), core.landmark_k.detach(), 6)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(out[:, :, :jump], core(q, k, v)[:, :, :jump])


def test_nystrom_learned_spans_carry_state_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny work budget cuts the sequence into many spans (and the batch into single rows):
    the carried state gives the same outputs as one span."""
    from iclbench.attention import _blocks

    core = learned_core({"landmarks": 4, "chunk": 3})
    q, k, v = qkv(50)
    with torch.no_grad():
        whole = core(q, k, v)
        monkeypatch.setattr(_blocks, "WORK_ELEMENTS", 4 * H * 9 * 4)  # one chunk per span
        torch.testing.assert_close(core(q, k, v), whole, rtol=1e-6, atol=1e-6)


def test_nystrom_learned_is_causal_to_the_bit() -> None:
    """Scrambling the tokens after t leaves every output <= t bitwise unchanged (same shapes,
    huge future values): masked weights are exact zeros and the running max is causal."""
    core = learned_core({"landmarks": 4, "chunk": 8})
    T = 29
    q, k, v = qkv(T)
    g = generator(7, "bitwise")
    with torch.no_grad():
        base = core(q, k, v)
        for t in (0, 5, 7, 8, 20, 27):
            new = [torch.where(torch.arange(T)[:, None] > t,
                               1e3 * torch.randn(x.shape, generator=g), x) for x in (q, k, v)]
            out = core(*new)
            assert torch.equal(out[:, :, : t + 1], base[:, :, : t + 1]), t
            assert not torch.allclose(out[:, :, t + 1 :], base[:, :, t + 1 :])


def test_nystrom_learned_position_does_not_depend_on_total_length() -> None:
    """Unlike segments, design (b)'s output at i reads nothing that depends on T."""
    core = learned_core({"landmarks": 4, "chunk": 8})
    q, k, v = qkv(30)
    with torch.no_grad():
        torch.testing.assert_close(core(q, k, v)[:, :, :13],
                                   core(q[:, :, :13], k[:, :, :13], v[:, :, :13]))


def test_nystrom_learned_pinv_cache_follows_the_landmarks() -> None:
    """Without autograd the landmarks' pseudo-inverse is computed once and reused, and is
    recomputed after an optimiser step or a load_state_dict changes the landmarks."""
    core = learned_core({"landmarks": 4, "chunk": 8})
    q, k, v = qkv(20)
    y_grad = core(q, k, v)  # autograd on: no cache
    assert core._pinv_key is None
    with torch.no_grad():
        y1 = core(q, k, v)
        key = core._pinv_key
        assert torch.equal(core(q, k, v), y1) and core._pinv_key == key
    assert torch.equal(y1, y_grad.detach())  # the cached pinv is the one autograd computes
    y_grad.sum().backward()
    torch.optim.SGD(core.parameters(), lr=0.5).step()
    with torch.inference_mode():
        y2 = core(q, k, v)
    assert core._pinv_key != key and not torch.equal(y2, y1)
    fresh = learned_core({"landmarks": 4, "chunk": 8})
    fresh.load_state_dict(core.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(q, k, v), y2)


def test_nystrom_learned_landmarks_follow_the_model_seed() -> None:
    """The landmarks are parameters of the model: drawn from its generator, saved with it."""
    spec = ModelSpec(n_dims=4, n_positions=32, n_embd=32, n_layer=2, n_head=H,
                     attention="nystrom",
                     attention_options={"landmarks_source": "learned", "landmarks": 4})
    a, b = (Decoder(spec, generator=generator(3, "model")) for _ in range(2))
    c = Decoder(spec, generator=generator(4, "model"))
    names = [n for n, _ in a.named_parameters() if "landmark" in n]
    assert len(names) == 2 * spec.n_layer
    for n in names:
        pa, pb, pc = (dict(m.named_parameters())[n] for m in (a, b, c))
        assert pa.shape == (H, 4, 32 // H)
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
        assert 0.8 < pa.std().item() < 1.2  # LANDMARK_INIT_STD, not the model's 0.02
    # the rest keep the model's N(0, 0.02); the read-in has its own (nn.Linear's) initialisation
    other = [p for n, p in a.named_parameters()
             if "landmark" not in n and n != "read_in.weight" and p.dim() == 2]
    assert all(p.std().item() < 0.05 for p in other)


@pytest.mark.parametrize(("name", "opts", "knob", "coarse", "fine"), [
    # combiner: error shrinks as blocks grow towards one block; nystrom: as segments grow (fewer
    # landmarks) towards one segment, the design's exact limit
    ("combiner", {"log_size_bias": True}, "block_size", 4, 24),
    ("combiner", {}, "block_size", 4, 24),
    ("nystrom", {}, "landmarks", 16, 2),
])
def test_approximation_error(name: str, opts: dict[str, Any], knob: str, coarse: int, fine: int,
                             trained: Decoder) -> None:
    """Away from the exact limit: relative error against exact softmax below a loose bound on
    random inputs, and smaller closer to the limit; on a trained model's q, k, v below 1 (better
    than predicting zero) — the numbers are printed for the record."""
    T = 32
    q, k, v = (t * s for t, s in zip(qkv(T, B=8), (0.5, 0.5, 1.0)))
    ref = exact(q, k, v)
    errs = [rel_err(build_attention(name, H, HS, {**opts, knob: x})(q, k, v), ref)
            for x in (coarse, fine)]
    q, k, v = trained_qkv(trained, T)
    ref = exact(q, k, v)
    trained_errs = [rel_err(build_attention(name, H, 32 // H, {**opts, knob: x})(q, k, v), ref)
                    for x in (coarse, fine)]
    print(f"{name} {opts} {knob} {coarse} -> {fine}: random {errs}, trained {trained_errs}")
    assert max(errs) < 0.6 and errs[1] < errs[0], errs
    assert max(trained_errs) < 1.0, trained_errs


@pytest.mark.parametrize("name", APPROX)
def test_swapped_into_trained_model_stays_close(name: str, trained: Decoder) -> None:
    """Swapping an approximation (default options) into the softmax model changes predictions by
    less than the predictions' own spread."""
    model = Decoder(trained.spec)
    model.load_state_dict(trained.state_dict())
    xs = torch.randn(16, 16, 4, generator=generator(3, "swap"))
    ys = (xs @ torch.randn(16, 4, 1, generator=generator(4, "swap"))).squeeze(-1)
    with torch.no_grad():
        base = model(xs, ys)
        model.set_attention(name)
        assert rel_err(model(xs, ys), base) < 0.5


class ShapeLog(TorchDispatchMode):
    """Records the shape of every tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize(("name", "opts"), [(n, {}) for n in SUBQUADRATIC]
                         + [("nystrom", {"landmarks_source": "learned", "landmarks": 16})])
def test_never_forms_t_by_t(name: str, opts: dict[str, Any]) -> None:
    T = 300  # not a multiple of the default block (18), segment (38) or chunk (32) size
    q, k, v = (t.requires_grad_() for t in qkv(T, B=1))
    core = build_attention(name, H, HS, opts)
    with ShapeLog() as log:
        core(q, k, v).sum().backward()
    big = [s for s in log.shapes if sum(d >= T for d in s) >= 2]
    assert log.shapes and not big, big[:3]


def flops(variant: str, T: int, options: dict[str, Any]) -> int:
    q, k, v = qkv(T, B=1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        build_attention(variant, H, HS, options)(q, k, v)
    return counter.get_total_flops()


def test_combiner_flops_grow_as_t_sqrt_t() -> None:
    """Matmul FLOPs from T = 256 to 1024 grow about 8x (T sqrt T), a T x T attention's 16x;
    relu's, computed in causal blocks of 256 queries (1 block at 256, 1 + 2 + 3 + 4 at 1024),
    10x."""
    from iclbench.attention.relu import QUERY_BLOCK

    assert 6 < flops("combiner", 1024, {}) / flops("combiner", 256, {}) < 10
    assert QUERY_BLOCK == 256
    assert flops("relu", 1024, {}) / flops("relu", 256, {}) == pytest.approx(10, rel=0.01)


def test_nystrom_flops() -> None:
    """Cost O(T (T/m + m) hs + m^4): the m per-prefix pseudo-inverses do not depend on T; with
    m = sqrt(T) the rest grows as T sqrt(T) (8x from 256 to 1024, not 16x); at T = 1024, m = 16
    the whole is a fraction of a dense T x T attention (at m = 32 and hs = 8 the m^4 term
    alone exceeds it: keep m small)."""
    def pinv_flops(T: int) -> int:
        m = {"landmarks": 32}
        return flops("nystrom", T, m) - flops("nystrom", T, {**m, "pinv_iterations": 0})

    assert pinv_flops(1024) == pinv_flops(2048) > 0  # the pseudo-inverses: independent of T
    attn = [flops("nystrom", T, {"landmarks": math.isqrt(T), "pinv_iterations": 0})
            for T in (256, 1024)]
    assert 6 < attn[1] / attn[0] < 10
    dense = 4 * H * 1024 * 1024 * HS  # a T x T attention's two products, batch 1
    assert flops("nystrom", 1024, {"landmarks": 16}) < 0.25 * dense


def test_nystrom_learned_flops_grow_linearly() -> None:
    """Design (b): O(T (C + m) (m + hs) + m^3) for chunk C and m landmarks: affine in T (the m x m
    pseudo-inverse is the constant), so doubling T from 2048 adds twice what doubling from 1024
    added, where a T^2 cost would add four times as much."""
    opts = {"landmarks_source": "learned", "landmarks": 16, "chunk": 16}
    f1, f2, f4 = (flops("nystrom", T, opts) for T in (1024, 2048, 4096))
    assert (f4 - f2) / (f2 - f1) == pytest.approx(2, rel=0.01)


@pytest.mark.parametrize(("name", "opts", "message"), [
    ("nystrom", {"landmarks": 0}, "landmarks must be an integer >= 1"),
    ("nystrom", {"pinv_iterations": 1.5}, "pinv_iterations must be an integer"),
    ("nystrom", {"landmark": 4}, "unknown option"),
    ("nystrom", {"landmarks_source": "random"}, "landmarks_source must be one of segments, learned"),
    ("nystrom", {"landmarks_source": "learned", "chunk": 0}, "chunk must be an integer >= 1"),
    ("nystrom", {"chunk": 16}, "chunk applies to landmarks_source: learned only"),
    ("combiner", {"block_size": 5}, "block_size must be null or an even integer"),
])
def test_bad_options_are_errors(name: str, opts: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_attention(name, H, HS, opts)


def test_learned_landmarks_cannot_be_swapped(trained: Decoder) -> None:
    """A softmax model has no learned landmarks: swapping design (b) in is an error."""
    from iclbench.variants import get_variant

    with pytest.raises(ValueError, match="landmarks_source: learned cannot be swapped"):
        get_variant("nystrom").swap(trained, {"landmarks_source": "learned"})
    get_variant("nystrom").check_swap_options({"landmarks": 4}, H, 16)  # segments can


def core_peaks(cores: dict[str, dict[str, Any]], T: int, heads: int, hs: int,
               seed: int) -> dict[str, int]:
    """Peak working memory (allocator events during one forward, output included) of each core
    (variant -> options) on the same random q, k, v (batch 1), at 2 threads: softmax's kernel
    holds a buffer per thread, and other tests (profiling jobs) leave torch with another thread
    count, so the count is set here and restored. Each core runs once before it is measured
    (what it does once: the learned landmarks' pseudo-inverse)."""
    from iclbench.profiling import peak_memory

    g = generator(seed, "memory")
    q, k, v = (torch.randn(1, heads, T, hs, generator=g) for _ in range(3))
    peaks = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for variant, options in cores.items():
            core = build_attention(variant, heads, hs, options).eval()
            with torch.inference_mode():
                core(q, k, v)
                peaks[variant] = peak_memory(lambda core=core: core(q, k, v),
                                             torch.device("cpu"))[0]
    finally:
        torch.set_num_threads(threads)
    return peaks


@pytest.mark.parametrize(("name", "opts"), [
    ("nystrom", {"landmarks_source": "learned", "landmarks": 16, "chunk": 32}),
    ("combiner", {}),
])
def test_efficient_cores_hold_less_memory_than_softmax(name: str, opts: dict[str, Any]) -> None:
    """Issue 3's memory bar, at its size (T = 4096, batch 1, 2 threads, 8 heads x 32): the
    core's peak working memory stays below fused softmax attention's. The chunk budgets
    (``_blocks.WORK_ELEMENTS``) bound it; a layout or budget change that keeps more
    intermediates alive fails here."""
    peaks = core_peaks({"softmax": {}, name: opts}, 4096, 8, 32, seed=5)
    assert peaks[name] < peaks["softmax"], peaks


def test_combiner_copies_only_the_partial_block() -> None:
    """At the profile stage's longest length (T = 8192, 2 heads x 32, batch 1, 2 threads) the
    default block size (90) does not divide T. Only the trailing partial block is copied
    (padded), so the core's peak stays below fused softmax's; padding a copy of q, k and v held
    2.9x softmax's peak."""
    peaks = core_peaks({"softmax": {}, "combiner": {}}, 8192, 2, 32, seed=6)
    assert 8192 % 90 and peaks["combiner"] < peaks["softmax"], peaks


@pytest.mark.parametrize("name", VARIANTS)
def test_qk_norm_is_an_option_of_every_variant(name: str) -> None:
    check_qk_norm(name)


def check_qk_norm(name: str) -> None:
    """qk_norm: LayerNorm of each head's q and k over hs times a learned per-head scale (1 at
    initialisation), applied by the model for every variant; causal, saved with the model, and
    a swap keeps it with its learned scales."""
    from iclbench.model import load_model, save_model

    spec = ModelSpec(n_dims=4, n_positions=30, n_embd=32, n_layer=2, n_head=H,
                     attention=name, attention_options={"qk_norm": True})
    model = Decoder(spec, generator=generator(0, "qkn")).eval()
    core = model.blocks[0].attn.core
    assert core.ln_q.shape == (H, 1, 16) and torch.equal(core.ln_q, torch.ones_like(core.ln_q))
    q, k, _ = qkv(7, B=1, dtype=torch.float32)
    q16, k16 = q.repeat(1, 1, 1, 2), k.repeat(1, 1, 1, 2)  # head dim 16
    nq, nk = core.norm_qk(q16, k16)
    torch.testing.assert_close(nq, F.layer_norm(q16, (16,)))
    torch.testing.assert_close(nk, F.layer_norm(k16, (16,)))
    with torch.no_grad():
        core.ln_q.mul_(2.0)
    torch.testing.assert_close(core.norm_qk(q16, k16)[0], 2.0 * F.layer_norm(q16, (16,)))
    g = generator(6, "qkn")
    xs, ys = torch.randn(2, 15, 4, generator=g), torch.randn(2, 15, generator=g)
    with torch.no_grad():
        before = model(xs, ys)
        later = xs.clone()
        later[:, 9:] += 1.0
        assert torch.equal(model(later, ys)[:, :9], before[:, :9])  # causal
    plain = Decoder(ModelSpec(n_dims=4, n_positions=30, n_embd=32, n_layer=2, n_head=H,
                              attention=name), generator=generator(0, "qkn")).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "ln_q" not in k
                           and "ln_k" not in k})
    with torch.no_grad():
        assert not torch.allclose(plain(xs, ys), before)  # the norm changes the function
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, f"{tmp}/m.safetensors")
        again = load_model(f"{tmp}/m.safetensors")
    with torch.no_grad():
        assert torch.equal(again(xs, ys), before)
    if name == "softmax":
        model.set_attention("softmax")
        swapped = model.blocks[0].attn.core
        assert swapped.opts["qk_norm"] and torch.equal(swapped.ln_q, core.ln_q)
        with torch.no_grad():
            assert torch.equal(model(xs, ys), before)
        with pytest.raises(ValueError, match="qk_norm comes from the trained model"):
            model.set_attention("softmax", {"qk_norm": False})
