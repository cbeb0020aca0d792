"""One function per Snakemake rule: plain dicts from ``params:`` in, files out.

The scripts under ``workflow/scripts`` only unpack ``snakemake`` and call these, so every job can
be run and tested without Snakemake. Each job writes its outputs atomically.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from iclbench import storage
from iclbench.config import (
    EvalConfig,
    ModelConfig,
    ProfileConfig,
    TaskConfig,
    TrainConfig,
    resolve_device,
)
from iclbench.curriculum import Curriculum
from iclbench.evaluate import (
    evaluate,
    load_prompts,
    make_prompts,
    model_predictor,
    save_prompts,
    squared_error,
)
from iclbench.model import ModelSpec, load_model
from iclbench.results import (ICL_ERRORS, PROFILE, read_parquet, tidy, write_json, write_parquet,
                              write_with)
from iclbench.runtime import keep_freed_memory
from iclbench.tasks import Task, build_task
from iclbench.train import Checkpointing, train
from iclbench.variants import Variant, get_variant

log = logging.getLogger("iclbench")


def _torch_job(threads: int) -> None:
    """What every job that runs torch does first: its thread count, and malloc kept from
    returning freed memory to the OS (:mod:`iclbench.runtime`; no page fault per forward)."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def _task(name: str, raw: Mapping[str, Any], n_dims: int) -> tuple[TaskConfig, Any]:
    cfg = TaskConfig.from_dict(name, raw)
    return cfg, build_task(name, n_dims, cfg.options)


def sample_eval_prompts(
    task: str, task_cfg: Mapping[str, Any], n_dims: int, eval_cfg: Mapping[str, Any], ood: str,
    output: str | Path, ood_cfg: Mapping[str, Any] | None = None,
) -> None:
    """Prompts of OOD setting ``ood`` (``none``: in distribution, level 0) at its levels.

    ``ood_cfg`` is the setting's ``ood.<name>`` config section (levels and options); None means
    level 0 and no options, the in-distribution setting's.
    """
    from iclbench.ood import IN_DISTRIBUTION, build_transform

    cfg, fn_class = _task(task, task_cfg, n_dims)
    ev = EvalConfig.from_dict(eval_cfg)
    ood_cfg = ood_cfg or {"levels": [0.0], "options": {}}
    levels = tuple(float(c) for c in ood_cfg["levels"])
    options = dict(ood_cfg.get("options") or {})
    # sampled at the full n_prompts so every setting shares the in-distribution functions and
    # inputs; OOD settings keep the first n_prompts_ood of them
    prompts = make_prompts(fn_class, task, ev.n_prompts, cfg.n_points, ev.seed, ood, levels,
                           build_transform(ood, options))
    if ood != IN_DISTRIBUTION:
        prompts = prompts.head(ev.n_prompts_ood)
    save_prompts(prompts, output)
    log.info("wrote %d prompts of %d points for %s, OOD setting %s at levels %s, to %s",
             prompts.xs.shape[1], cfg.n_points, task, ood, list(levels), output)


@dataclass(frozen=True)
class TrainJob:
    """What training one (task, variant) model needs, built from a rule's ``params``."""

    task: Task
    model_spec: ModelSpec
    train: TrainConfig
    curriculum: Curriculum
    variant: Variant
    options: Mapping[str, Any]
    device: torch.device


def train_job(task: str, variant: str, params: Mapping[str, Any]) -> TrainJob:
    """The model shape, training schedule, variant and device of one training job."""
    n_dims = int(params["n_dims"])
    cfg, fn_class = _task(task, params["task"], n_dims)
    model_cfg = ModelConfig.from_dict(params["model"])
    tc = TrainConfig.from_dict(params["train"])
    options = dict(params["variant_options"])
    kind = get_variant(variant)
    base = ModelSpec(n_dims, cfg.tokens, model_cfg.n_embd, model_cfg.n_layer,
                     model_cfg.n_head, n_out=fn_class.out_dims)
    return TrainJob(fn_class, kind.model_spec(base, options), tc,
                    Curriculum(tc.dims(n_dims), cfg.points), kind, options,
                    resolve_device(str(params["device"])))


