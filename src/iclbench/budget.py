"""Memory bounds of every heavy job, checked when the DAG is built.

A config can pass the schema and every registry check and still ask for a job that cannot run: a
depth-40 decision tree holds 2^41 numbers per prompt, a long profile context a T x T score matrix
per head. Such a job would fail only on its worker, after the queue. :func:`check_budget` estimates
the peak memory of each heavy job from the config alone (no tensor is built) and raises a
:class:`~iclbench.config.ConfigError` that names the config key behind the largest part of the
estimate, the estimate and the rule's ``mem_mb``.

An estimate is the process's own footprint (:data:`PROCESS_MB`: Python, torch and the libraries)
plus :data:`SAFETY` times the sum of its *terms*, each the bytes that one config key drives:

- the sampled functions and prompts (``tasks.<task>.options`` via :meth:`Task.function_numel` and
  :meth:`Task.workspace_numel`; ``eval.n_prompts`` and ``ood.<setting>.levels`` for prompt files),
- the model's activations (:data:`ACTIVATIONS_TRAIN` floats per token, layer and channel saved for
  the backward pass in training, :data:`ACTIVATIONS_INFER` live in a forward without autograd),
- the attention's own workspace (:meth:`Attention.workspace_numel`, per head and prompt),
- the weights, with gradients and Adam's moments in training,
- the bootstrap resamples (``eval.bootstrap``) and a baseline's workspace
  (:meth:`Baseline.workspace_bytes`).

The constants are upper bounds of peaks measured with the CPU allocator's events
(``tests/test_budget.py`` measures a training step and a forward of every variant and checks that
the estimate covers them). ``resources.<rule>.mem_mb`` in the config, or a profile's
``set-resources``, raises a rule's limit; the rules declare the same value to the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iclbench.config import (
    ConfigError,
    ModelRun,
    finetune_tasks,
    finetune_train,
    model_runs,
    parse_config,
    prompt_tokens,
    task_train,
    task_variants,
    train_key,
)

#: resident memory of a job before it holds any data: Python, torch, NumPy, pandas, scikit-learn
PROCESS_MB = 512
#: the rules whose memory is bounded, with their default ``mem_mb``
MEM_MB: dict[str, int] = {
    "sample_eval_prompts": 2000,
    "train_model": 2000,
    "finetune_model": 2000,
    "evaluate_model": 2000,
    "evaluate_baseline": 2000,
    "profile_model": 4000,
}
#: the margin on the data terms
SAFETY = 1.25
#: float32 elements per token, layer and channel saved for the backward pass (measured: 18-28)
ACTIVATIONS_TRAIN = 32
#: float32 elements per token and channel live in a forward without autograd (one layer at a time)
ACTIVATIONS_INFER = 16
#: bytes per weight in training: the weight, its gradient, Adam's two moments, a checkpoint's copy
#: of all four
WEIGHT_BYTES_TRAIN = 4 * 8
FLOAT = 4
#: bytes per element of a sampled function and of a task's evaluate workspace: int64 indices
#: (a tree's split coordinates), or a float32 result next to its input (a network's hidden layer)
FUNCTION = 8
MiB = 1 << 20


@dataclass(frozen=True)
class Term:
    key: str  # the config key that drives it
    what: str
    bytes: int


@dataclass(frozen=True)
class Estimate:
    rule: str
    job: str
    terms: tuple[Term, ...]

    @property
    def mb(self) -> int:
        return PROCESS_MB + math.ceil(SAFETY * sum(t.bytes for t in self.terms) / MiB)

    @property
    def largest(self) -> Term:
        """The config key behind the largest share (terms of one key summed)."""
        by_key: dict[str, list[Term]] = {}
        for t in self.terms:
            by_key.setdefault(t.key, []).append(t)
        key, terms = max(by_key.items(), key=lambda kv: sum(t.bytes for t in kv[1]))
        return Term(key, " and ".join(t.what for t in terms), sum(t.bytes for t in terms))


def mem_limits(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Each bounded rule's ``mem_mb``: the default, the config's ``resources.<rule>.mem_mb``, then
    ``overrides`` (Snakemake's ``--set-resources``, e.g. from a profile) where it sets an integer."""
    limits = dict(MEM_MB)
    for rule, res in (raw.get("resources") or {}).items():
        limits[rule] = int(res["mem_mb"])
    for rule, res in (overrides or {}).items():
        value = _plain_int(res.get("mem_mb")) if hasattr(res, "get") else None
        if rule in limits and value is not None:
            limits[rule] = value
    return limits


