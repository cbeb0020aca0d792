"""Evaluation: prompt files, per-position errors with intervals, tidy Parquet, atomic writes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from iclbench.baselines import build_baseline
from iclbench.evaluate import error_table, evaluate, load_prompts, make_prompts, save_prompts
from iclbench.results import ICL_ERRORS, atomic_path, read_parquet, write_parquet
from iclbench.seeding import generator
from iclbench.tasks import build_task


def test_prompt_file_roundtrip_and_determinism(tmp_path) -> None:
    task = build_task("linear_regression", 4)
    a = make_prompts(task, "linear_regression", 32, 9, seed=3)
    save_prompts(a, tmp_path / "p.safetensors")
    save_prompts(make_prompts(task, "linear_regression", 32, 9, seed=3), tmp_path / "q.safetensors")
    assert (tmp_path / "p.safetensors").read_bytes() == (tmp_path / "q.safetensors").read_bytes()
    b = load_prompts(tmp_path / "p.safetensors")
    assert b.xs.shape == (1, 32, 9, 4) and b.ys.shape == (1, 32, 9)
    assert torch.equal(a.xs, b.xs) and b.levels == (0.0,) and b.ood == "none"


def test_error_table_interval_brackets_mean() -> None:
    sq = torch.rand(200, 5, generator=generator(0, "e"))
    t = error_table(sq, 2.0, bootstrap=300, confidence=0.9, rng=generator(0, "b"))
    assert list(t["n_examples"]) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(t["error"].values), sq.double().mean(0) / 2)
    assert (t["error_lo"] < t["error"]).all() and (t["error"] < t["error_hi"]).all()
    # the interval is about 2 * 1.645 standard errors wide
    se = (sq.double() / 2).std(0) / 200**0.5
    width = torch.tensor((t["error_hi"] - t["error_lo"]).values)
    assert torch.all((width / (2 * 1.645 * se) - 1).abs() < 0.25)


def test_evaluate_gives_tidy_rows() -> None:
    task = build_task("linear_regression", 3)
    prompts = make_prompts(task, "linear_regression", 64, 7, seed=0)
    labels = {"model": "least_squares", "kind": "baseline", "mode": "baseline", "seed": pd.NA,
              "device": "cpu"}
    df = evaluate(build_baseline("least_squares").predict, prompts, labels, 50, 0.9, 0, 16)
    assert list(df.columns) == list(ICL_ERRORS)
    assert len(df) == 7 and (df["ood"] == "none").all() and (df["n_prompts"] == 64).all()
    assert df["error"].iloc[3:].max() < 1e-8  # k >= d examples: least squares is exact


def test_atomic_path_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_parquet_names_the_file(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="t.parquet: not a readable Parquet file"):
        read_parquet(path)


def test_separate_queries_are_scored_at_the_full_prompt_length() -> None:
    """With the query at position i equal to the prompt's own x_i (no shift at all), a setting
    with separate queries must score exactly what the in-distribution evaluation scores, even for
    a variant whose layout depends on the prompt's length (combiner's block size ~ sqrt(T)): the
    prompt is evaluated at its full length, as in Garg et al.'s eval_batch, never cut after the
    query (a cut prompt changes combiner's blocks and its predictions)."""
    from dataclasses import replace

    from iclbench.evaluate import model_predictor
    from iclbench.model import Decoder, ModelSpec

    task = build_task("linear_regression", 3)
    plain = make_prompts(task, "linear_regression", 32, 13, seed=0)
    same = replace(plain, ood="orthogonal_query", query_xs=plain.xs.clone(),
                   query_ys=plain.ys.clone())
    model = Decoder(ModelSpec(n_dims=3, n_positions=26, n_embd=16, n_layer=2, n_head=2),
                    generator=generator(0, "len")).eval()
    model.set_attention("combiner", {"block_size": None, "log_size_bias": False})
    predict = model_predictor(model, torch.device("cpu"))
    labels = {"model": "combiner", "kind": "transformer", "mode": "swapped", "seed": 0,
              "device": "cpu"}
    a = evaluate(predict, plain, labels, 20, 0.9, 0, 32)
    b = evaluate(predict, same, labels, 20, 0.9, 0, 32)
    assert list(a["error"]) == list(b["error"])
    # the cut prompt the evaluation used to build: another layout, another prediction
    i = 5
    with torch.no_grad():
        full = predict(plain.xs[0], plain.ys[0])[:, i]
        cut = predict(plain.xs[0, :, : i + 1], plain.ys[0, :, : i + 1])[:, i]
    assert not torch.allclose(full, cut)