def train_model(
    task: str, variant: str, seed: int, params: Mapping[str, Any], threads: int,
    model_path: str | Path, config_path: str | Path, log_path: str | Path,
    checkpoint_path: str | Path | None = None,
) -> None:
    """Train one (task, variant, seed) model; ``params`` holds the config sections it uses.

    With ``checkpoint_path`` (a local path, or a URL under the workflow's remote storage: see
    :mod:`iclbench.storage`), training checkpoints there every ``train.checkpoint_every`` steps,
    resumes from it if present, and deletes it once the outputs are written.
    """
    _torch_job(threads)
    job = train_job(task, variant, params)
    device = job.device
    log.info("training %s/%s seed %d on %s with %d threads", task, variant, seed, device, threads)
    from iclbench.checkpoint import describe, fingerprint

    ckpt = None
    if checkpoint_path is not None:
        ckpt = Checkpointing(storage.as_location(checkpoint_path), job.train.checkpoint_every,
                             fingerprint({"task": task, "variant": variant, "seed": seed,
                                          "params": dict(params)}))
    model, table = train(job.task, job.model_spec, job.train, job.curriculum, seed, task, device,
                         prepare=lambda m: job.variant.prepare_training(m, job.options),
                         checkpointing=ckpt, context=describe(params))
    write_parquet(table.assign(task=task, variant=variant, seed=seed), log_path)
    job.variant.save(model, model_path, job.options,
                     {"task": task, "variant": variant, "seed": str(seed)})
    write_json({"task": task, "variant": variant, "seed": seed, "device": str(device),
                "threads": threads, "torch_version": torch.__version__,
                "python": platform.python_version(), "params": dict(params)}, config_path)
    log.info("final loss %.4f after %d steps", table["loss"].iloc[-1], job.train.steps)
    if ckpt is not None:
        storage.remove(ckpt.path)


#: the conversion curve's columns: error per position of the held-out curve prompts after
#: ``step`` fine-tuning steps (0: the variant just put in, i.e. the swapped model)
CONVERSION: dict[str, str] = {
    "task": "string", "model": "string", "seed": "int64", "step": "int64",
    "n_examples": "int64", "error": "float64", "n_prompts": "int64",
}
#: the curve prompts' own seed (not eval.seed: the curve is a training diagnostic)
CURVE_SEED = 7