def _plain_int(value: Any) -> int | None:
    value = getattr(value, "value", value)  # snakemake's Resource wraps its value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_budget(raw: Mapping[str, Any], limits: Mapping[str, int] | None = None) -> None:
    """Raise ``ConfigError`` for the first job whose estimate exceeds its rule's ``mem_mb``."""
    limits = mem_limits(raw) if limits is None else limits
    for est in estimates(raw):
        limit = limits[est.rule]
        if est.mb > limit:
            top = est.largest
            raise ConfigError(
                f"{top.key}: job {est.rule} ({est.job}) needs an estimated {est.mb:,} MB, over "
                f"the rule's mem_mb of {limit:,} MB; the largest part is {top.what} "
                f"({math.ceil(top.bytes / MiB):,} MB). Lower {top.key}, or raise "
                f"resources.{est.rule}.mem_mb if the machine has the memory"
            )


def estimates(raw: Mapping[str, Any]) -> Iterable[Estimate]:
    """One estimate per heavy job of the DAG (per task, OOD setting, variant and mode; seeds
    share theirs)."""
    from iclbench.baselines import BASELINES
    from iclbench.ood import IN_DISTRIBUTION, OOD

    n_dims = int(raw["n_dims"])
    ev = raw["eval"]
    runs: dict[str, list[ModelRun]] = {}
    for run in model_runs(raw):
        runs.setdefault(run.task, []).append(run)
    oods = {IN_DISTRIBUTION: 1, **{o: len(s["levels"]) for o, s in raw["ood"].items()}}
    for name, tcfg in raw["tasks"].items():
        prompts = _prompts(name, tcfg, n_dims)
        files = [(o, levels, int(ev["n_prompts"] if o == IN_DISTRIBUTION else ev["n_prompts_ood"]))
                 for o, levels in oods.items() if OOD.get(o).applies_to(name)]
        for ood, levels, n in files:
            yield Estimate("sample_eval_prompts", f"{name}, OOD {ood}",
                           _sampling(prompts, int(ev["n_prompts"]), name)
                           + _file(prompts, levels, n, ood))
        for variant in task_variants(raw, name):
            yield Estimate("train_model", f"{name}/{variant}",
                           _training(raw, prompts, variant, raw["variants"][variant],
                                     task_train(raw, name), f"variants.{variant}",
                                     train_key(raw, name, "batch_size")))
        if name in finetune_tasks(raw):
            for variant in raw.get("finetuned") or {}:
                options = raw["finetuned"][variant] or {}
                train = finetune_train(raw, name)
                terms = _training(raw, prompts, variant, options, train, f"finetuned.{variant}",
                                  "finetune.batch_size")
                curve = int(raw["finetune"]["curve_prompts"])
                terms += (Term("finetune.curve_prompts", "the conversion curve's prompts",
                               FUNCTION * curve * prompts.per_prompt),)
                terms += _inference(raw, prompts.tokens, variant, options, min(curve, 256),
                                    f"finetuned.{variant}", "finetune.curve_prompts")
                yield Estimate("finetune_model", f"{name}/{variant}", terms)
        for run in runs.get(name, ()):
            options = raw[run.section][run.variant] or {}
            for ood, levels, n in files:
                yield Estimate("evaluate_model", f"{name}/{run.variant}-{run.mode}, OOD {ood}",
                               _file(prompts, levels, n, ood)
                               + _inference(raw, prompts.tokens, run.variant, options,
                                            min(int(ev["batch_size"]), n),
                                            f"{run.section}.{run.variant}", "eval.batch_size")
                               + _bootstrap(ev, n, prompts.n_points))
        for baseline, options in raw["baselines"].items():
            kind = BASELINES.get(baseline)
            if not kind.applies_to(name):
                continue
            for ood, levels, n in files:
                try:
                    work = kind.workspace_bytes(n, prompts.n_points, n_dims, options or {})
                except (ValueError, TypeError) as err:
                    raise ConfigError(f"baselines.{baseline}: {err}") from None
                yield Estimate("evaluate_baseline", f"{name}/{baseline}, OOD {ood}",
                               _file(prompts, levels, n, ood)
                               + (Term(f"baselines.{baseline}", f"{baseline}'s workspace", work),)
                               + _bootstrap(ev, n, prompts.n_points))
    yield from _profiles(raw)


