"""The package's structure: no import cycle among modules, the model and its kernels import no
variant, and a variant is one module: an attention registered from this test module alone runs
through the attention contract, the model and every variant hook."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_attention import (
    LENGTHS,
    check_no_future_leak_random,
    check_no_future_leak_trained_model,
    check_qk_norm,
    check_shape_dtype_backward_determinism,
    train_small_decoder,
)
from test_model import check_no_future_leak

from iclbench.attention import ATTENTION, Attention

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "iclbench"


# ------------------------------------------------------------------------------------------------
# the import graph


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: the module's own, those in its
    ``if``/``try``/``with`` blocks and class bodies, not function bodies nor ``if
    TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _import_time_nodes([n for n in inner if isinstance(n, ast.stmt)]
                                              + [s for h in inner
                                                 if isinstance(h, ast.ExceptHandler)
                                                 for s in h.body])


def _imported(name: str, node: ast.stmt, known: dict[str, Path]) -> list[str]:
    """The package's modules that ``node`` (in module ``name``) imports."""
    is_package = known[name].name == "__init__.py"
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's package, up level - 1 more
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                   for alias in node.names]
    else:
        return []
    return [t for t in targets if t in known]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules that importing it imports first: its module-level imports
    (imports inside functions are left out), each with the packages above the imported module
    whose ``__init__`` runs first (not those above the importer: they run before it), and every
    public submodule of a package that imports them all (``registry.import_modules``)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        source = path.read_text()
        tree = ast.parse(source)
        own = set(_ancestors(name)) | {name}
        for node in _import_time_nodes(tree.body):
            for target in _imported(name, node, known):
                graph[name] |= {target, *_ancestors(target)} - own
        if path.name == "__init__.py" and "import_modules(__name__, __path__" in source:
            graph[name] |= {m for m in known if m.rsplit(".", 1)[0] == name
                            and not m.rsplit(".", 1)[1].startswith("_")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path whose last node is its first, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_imports_as_python_runs_them() -> None:
    """The parser itself: edges it must find, and what it must leave out."""
    graph = import_graph()
    assert "iclbench.model" in graph["iclbench.variants.base"]
    assert "iclbench.variants.int8" in graph["iclbench.variants"]  # by import_modules
    assert "iclbench.kernels" in graph["iclbench.variants.int8.convert"]  # its __init__ runs
    assert "iclbench.variants" not in graph["iclbench.variants.int8.variant"]  # its own package
    assert "iclbench.variants" not in graph["iclbench.config"]  # imported inside functions
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    """No cycle among the package's module-level imports (a package counts as its
    ``__init__``)."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


LOWER = ("iclbench.model", "iclbench.model_files", "iclbench.kernels")


def test_the_model_and_its_kernels_import_no_variant() -> None:
    """Not even inside a function: files are read through the model-format registry, and the
    fast paths are put in by the variants' hooks, not looked up by the model."""
    known = modules()
    for name, path in known.items():
        if not name.startswith(LOWER):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _imported(name, node, known) if isinstance(node, ast.stmt) else []:
                assert not target.startswith("iclbench.variants"), (name, target)


FIRST = ["iclbench.model", "iclbench.kernels.int8", "iclbench.variants.int8.qat",
         "iclbench.variants.int8.io"]


def test_a_module_imports_first() -> None:
    """Imported first in a fresh interpreter, each module loads (no package initialisation reaches
    a half-initialised module); the built-in model formats register with the variants."""
    code = ("import {}\nimport iclbench.variants\n"
            "from iclbench.model_files import MODEL_FORMATS\nassert 'int8' in MODEL_FORMATS")
    procs = {m: subprocess.Popen([sys.executable, "-c", code.format(m)], text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for m in FIRST}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (module, err)


# ------------------------------------------------------------------------------------------------
# a variant from this module alone


class MeanAttention(Attention):
    """Each position's mean of the values up to it, weighted by ``sigmoid(q . k / sqrt(hs))``."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T = q.shape[-2]
        weights = torch.sigmoid(q @ k.transpose(-1, -2) * self.head_dim ** -0.5)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        count = torch.arange(1, T + 1, device=q.device, dtype=q.dtype)[:, None]
        return weights.masked_fill(~causal, 0.0) / count @ v


@pytest.fixture(scope="module")
def mean() -> Iterator[str]:
    """"mean" registered in the attention registry for this module's tests, removed after."""
    ATTENTION.register("mean")(MeanAttention)
    try:
        yield "mean"
    finally:  # the registry has no removal: other test modules must not see "mean"
        del ATTENTION._entries["mean"]


@pytest.mark.parametrize("T", LENGTHS)
def test_a_new_attention_is_causal(mean: str, T: int) -> None:
    check_no_future_leak_random(mean, {}, T)


def test_a_new_attention_is_causal_in_a_trained_model(mean: str) -> None:
    check_no_future_leak_trained_model(mean, {}, train_small_decoder())
    for n_points in (5, 12):
        check_no_future_leak(mean, n_points)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_new_attention_has_shapes_dtypes_gradients(mean: str, dtype: torch.dtype) -> None:
    check_shape_dtype_backward_determinism(mean, {}, dtype)


def test_a_new_attention_takes_qk_norm(mean: str) -> None:
    check_qk_norm(mean)


def test_a_new_attention_is_a_variant_of_every_mode(mean: str, tmp_path: Path,
                                                    smoke_config: dict[str, Any]) -> None:
    """A config line is all it takes: the config checks, then trained, swapped and fine-tuned
    models with it, each at inference on the CPU fast path."""
    from iclbench.config import check
    from iclbench.kernels.cpu import CpuBlock
    from iclbench.model import Decoder, ModelSpec, load_model
    from iclbench.variants import get_variant

    raw = {**smoke_config, "variants": {**smoke_config["variants"], mean: {}},
           "swapped": {**smoke_config["swapped"], mean: {}},
           "finetuned": {**smoke_config["finetuned"], mean: {}}}
    assert mean in check(raw).variants
    kind = get_variant(mean)
    base = ModelSpec(n_dims=4, n_positions=24, n_embd=32, n_layer=2, n_head=2)
    trained = kind.prepare_training(Decoder(kind.model_spec(base, {})), {})
    kind.save(trained, tmp_path / "m.safetensors", {})
    models = [kind.for_inference(load_model(tmp_path / "m.safetensors"), {}),
              kind.swap(Decoder(base), {}), kind.convert(Decoder(base), {})]
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    for model in models:
        assert model.spec.attention == mean
        assert all(isinstance(b, CpuBlock) for b in model.blocks)
        with torch.inference_mode():
            assert torch.isfinite(model.eval()(xs, ys)).all()