def finetune_model(
    task: str, variant: str, seed: int, params: Mapping[str, Any], threads: int,
    softmax_path: str | Path, model_path: str | Path, config_path: str | Path,
    log_path: str | Path, curve_path: str | Path, checkpoint_path: str | Path | None = None,
) -> None:
    """Convert the trained softmax model at ``softmax_path`` to ``variant`` and fine-tune it.

    The variant goes in with :meth:`Variant.convert` (the swap hook; int8: quantization-aware
    training), then the project's training loop runs ``params["train"]`` at full size (no
    curriculum) on its own data stream. Every ``curve_every`` steps (and at step 0) the model is
    scored on ``curve_prompts`` held-out prompts; the curve goes to ``curve_path``.
    """
    _torch_job(threads)
    n_dims = int(params["n_dims"])
    cfg, fn_class = _task(task, params["task"], n_dims)
    spec = TrainConfig.from_dict(params["train"])
    kind, options = get_variant(variant), dict(params["variant_options"])
    device = resolve_device(str(params["device"]))
    softmax = load_model(softmax_path)
    curve_every, n_curve = int(params["curve"]["curve_every"]), int(params["curve"]["curve_prompts"])
    prompts = make_prompts(fn_class, task, n_curve, cfg.n_points, CURVE_SEED)
    xs, ys = prompts.xs[0].to(device), prompts.ys[0].to(device)
    curve: list[pd.DataFrame] = []

    def score(step: int, model: torch.nn.Module) -> None:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            preds = torch.cat([model(xs[i:i + 256], ys[i:i + 256]) for i in range(0, n_curve, 256)])
        model.train(was_training)
        err = (squared_error(preds, ys).mean(0) / fn_class.normaliser).cpu().double().numpy()
        curve.append(pd.DataFrame({"task": task, "model": variant, "seed": seed, "step": step,
                                   "n_examples": range(cfg.n_points), "error": err,
                                   "n_prompts": n_curve}))

    def prepare(_fresh: torch.nn.Module) -> torch.nn.Module:
        model = kind.convert(softmax, options).to(device)
        score(0, model)
        return model

    def on_log(step: int, model: torch.nn.Module) -> None:
        if step % curve_every == 0:
            score(step, model)

    ckpt = None
    if checkpoint_path is not None:
        from iclbench.checkpoint import fingerprint

        ckpt = Checkpointing(storage.as_location(checkpoint_path), spec.checkpoint_every,
                             fingerprint({"task": task, "variant": variant, "seed": seed,
                                          "mode": "finetuned", "params": dict(params)}))
    log.info("converting %s/softmax seed %d to %s and fine-tuning %d steps on %s with %d threads",
             task, seed, variant, spec.steps, device, threads)
    model, table = train(fn_class, softmax.spec, spec, Curriculum.fixed(n_dims, cfg.n_points),
                         seed, f"{task}/finetune/{variant}", device, prepare=prepare,
                         checkpointing=ckpt, on_log=on_log, context=f"conversion to {variant}")
    if curve and int(curve[-1]["step"].iloc[0]) != spec.steps:
        score(spec.steps, model)
    write_parquet(table.assign(task=task, variant=variant, seed=seed), log_path)
    write_parquet(tidy(pd.concat(curve, ignore_index=True), CONVERSION), curve_path)
    kind.save(model, model_path, options,
              {"task": task, "variant": variant, "seed": str(seed), "mode": "finetuned"})
    write_json({"task": task, "variant": variant, "seed": seed, "mode": "finetuned",
                "softmax": str(softmax_path), "device": str(device), "threads": threads,
                "torch_version": torch.__version__, "python": platform.python_version(),
                "params": dict(params)}, config_path)
    log.info("final loss %.4f after %d steps", table["loss"].iloc[-1], spec.steps)
    if ckpt is not None:
        storage.remove(ckpt.path)


def write_run_config(config: Mapping[str, Any], output: str | Path) -> None:
    """The whole config of a run (keys sorted, as the rules read it) as YAML at ``output``: a
    results tree says which config made it, whichever file that config came from."""
    import yaml

    write_with(lambda tmp: tmp.write_text(
        "# the config this results tree was made with (written by rule run_config)\n"
        + yaml.safe_dump(dict(config), sort_keys=True)), output)


def aggregate_conversion(inputs: Sequence[str | Path], output: str | Path) -> None:
    """The conversion curves of every fine-tuned model, one table."""
    frames = [read_parquet(p, CONVERSION) for p in inputs]
    if not frames:
        raise ValueError("aggregate_conversion: no conversion curves to aggregate")
    df = pd.concat(frames, ignore_index=True).sort_values(
        ["task", "model", "seed", "step", "n_examples"], kind="stable")
    write_parquet(tidy(df, CONVERSION), output)


def evaluate_model(
    task: str, variant: str, mode: str, seed: int, params: Mapping[str, Any], threads: int,
    model_path: str | Path, prompt_paths: Sequence[str | Path], output: str | Path,
) -> None:
    """Score a trained model (``mode=trained``) or a softmax model with ``variant`` swapped in."""
    _torch_job(threads)
    device = resolve_device(str(params["device"]))
    ev = EvalConfig.from_dict(params["eval"])
    model = load_model(model_path, device)
    kind, options = get_variant(variant), dict(params["variant_options"])
    if mode == "swapped":
        model = kind.swap(model, options)
    elif mode in ("trained", "finetuned"):
        model = kind.for_inference(model, options)
    else:
        raise ValueError(f"unknown mode {mode!r}; known are: trained, swapped, finetuned")
    labels = {"model": variant, "kind": "transformer", "mode": mode, "seed": seed,
              "device": str(device)}
    frames = [evaluate(model_predictor(model, device), load_prompts(p), labels, ev.bootstrap,
                       ev.confidence, ev.seed, ev.batch_size) for p in prompt_paths]
    write_parquet(pd.concat(frames, ignore_index=True), output)