@dataclass(frozen=True)
class _Prompts:
    task: str
    key: str  # the task option that drives its size, or its options section
    n_points: int
    n_dims: int
    out_dims: int
    function: int  # elements of one prompt's function
    workspace: int  # elements evaluate holds per prompt

    @property
    def tokens(self) -> int:
        return prompt_tokens(self.n_points)

    @property
    def per_prompt(self) -> int:
        """Elements of one sampled prompt: its function, inputs, labels and evaluate's work."""
        return self.function + self.workspace + self.n_points * (self.n_dims + self.out_dims)


def _prompts(name: str, tcfg: Mapping[str, Any], n_dims: int) -> _Prompts:
    from iclbench.tasks import build_task

    options = dict(tcfg.get("options") or {})
    n_points = int(tcfg["n_points"])

    def size(opts: Mapping[str, Any]) -> int:
        try:
            task = build_task(name, n_dims, opts)
        except ValueError:  # the default does not fit this config (e.g. sparsity > n_dims)
            return function + work
        return task.function_numel() + task.workspace_numel(n_points)

    task = build_task(name, n_dims, options)
    try:
        function, work = task.function_numel(), task.workspace_numel(n_points)
        # the option whose default value shrinks the functions most is the one to name
        drops = {k: function + work - size({o: v for o, v in options.items() if o != k})
                 for k in options}
    except (RuntimeError, MemoryError, TypeError, OverflowError) as err:  # sampled to count
        raise ConfigError(f"tasks.{name}.options ({_show(options)}): one function could not be "
                          f"sampled to size it ({err})") from None
    top = max(drops, key=drops.__getitem__, default=None)
    key = f"tasks.{name}.options" + (f".{top}" if top is not None and drops[top] > 0 else "")
    return _Prompts(name, key, n_points, n_dims, task.out_dims, function, work)


def _show(options: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (options or {}).items()) or "defaults"


def _sampling(p: _Prompts, n_prompts: int, name: str) -> tuple[Term, ...]:
    return (Term(p.key, f"{n_prompts} sampled functions of {name}",
                 FUNCTION * n_prompts * (p.function + p.workspace)),)


def _file(p: _Prompts, levels: int, n_prompts: int, ood: str) -> tuple[Term, ...]:
    from iclbench.ood import IN_DISTRIBUTION

    key = "eval.n_prompts" if ood == IN_DISTRIBUTION else f"ood.{ood}.levels"
    # inputs and labels of every level, with separate queries (at most twice) and a copy
    numel = levels * n_prompts * p.n_points * (p.n_dims + p.out_dims) * 2 * 2
    return (Term(key, f"the prompt file ({levels} levels x {n_prompts} prompts)", FLOAT * numel),)


def _bootstrap(ev: Mapping[str, Any], n_prompts: int, n_points: int) -> tuple[Term, ...]:
    b = int(ev["bootstrap"])
    # the drawn indices (int64), the counts (float64) and the resampled means (float64)
    return (Term("eval.bootstrap", f"{b} bootstrap resamples", 8 * b * (2 * n_prompts + n_points)),)


def _shape(raw: Mapping[str, Any], variant: str, options: Mapping[str, Any],
           tokens: int) -> tuple[Any, Any]:
    """The model spec that ``variant`` trains or runs, and its attention class."""
    from iclbench.attention import ATTENTION
    from iclbench.model import ModelSpec
    from iclbench.variants import get_variant

    m = raw["model"]
    base = ModelSpec(int(raw["n_dims"]), tokens, int(m["n_embd"]), int(m["n_layer"]),
                     int(m["n_head"]))
    spec = get_variant(variant).model_spec(base, dict(options))
    return spec, ATTENTION.get(spec.attention)


