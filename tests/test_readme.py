"""The README's results tables are rendered from the summary tables, not typed."""

from __future__ import annotations

import pandas as pd
import pytest

from iclbench.readme import BEGIN, END, key_examples, render, splice, task_table


def _rows(model: str, mode: str, kind: str, seed: object, errors: list[float]) -> pd.DataFrame:
    n = len(errors)
    return pd.DataFrame({
        "task": "linear_regression", "model": model, "kind": kind, "mode": mode, "seed": seed,
        "ood": "none", "ood_level": 0.0, "n_examples": range(n), "error": errors,
        "error_lo": [e * 0.9 for e in errors], "error_hi": [e * 1.1 for e in errors],
        "confidence": 0.9, "norm": 3.0, "n_prompts": 64, "device": "cpu", "torch_version": "x",
    })


def _table() -> pd.DataFrame:
    errs = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]  # k = 0..6 with d = 3
    return pd.concat([
        _rows("softmax", "trained", "transformer", 0, errs),
        _rows("softmax", "trained", "transformer", 1, [e + 0.1 for e in errs]),
        _rows("relu", "trained", "transformer", 0, [1.0] * 7),
        _rows("relu", "trained", "transformer", 1, [1.0] * 7),
        _rows("least_squares", "baseline", "baseline", pd.NA, [1.0, 0.7, 0.3, 0, 0, 0, 0]),
        # another OOD setting must not enter the in-distribution table
        _rows("softmax", "trained", "transformer", 0, [9.0] * 7).assign(ood="shift"),
    ], ignore_index=True)


def test_key_examples_are_inside_the_prompt_and_distinct() -> None:
    assert key_examples(3, 7) == {"k = d - 1 = 2": 2, "k = 2d = 6": 6}  # 2d is the last k
    assert key_examples(5, 21) == {"k = d - 1 = 4": 4, "k = 2d = 10": 10, "last k = 20": 20}
    assert key_examples(5, 8) == {"k = d - 1 = 4": 4, "last k = 7": 7}


def test_task_table_holds_the_errors_of_the_data() -> None:
    text = task_table(_table(), "linear_regression", 3)
    lines = text.splitlines()
    assert lines[0] == "| model | mode | k = d - 1 = 2 | k = 2d = 6 |"
    # several seeds: mean [min, max] over seeds; rows by mode, then by error at the middle k
    assert lines[2] == "| softmax | trained | 0.650 [0.600, 0.700] of 2 seeds | 0.250 [0.200, 0.300] of 2 seeds |"
    assert lines[3].startswith("| relu | trained | 1.000 [1.000, 1.000] of 2 seeds")
    assert lines[4] == "| least_squares | baseline | 0.300 [0.270, 0.330] | 0.000 |"
    assert "9.000" not in text  # OOD rows stay out


def test_one_seed_shows_the_bootstrap_interval() -> None:
    df = _table()
    df = df[df["seed"].isna() | (df["seed"] == 0)]
    text = task_table(df, "linear_regression", 3)
    assert "| softmax | trained | 0.600 [0.540, 0.660] | 0.200 [0.180, 0.220] |" in text


def test_render_and_splice_replace_only_the_block() -> None:
    block = render(_table(), None, 3)
    assert "**linear_regression**" in block and "2 training seeds" in block
    readme = f"# Title\n\nintro\n\n{BEGIN}\nold numbers\n{END}\n\n## Next\n"
    out = splice(readme, block)
    assert out.startswith("# Title\n\nintro\n\n") and out.endswith(f"{END}\n\n## Next\n")
    assert "old numbers" not in out and block in out
    assert splice(out, block) == out  # idempotent
    with pytest.raises(ValueError, match="markers"):
        splice("# no markers\n", block)


def test_unknown_task_is_an_error() -> None:
    with pytest.raises(ValueError, match="no in-distribution rows for task 'decision_tree'"):
        task_table(_table(), "decision_tree", 3)