def evaluate_baseline(
    task: str, baseline: str, params: Mapping[str, Any], threads: int,
    prompt_paths: Sequence[str | Path], output: str | Path,
) -> None:
    from iclbench.baselines import BASELINES, build_baseline

    _torch_job(threads)
    ev = EvalConfig.from_dict(params["eval"])
    if not BASELINES.get(baseline).applies_to(task):
        raise ValueError(f"baseline {baseline!r} does not apply to task {task!r}")
    model = build_baseline(baseline, params["options"])
    labels = {"model": baseline, "kind": "baseline", "mode": "baseline", "seed": pd.NA,
              "device": "cpu"}
    frames = []
    for path in prompt_paths:
        start = time.perf_counter()
        prompts = load_prompts(path)
        prompts = prompts.head(model.prompt_limit(prompts.ood) or ev.n_prompts)
        frames.append(evaluate(model.predict, prompts, labels, ev.bootstrap, ev.confidence,
                               ev.seed, ev.n_prompts))
        log.info("%s on %s/%s: %d levels x %d prompts in %.2f s", baseline, task, prompts.ood,
                 len(prompts.levels), prompts.xs.shape[1], time.perf_counter() - start)
    write_parquet(pd.concat(frames, ignore_index=True), output)


def aggregate_results(inputs: Sequence[str | Path], output: str | Path,
                      over_seeds_output: str | Path | None = None) -> None:
    """Concatenate per-job tables into one tidy, sorted table; and, if asked, the table over
    training seeds (:func:`iclbench.summary.over_seeds`)."""
    from iclbench.summary import OVER_SEEDS, over_seeds

    frames = [read_parquet(p, ICL_ERRORS) for p in inputs]
    if not frames:
        raise ValueError("aggregate_results: no evaluation tables to aggregate")
    df = pd.concat(frames, ignore_index=True)
    keys = ["task", "kind", "model", "mode", "seed", "ood", "ood_level", "n_examples"]
    df = tidy(df.sort_values(keys, na_position="first", kind="stable"), ICL_ERRORS)
    write_parquet(df, output)
    if over_seeds_output is not None:
        write_parquet(tidy(over_seeds(df), OVER_SEEDS), over_seeds_output)


def profile_model(
    variant: str, mode: str, params: Mapping[str, Any], threads: int, output: str | Path,
) -> None:
    """Forward FLOPs and int8 operations, latency and peak memory of one variant across the
    profile grid."""
    from iclbench.profiling import profile_variant

    spec = ProfileConfig.from_dict(params["profile"], params["train_tokens"])
    model_cfg = ModelConfig.from_dict(params["model"])
    base = ModelSpec(int(params["n_dims"]), max(spec.context_tokens), model_cfg.n_embd,
                     model_cfg.n_layer, model_cfg.n_head)
    device = resolve_device(spec.device)
    log.info("profiling %s/%s on %s (%s) with %d threads: %d measurements", variant, mode, device,
             spec.dtype, threads, len(spec.grid()))
    table = profile_variant(variant, mode, dict(params["variant_options"]), base, spec, device,
                            threads)
    write_parquet(tidy(table, PROFILE), output)


def aggregate_profile(inputs: Sequence[str | Path], output: str | Path) -> None:
    """Concatenate the per-variant profile tables into one tidy, sorted table."""
    frames = [read_parquet(p, PROFILE) for p in inputs]
    if not frames:
        raise ValueError("aggregate_profile: no profile tables to aggregate")
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["model", "mode", "batch_size", "context_tokens"], kind="stable")
    write_parquet(tidy(df, PROFILE), output)


def plot_figure(
    name: str, options: Mapping[str, Any], tables: Mapping[str, str | Path], pdf: str, png: str,
) -> None:
    from iclbench.figures import FIGURES, save_figure

    fig_def = FIGURES.get(name)
    schemas = {"icl_errors": ICL_ERRORS, "profile": PROFILE, "conversion": CONVERSION}
    data = {t: read_parquet(tables[t], schemas.get(t)) for t in fig_def.tables}
    fig = fig_def.render(data, options)
    save_figure(fig, pdf, png, dpi=int({**fig_def.options, **options}.get("dpi", 150)))