def _weights(spec: Any) -> int:
    """Weights of a decoder (blocks, position table, read-in and read-out; attention extras such
    as learned landmarks are counted by the attention's workspace)."""
    E, L = spec.n_embd, spec.n_layer
    return L * (12 * E * E + 13 * E) + spec.n_positions * E + (spec.n_dims + 4) * E


def _attention_options(spec: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(spec.attention_options).items() if k != "qk_norm"}


def _training(raw: Mapping[str, Any], p: _Prompts, variant: str, options: Mapping[str, Any],
              train: Mapping[str, Any], variant_key: str, batch_key: str) -> tuple[Term, ...]:
    B = int(train["batch_size"])
    spec, attention = _shape(raw, variant, options, p.tokens)
    E, L, H = spec.n_embd, spec.n_layer, spec.n_head
    opts = _attention_options(spec)
    work = attention.workspace_numel(p.tokens, E // H, opts, True)
    shared = attention.shared_numel(p.tokens, E // H, opts, True)
    return (
        Term(p.key, f"a batch of {B} functions of {p.task}",
             FUNCTION * 2 * B * p.per_prompt),
        Term(batch_key, f"activations of {B} prompts x {p.tokens} tokens x {L} layers x {E}",
             FLOAT * ACTIVATIONS_TRAIN * B * L * p.tokens * E),
        Term(variant_key, f"{spec.attention} attention's workspace at {p.tokens} tokens",
             FLOAT * L * H * (B * work + shared)),
        Term("model", f"{_weights(spec):,} weights with gradients and optimiser state",
             WEIGHT_BYTES_TRAIN * _weights(spec)),
    )


def _inference(raw: Mapping[str, Any], tokens: int, variant: str, options: Mapping[str, Any],
               batch: int, variant_key: str, batch_key: str) -> tuple[Term, ...]:
    spec, attention = _shape(raw, variant, options, tokens)
    E, H = spec.n_embd, spec.n_head
    opts = _attention_options(spec)
    work = attention.workspace_numel(tokens, E // H, opts, False)
    shared = attention.shared_numel(tokens, E // H, opts, False)
    return (
        Term(batch_key, f"a forward of {batch} prompts x {tokens} tokens x {E}",
             FLOAT * ACTIVATIONS_INFER * batch * tokens * E),
        Term(variant_key, f"{spec.attention} attention's workspace at {tokens} tokens",
             FLOAT * H * (batch * work + spec.n_layer * shared)),
        Term("model", f"{_weights(spec):,} weights (and a converted copy)",
             FLOAT * 3 * _weights(spec)),
    )


def _profiles(raw: Mapping[str, Any]) -> Iterable[Estimate]:
    prof = parse_config(raw).profile
    longest = max(prof.context_tokens)
    runs = [("trained", "variants", v) for v in raw["variants"]]
    runs += [("swapped", "swapped", v) for v in raw["swapped"]]
    for mode, section, variant in runs:
        options = raw[section][variant] or {}
        spec, attention = _shape(raw, variant, options, longest)
        E, H = spec.n_embd, spec.n_head
        weights = Term("model", f"{_weights(spec):,} weights (position table of {longest})",
                       FLOAT * 3 * _weights(spec))
        worst: Estimate | None = None
        opts = _attention_options(spec)
        for batch, tokens in prof.grid():
            work = (attention.workspace_numel(tokens, E // H, opts, False)
                    + spec.n_layer * attention.shared_numel(tokens, E // H, opts, False) // batch)
            est = Estimate("profile_model", f"{variant}-{mode} at batch {batch} x {tokens} tokens",
                           (Term("profile.context_tokens",
                                 f"a forward of {batch} x {tokens} tokens x {E}",
                                 FLOAT * ACTIVATIONS_INFER * batch * tokens * E),
                            Term("profile.context_tokens",
                                 f"{spec.attention} attention's workspace at {tokens} tokens",
                                 FLOAT * batch * H * work),
                            weights))
            if worst is None or est.mb > worst.mb:
                worst = est
        if worst is not None:
            yield worst
