"""Result files: the Parquet schemas and atomic writers.

Every writer writes to a temporary file in the destination folder and renames it into place, so a
killed job never leaves a half-written output. Parquet tables are written without the pandas index
and with a fixed column order and dtypes, so the same rows give byte-identical files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: ``icl_errors`` columns: one row per (task, model, mode, seed, ood, ood_level, n_examples)
ICL_ERRORS: dict[str, str] = {
    "task": "string",  # registry name of the function class
    "model": "string",  # variant name for a transformer, baseline name otherwise
    "kind": "string",  # "transformer" or "baseline"
    "mode": "string",  # "trained", "swapped" (variant put into a softmax model), "baseline"
    "seed": "Int64",  # training seed; <NA> for baselines, which are not trained
    "ood": "string",  # "none" in distribution, else the OOD setting's name
    "ood_level": "float64",  # the setting's level (0 for none)
    "n_examples": "int64",  # in-context examples before the query
    "error": "float64",  # mean squared error divided by `norm`
    "error_lo": "float64",  # bootstrap interval, lower end
    "error_hi": "float64",  # bootstrap interval, upper end
    "confidence": "float64",  # the interval's coverage (0.9 -> 5th to 95th percentile)
    "norm": "float64",  # what the squared error was divided by (Var(y) in distribution)
    "n_prompts": "int64",  # prompts averaged
    "device": "string",
    "torch_version": "string",
}


#: ``profile`` columns: one row per (model, mode, batch_size, context_tokens); see iclbench.profiling
PROFILE: dict[str, str] = {
    "model": "string",  # variant name (registry key under variants: or swapped:)
    "mode": "string",  # "trained" (the variant's own model) or "swapped" (put into a softmax model)
    "context_tokens": "int64",  # prompt length in tokens (2 per in-context example)
    "batch_size": "int64",
    "device": "string",
    "dtype": "string",
    "threads": "int64",  # torch threads while timing
    # forward floating-point operations, 2 per multiply-add (causal fused attention counted as
    # computed, see profiling); int8 matmuls are not in it but in int8_ops
    "flops": "int64",
    "int8_ops": "int64",  # forward integer operations of int8 matmuls, 2 per multiply-add (0: none)
    "latency_s": "float64",  # median seconds per forward
    "latency_iqr_s": "float64",  # interquartile range of the seconds per forward
    "n_timed": "int64",  # timed blocks behind the median
    # the trained softmax model of the same shape, timed in turns with this one in the same job
    # (the paired reference for speed-ups); softmax's own rows: its latency_s
    "softmax_latency_s": "float64",
    "peak_mem_bytes": "int64",  # peak allocator bytes during a forward above those held before it
    "mem_method": "string",  # how peak_mem_bytes was measured
    "uncounted_ops": "string",  # comma-separated ops that look like matmuls but have no formula
    "n_dims": "int64",  # model shape: input dimension d ...
    "n_embd": "int64",
    "n_layer": "int64",
    "n_head": "int64",
    "torch_version": "string",
}


def tidy(df: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Columns in schema order with schema dtypes; raises naming any missing column."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    return df[list(schema)].astype(dict(schema)).reset_index(drop=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


#: which Arrow column types a schema dtype accepts (the types :func:`write_parquet` writes for it,
#: and their close relatives), and whether the column may hold nulls
_ARROW_KINDS: dict[str, tuple[str, Callable[[pa.DataType], bool], bool]] = {
    "string": ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), True),
    "Int64": ("an integer", pa.types.is_integer, True),
    "int64": ("an integer", pa.types.is_integer, False),
    "float64": ("a floating-point", pa.types.is_floating, True),
    "bool": ("a boolean", pa.types.is_boolean, False),
}


def read_parquet(path: str | Path, schema: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a Parquet file; a truncated or corrupt file raises naming the file.

    With ``schema`` (column -> dtype, as :data:`ICL_ERRORS`), the file must hold every column of
    it with a matching type (strings for ``string``, integers for ``int64``/``Int64`` and no
    missing values for ``int64``, floats for ``float64``), checked before any conversion; extra
    columns are allowed and every column is returned as read.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    if schema is not None:
        check_columns(table, schema, path)
    try:
        return table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, KeyError) as err:
        # e.g. a pandas metadata entry that does not match the columns
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None


def check_columns(table: pa.Table, schema: Mapping[str, str], path: str | Path) -> None:
    """Raise naming ``path`` where ``table`` lacks a column of ``schema`` or holds it as another
    type (see :func:`read_parquet`)."""
    missing = [c for c in schema if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: table lacks column(s) {missing}")
    wrong = []
    for col, dtype in schema.items():
        arrow_type = table.schema.field(col).type
        kind = _ARROW_KINDS.get(dtype)
        if kind is None:
            continue  # a dtype without a rule: tidy() converts or raises later
        words, accepts, nullable = kind
        column = table.column(col)
        if pa.types.is_null(arrow_type) and nullable:
            continue  # every value missing: pandas writes a column of Nones so
        if not accepts(arrow_type):
            wrong.append(f"{col!r} is {arrow_type}, not {words} column ({dtype})")
        elif not nullable and column.null_count:
            wrong.append(f"{col!r} has {column.null_count} missing value(s) ({dtype})")
    if wrong:
        raise ValueError(f"{path}: wrong column type(s): {'; '.join(wrong)}")


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_with(writer: Callable[[Path], None], path: str | Path) -> None:
    """Run ``writer(tmp_path)`` and rename the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
