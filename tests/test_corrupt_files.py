"""Corrupt and hostile files (issue 23): prompt files, model files (float and int8) and Parquet
tables. Every case must raise ValueError naming the file and saying what is wrong, never a bare
torch/pyarrow error, a silent wrong result, or a model built at the size a corrupt spec claims."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import safe_open, save_file

from iclbench.evaluate import load_prompts, make_prompts, save_prompts
from iclbench.model import Decoder, ModelSpec, load_model
from iclbench.variants.int8 import is_int8
from iclbench.results import ICL_ERRORS, read_parquet, tidy, write_parquet
from iclbench.tasks import build_task
from iclbench.variants import get_variant

SPEC = ModelSpec(n_dims=3, n_positions=10, n_embd=16, n_layer=2, n_head=2,
                 attention_options={"qk_norm": True})  # qk_norm: n_head shows in the shapes
INT8_OPTIONS = {"weight_bits": 7, "activation_bits": 8, "ema_decay": 0.9, "start_step": 0}

Tensors = dict[str, torch.Tensor]
Meta = dict[str, Any]


# ------------------------------------------------------------------------------------------------
# valid files, written once per module by the package's own writers


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid")
    task = build_task("linear_regression", 3)
    out = {"prompts": root / "prompts.safetensors", "queries": root / "queries.safetensors",
           "model": root / "model.safetensors", "int8": root / "int8.safetensors",
           "table": root / "table.parquet"}
    save_prompts(make_prompts(task, "linear_regression", 4, 5, 0, "scale_x", (1.0, 2.0)),
                 out["prompts"])
    save_prompts(make_prompts(task, "linear_regression", 4, 5, 0, "orthogonal_query", (1.0,)),
                 out["queries"])
    model = Decoder(SPEC, torch.Generator().manual_seed(0))
    get_variant("softmax").save(model, out["model"], {"qk_norm": True}, {"task": "x"})
    int8 = get_variant("int8")
    qat = int8.prepare_training(Decoder(replace_spec(attention_options={}),
                                        torch.Generator().manual_seed(0)), INT8_OPTIONS)
    qat(torch.randn(2, 5, 3), torch.randn(2, 5))  # a training forward: learned input scales
    int8.save(qat, out["int8"], INT8_OPTIONS, {"task": "x"})
    rows = pd.DataFrame({
        "task": ["t", "t"], "model": ["m", "m"], "kind": ["baseline"] * 2,
        "mode": ["baseline"] * 2, "seed": [pd.NA, pd.NA], "ood": ["none"] * 2,
        "ood_level": [0.0, 0.0], "n_examples": [0, 1], "error": [1.0, 0.5],
        "error_lo": [0.9, 0.4], "error_hi": [1.1, 0.6], "confidence": [0.9, 0.9],
        "norm": [1.0, 1.0], "n_prompts": [4, 4], "device": ["cpu"] * 2, "torch_version": ["x"] * 2,
    })
    write_parquet(tidy(rows, ICL_ERRORS), out["table"])
    return out


def replace_spec(**changes: Any) -> ModelSpec:
    from dataclasses import replace

    return replace(SPEC, **changes)


def read(path: Path) -> tuple[Tensors, Meta]:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["iclbench"])
    return tensors, meta


def rewrite(src: Path, dst: Path, edit: Callable[[Tensors, Meta], Any]) -> Path:
    """``src`` with its tensors and ``iclbench`` metadata object edited in place by ``edit``; if
    ``edit`` returns a dict, that is the file's whole raw metadata instead."""
    tensors, meta = read(src)
    raw = edit(tensors, meta)
    save_file(tensors, str(dst),
              metadata=raw if isinstance(raw, dict) else {"iclbench": json.dumps(meta)})
    return dst


