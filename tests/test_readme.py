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


def _profile(rows: list[tuple[str, str, int, float, float, int]]) -> pd.DataFrame:
    """Profile rows (model, mode, tokens, latency, softmax latency, flops) at batch 1."""
    return pd.DataFrame([{"model": m, "mode": o, "context_tokens": t, "batch_size": 1,
                          "latency_s": lat, "softmax_latency_s": soft, "flops": f,
                          "int8_ops": 0, "threads": 2, "device": "cpu"}
                         for m, o, t, lat, soft, f in rows])


def test_length_table_reads_accuracy_against_cost_at_the_tasks_length() -> None:
    from iclbench.readme import length_table, render_at_length

    errs = _table()
    errs = errs[errs["seed"].isna() | (errs["seed"] == 0)]
    errs = pd.concat([errs, _rows("nystrom", "swapped", "transformer", 0, [0.4] * 7),
                      _rows("nystrom", "finetuned", "transformer", 0, [0.3] * 7)])
    # the task's length: 7 points, 14 tokens; a row at another length must not be read
    prof = _profile([("softmax", "trained", 14, 2.0, 2.0, 1000),
                     ("nystrom", "swapped", 14, 0.5, 2.0, 250),
                     ("nystrom", "swapped", 28, 9.0, 2.0, 1)])
    text = length_table(errs, prof, "linear_regression")
    lines = text.splitlines()
    assert lines[0] == ("| model | mode | k = L/4 = 1 | last k = 6 | vs softmax | speed-up at 14 "
                        "tokens | FLOPs ratio | int8 ops (M) |")
    # fixed order: trained, finetuned, swapped, then baselines; softmax's ratio 1 by definition
    assert lines[2] == ("| softmax | trained | 0.800 [0.720, 0.880] | 0.200 [0.180, 0.220] | "
                        "1.00x | 1.00x | 1.00x | - |")
    # a model the profile does not cover shows no cost
    assert lines[3].startswith("| relu | trained |") and lines[3].endswith("| 5.00x | - | - | - |")
    assert lines[4].startswith("| nystrom | finetuned |") and "| 1.50x | 4.00x | 4.00x |" in lines[4]
    assert lines[5].startswith("| nystrom | swapped |") and "| 2.00x | 4.00x | 4.00x |" in lines[5]
    assert lines[6].startswith("| least_squares | baseline |") and lines[6].endswith("| - | - | - |")
    assert "1 training seed;" in render_at_length(errs, prof)
    with pytest.raises(ValueError, match="no rows at 14 tokens"):
        length_table(errs, prof[prof["context_tokens"] == 28], "linear_regression")


def test_each_config_has_its_own_block() -> None:
    from iclbench.readme import markers

    assert markers("config/config.yaml") == (BEGIN, END)
    begin, end = markers("config/long.yaml")
    assert "config/long.yaml" in begin and begin != BEGIN and end != END
    readme = f"{BEGIN}\nA\n{END}\n\n{begin}\nB\n{end}\n"
    out = splice(readme, "new", begin, end)
    assert f"{BEGIN}\nA\n{END}" in out and f"{begin}\nnew\n{end}" in out