def raises_naming(path: Path, word: str, load: Callable[[Path], Any]) -> None:
    with pytest.raises(ValueError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert word.lower() in msg.lower(), msg


@contextmanager
def memory_capped(headroom: int = 2**30) -> Iterator[None]:
    """Address space capped at what the process maps now plus ``headroom`` (Linux), so a loader
    that builds a model at the size a hostile spec claims fails at once instead of swapping."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + headroom if hard == resource.RLIM_INFINITY else min(mapped + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------------------------------------
# byte-level damage, the same for every kind of file


def header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


BYTE_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda b: b"",
    "cut_in_length": lambda b: b[:5],
    "cut_in_header": lambda b: b[:20],
    "cut_header_end": lambda b: b[:header_end(b) - 1],
    "cut_at_data": lambda b: b[:header_end(b)],
    "cut_in_data": lambda b: b[:header_end(b) + 7],
    "cut_last_byte": lambda b: b[:-1],
    "random_bytes": lambda b: torch.randint(0, 256, (len(b),), dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(0))
    .numpy().tobytes(),
    "huge_header_length": lambda b: struct.pack("<Q", 2**60) + b[8:],
    "garbage_header": lambda b: b[:8] + b"\xff" * (header_end(b) - 8) + b[header_end(b):],
}


@pytest.mark.parametrize("damage", sorted(BYTE_DAMAGE))
@pytest.mark.parametrize("kind", ["prompts", "model", "int8"])
def test_damaged_safetensors_files(files: dict[str, Path], tmp_path: Path, kind: str,
                                   damage: str) -> None:
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(BYTE_DAMAGE[damage](files[kind].read_bytes()))
    load = load_prompts if kind == "prompts" else load_model
    raises_naming(path, "not a valid", load)


def test_valid_files_load_as_written(files: dict[str, Path]) -> None:
    p = load_prompts(files["prompts"])
    assert p.xs.shape == (2, 4, 5, 3) and p.levels == (1.0, 2.0) and p.query_xs is None
    assert load_prompts(files["queries"]).query_ys.shape == (1, 4, 5)
    tensors, _ = read(files["model"])
    model = load_model(files["model"])
    assert model.spec == SPEC
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())
    assert is_int8(load_model(files["int8"]))


# ------------------------------------------------------------------------------------------------
# prompt files


def _set(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Tensors, Meta], None]:
    def edit(t: Tensors, m: Meta) -> None:
        t[name] = fn(t[name])

    return edit


def _drop(name: str) -> Callable[[Tensors, Meta], None]:
    def edit(t: Tensors, m: Meta) -> None:
        del t[name]

    return edit


def _poison(name: str, value: float) -> Callable[[Tensors, Meta], None]:
    def edit(t: Tensors, m: Meta) -> None:
        x = t[name].clone()
        x.view(-1)[-1] = value
        t[name] = x

    return edit


def _meta(**changes: Any) -> Callable[[Tensors, Meta], None]:
    return lambda t, m: m.update(changes)


PROMPT_CASES: dict[str, tuple[str, Callable[[Tensors, Meta], Any], str]] = {
    # name: (base file, edit, word the message must hold)
    "xs_int64": ("prompts", _set("xs", lambda x: x.long()), "dtype"),
    "xs_float16": ("prompts", _set("xs", lambda x: x.half()), "dtype"),
    "ys_int32": ("prompts", _set("ys", lambda x: x.int()), "dtype"),
    "norm_bool": ("prompts", _set("norm", lambda x: x > 0), "dtype"),
    "ys_fewer_points": ("prompts", _set("ys", lambda x: x[:, :, :-1].contiguous()), "ys"),
    "ys_fewer_prompts": ("prompts", _set("ys", lambda x: x[:, :-1].contiguous()), "ys"),
    "ys_5d": ("prompts", _set("ys", lambda x: x[..., None, None].contiguous()), "ys"),
    "xs_3d": ("prompts", _set("xs", lambda x: x[0].contiguous()), "xs"),
    "xs_no_prompts": ("prompts", _set("xs", lambda x: x[:, :0].contiguous()), "xs"),
    "norm_short": ("prompts", _set("norm", lambda x: x[:1].contiguous()), "norm"),
    "norm_2d": ("prompts", _set("norm", lambda x: x[:, None].contiguous()), "norm"),
    "no_ys": ("prompts", _drop("ys"), "missing"),
    "no_norm": ("prompts", _drop("norm"), "missing"),
    "extra_tensor": ("prompts", lambda t, m: t.update(w=torch.zeros(3)), "unexpected"),
    "query_xs_alone": ("queries", _drop("query_ys"), "missing"),
    "query_ys_shape": ("queries", _set("query_ys", lambda x: x[:, :, :-1].contiguous()),
                       "query"),
    "query_xs_dtype": ("queries", _set("query_xs", lambda x: x.long()), "dtype"),
    "nan_xs": ("prompts", _poison("xs", float("nan")), "NaN"),
    "inf_ys": ("prompts", _poison("ys", float("inf")), "infinite"),
    "nan_norm": ("prompts", _poison("norm", float("nan")), "NaN"),
    "nan_query": ("queries", _poison("query_xs", float("nan")), "NaN"),
    "zero_norm": ("prompts", _poison("norm", 0.0), "positive"),
    "negative_norm": ("prompts", _poison("norm", -1.0), "positive"),
    "levels_longer": ("prompts", _meta(levels=[1.0, 2.0, 3.0]), "level"),
    "levels_shorter": ("prompts", _meta(levels=[1.0]), "level"),
    "levels_empty": ("prompts", _meta(levels=[]), "levels"),
    "levels_not_numbers": ("prompts", _meta(levels=["a", "b"]), "levels"),
    "levels_nan": ("prompts", _meta(levels=[float("nan"), 1.0]), "levels"),
    "levels_string": ("prompts", _meta(levels="1.0, 2.0"), "levels"),
    "task_not_string": ("prompts", _meta(task=5), "task"),
    "no_task": ("prompts", lambda t, m: m.pop("task") and None, "lacks"),
    "meta_not_json": ("prompts", lambda t, m: {"iclbench": "{task: x"}, "JSON"),
    "meta_list": ("prompts", lambda t, m: {"iclbench": "[1, 2]"}, "object"),
    "meta_other_key": ("prompts", lambda t, m: {"other": "{}"}, "iclbench"),
    "no_metadata": ("prompts", lambda t, m: {}, "iclbench"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_corrupt_prompt_files(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    base, edit, word = PROMPT_CASES[case]
    path = rewrite(files[base], tmp_path / f"{case}.safetensors", edit)
    raises_naming(path, word, load_prompts)


# ------------------------------------------------------------------------------------------------
# model files


def _spec(**changes: Any) -> Callable[[Tensors, Meta], None]:
    return lambda t, m: m["spec"].update(changes)


MODEL_CASES: dict[str, tuple[str, Callable[[Tensors, Meta], Any], str]] = {
    "weight_float64": ("model", _set("blocks.0.attn.c_attn.weight", lambda x: x.double()),
                       "dtype"),
    "weight_float16": ("model", _set("read_out.weight", lambda x: x.half()), "dtype"),
    "weight_int64": ("model", _set("ln_f.weight", lambda x: x.long()), "dtype"),
    "weight_transposed": ("model", _set("blocks.1.mlp.0.weight", lambda x: x.t().contiguous()),
                          "shape"),
    "weight_scalar": ("model", _set("blocks.0.ln_1.bias", lambda x: x[0].clone()), "shape"),
    "missing_tensor": ("model", _drop("blocks.1.attn.c_proj.bias"), "missing"),
    "missing_read_in": ("model", _drop("read_in.weight"), "missing"),
    "extra_tensor": ("model", lambda t, m: t.update(extra=torch.zeros(2)), "unexpected"),
    "extra_block": ("model", lambda t, m: t.update({"blocks.2.ln_1.weight": torch.ones(16)}),
                    "blocks"),
    "nan_weight": ("model", _poison("blocks.0.attn.c_attn.weight", float("nan")), "NaN"),
    "inf_bias": ("model", _poison("read_out.bias", float("-inf")), "infinite"),
    "nan_qk_norm": ("model", _poison("blocks.1.attn.core.ln_q", float("nan")), "NaN"),
    "spec_n_embd": ("model", _spec(n_embd=32), "shape"),
    # a spec that claims a large model: checked against the file's tensors before anything is
    # built (2**14: 24 GB of float32 weights; before issue 23, load_model allocated them)
    "spec_large_n_embd": ("model", _spec(n_embd=2**14), "shape"),
    "spec_huge_n_embd": ("model", _spec(n_embd=2**40), "shape"),
    "spec_huge_n_positions": ("model", _spec(n_positions=10**15), "shape"),
    "spec_n_dims": ("model", _spec(n_dims=4), "shape"),
    "spec_n_layer": ("model", _spec(n_layer=3), "n_layer"),
    "spec_huge_n_layer": ("model", _spec(n_layer=10**12), "n_layer"),
    "spec_n_head": ("model", _spec(n_head=4), "shape"),
    "spec_n_out": ("model", _spec(n_out=2), "shape"),
    "spec_no_qk_norm": ("model", _spec(attention_options={}), "unexpected"),
    "spec_huge_landmarks": ("model", _spec(attention="nystrom",
                                           attention_options={"landmarks": 10**12,
                                                              "landmarks_source": "learned"}),
                            "spec"),
    "spec_n_embd_string": ("model", _spec(n_embd="16"), "n_embd"),
    "spec_n_embd_float": ("model", _spec(n_embd=16.0), "n_embd"),
    "spec_n_embd_bool": ("model", _spec(n_layer=True), "n_layer"),
    "spec_n_embd_negative": ("model", _spec(n_embd=-16), "n_embd"),
    "spec_n_embd_indivisible": ("model", _spec(n_embd=15), "divisible"),
    "spec_missing_key": ("model", lambda t, m: m["spec"].pop("n_embd") and None, "n_embd"),
    "spec_unknown_key": ("model", _spec(dropout=0.1), "unknown"),
    "spec_unknown_attention": ("model", _spec(attention="nope"), "nope"),
    "spec_bad_attention_option": ("model", _spec(attention_options={"qk_norm": True, "x": 1}),
                                  "spec"),
    "spec_attention_options_list": ("model", _spec(attention_options=[1]), "attention_options"),
    "spec_not_object": ("model", lambda t, m: m.update(spec=[16, 2]), "spec"),
    "no_spec": ("model", lambda t, m: m.pop("spec") and None, "spec"),
    "meta_not_json": ("model", lambda t, m: {"iclbench": "spec: 1"}, "JSON"),
    "meta_string": ("model", lambda t, m: {"iclbench": '"spec"'}, "object"),
    "no_metadata": ("model", lambda t, m: {}, "iclbench"),
    # int8 files
    "int8_weight_float32": ("int8", _set("blocks.0.mlp.2.weight", lambda x: x.float()),
                            "dtype"),
    "int8_weight_uint8": ("int8", _set("read_in.weight", lambda x: x.view(torch.uint8)),
                          "dtype"),
    "int8_scale_float64": ("int8", _set("wpe.weight_scale", lambda x: x.double()), "dtype"),
    "int8_scale_negative": ("int8", _set("blocks.0.attn.c_attn.weight_scale", lambda x: -x),
                            "positive"),
    "int8_scale_zero": ("int8", _set("read_out.weight_scale", lambda x: x * 0), "positive"),
    "int8_input_scale_negative": ("int8", _set("blocks.1.mlp.0.input_scale", lambda x: -x - 1),
                                  "non-negative"),
    "int8_scale_nan": ("int8", _poison("blocks.1.attn.c_proj.weight_scale", float("nan")),
                       "NaN"),
    "int8_missing_scale": ("int8", _drop("blocks.0.attn.c_attn.input_scale"), "missing"),
    "int8_spec_n_embd": ("int8", _spec(n_embd=32), "shape"),
    "int8_spec_huge_n_layer": ("int8", _spec(n_layer=2**40), "n_layer"),
    "int8_options_missing": ("int8", lambda t, m: m["int8"].pop("weight_bits") and None, "int8"),
    "int8_options_type": ("int8", lambda t, m: m["int8"].update(activation_bits="8"), "int8"),
    "int8_options_bits": ("int8", lambda t, m: m["int8"].update(weight_bits=99), "int8"),
    "int8_options_not_object": ("int8", lambda t, m: m.update(int8=7), "int8"),
    "int8_marker_dropped": ("int8", lambda t, m: m.pop("int8") and None, "unexpected"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_corrupt_model_files(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    base, edit, word = MODEL_CASES[case]
    path = rewrite(files[base], tmp_path / f"{case}.safetensors", edit)
    with memory_capped():
        raises_naming(path, word, load_model)


def test_float_weights_in_an_int8_file_do_not_load(files: dict[str, Path], tmp_path: Path) -> None:
    """A float model's tensors under an int8 model's metadata: names and dtypes differ."""
    _, meta = read(files["int8"])
    tensors, _ = read(files["model"])
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"iclbench": json.dumps(meta)})
    raises_naming(path, "not a valid model file", load_model)


# ------------------------------------------------------------------------------------------------
# Parquet tables


@pytest.mark.parametrize("cut", [0, 3, 4, 40, -30, -8, -4, -1])
def test_truncated_parquet(files: dict[str, Path], tmp_path: Path, cut: int) -> None:
    data = files["table"].read_bytes()
    path = tmp_path / "t.parquet"
    path.write_bytes(data[:cut] if cut else b"")
    raises_naming(path, "Parquet", read_parquet)
    raises_naming(path, "Parquet", lambda p: read_parquet(p, ICL_ERRORS))


def test_random_bytes_and_safetensors_are_not_parquet(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    path.write_bytes(torch.randint(0, 256, (2000,), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(1)).numpy().tobytes())
    raises_naming(path, "Parquet", read_parquet)
    raises_naming(files["prompts"], "Parquet", read_parquet)


def _table(edit: Callable[[pa.Table], pa.Table]) -> Callable[[Path, Path], Path]:
    def make(src: Path, dst: Path) -> Path:
        pq.write_table(edit(pq.read_table(src)), dst)
        return dst

    return make


def _retype(col: str, array: pa.Array) -> Callable[[pa.Table], pa.Table]:
    def edit(t: pa.Table) -> pa.Table:
        i = t.column_names.index(col)
        return t.set_column(i, pa.field(col, array.type), array)

    return edit


TABLE_CASES: dict[str, tuple[Callable[[pa.Table], pa.Table], str]] = {
    "missing_error": (lambda t: t.drop_columns(["error"]), "lacks"),
    "missing_two": (lambda t: t.drop_columns(["task", "n_prompts"]), "lacks"),
    "error_as_string": (_retype("error", pa.array(["1.0", "0.5"])), "error"),
    "n_examples_as_float": (_retype("n_examples", pa.array([0.0, 1.0])), "n_examples"),
    "n_examples_with_null": (_retype("n_examples", pa.array([0, None], pa.int64())), "missing"),
    "seed_as_string": (_retype("seed", pa.array(["1", "2"])), "seed"),
    "task_as_int": (_retype("task", pa.array([1, 2])), "task"),
    "ood_level_as_bool": (_retype("ood_level", pa.array([True, False])), "ood_level"),
    "n_prompts_all_null": (_retype("n_prompts", pa.nulls(2)), "n_prompts"),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_parquet_against_its_schema(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    edit, word = TABLE_CASES[case]
    path = _table(edit)(files["table"], tmp_path / f"{case}.parquet")
    raises_naming(path, word, lambda p: read_parquet(p, ICL_ERRORS))
    try:  # without a schema, a readable table reads unless pandas cannot convert it
        read_parquet(path)
    except ValueError as err:  # (the pandas metadata names a dtype the column does not hold)
        assert str(path) in str(err)


def test_parquet_schema_accepts_what_the_writers_write(files: dict[str, Path],
                                                       tmp_path: Path) -> None:
    df = read_parquet(files["table"], ICL_ERRORS)
    assert df.equals(read_parquet(files["table"])) and list(df.columns) == list(ICL_ERRORS)
    # an all-missing nullable column (pandas writes a column of Nones as Arrow's null type),
    # extra columns and nullable integers with values are fine
    path = _table(_retype("seed", pa.nulls(2)))(files["table"], tmp_path / "n.parquet")
    read_parquet(path, ICL_ERRORS)
    write_parquet(tidy(df.assign(seed=[1, pd.NA]), ICL_ERRORS).assign(extra=1.0),
                  tmp_path / "x.parquet")
    read_parquet(tmp_path / "x.parquet", ICL_ERRORS)


def test_aggregation_names_the_bad_table(files: dict[str, Path], tmp_path: Path) -> None:
    from iclbench.jobs import aggregate_results

    bad = _table(lambda t: t.drop_columns(["norm"]))(files["table"], tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet: table lacks column"):
        aggregate_results([files["table"], bad], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
