"""The experiment's configuration as frozen dataclasses, checked strictly.

A value travels one way: ``config/config.yaml`` -> JSON schema (``config/schema.yaml``, types and
unknown keys) -> :func:`check` (registry names and cross-field rules) -> plain dicts in a rule's
``params:`` -> the ``*.from_dict`` constructors here, inside the job. Every error names the config
key at fault. The schema has no defaults; the only defaults are the per-entry ``options`` of the
registered tasks, attention variants, baselines and figures, which live beside their code.

This module imports neither torch nor the registries at load time: building the DAG reads it
(:func:`parse_config`, the target lists, the rules' params), and only :func:`check` loads the registries.
Values derived from the config (a prompt's tokens, which model a run reads, which runs the DAG
holds) are defined here once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from iclbench.curriculum import Schedule
from iclbench.registry import UnknownNameError
from iclbench.storage import CHECKPOINTS

if TYPE_CHECKING:
    import torch


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def _schedule(raw: Mapping[str, Any], end: int, where: str) -> Schedule:
    try:
        return Schedule(int(raw["start"]), end, int(raw["inc"]), int(raw["interval"]))
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


#: the variant that swaps go into and conversions start from
BASE_VARIANT = "softmax"
#: how a model is obtained, and the config section that holds its variant's options
MODE_SECTIONS: dict[str, str] = {"trained": "variants", "swapped": "swapped",
                                 "finetuned": "finetuned"}
#: learning-rate schedules after the warm-up: "constant" (the paper's) or a "cosine" decay to 0
LR_SCHEDULES = ("constant", "cosine")


def prompt_tokens(n_points: int) -> int:
    """Tokens of a prompt of ``n_points`` points: an x token and a y token each."""
    return 2 * n_points


@dataclass(frozen=True)
class TaskConfig:
    name: str
    n_points: int
    points: Schedule
    options: Mapping[str, Any] = field(default_factory=dict)
    #: keys of the top-level ``train`` section that this task sets otherwise
    train: Mapping[str, Any] = field(default_factory=dict)
    #: the variants trained from scratch on this task; None: every one under ``variants``
    variants: tuple[str, ...] | None = None

    @property
    def tokens(self) -> int:
        """The longest prompt's tokens: the model's context length."""
        return prompt_tokens(self.n_points)

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> TaskConfig:
        n_points = int(raw["n_points"])
        where = f"tasks.{name}.points_curriculum"
        variants = raw.get("variants")
        return cls(name, n_points, _schedule(raw["points_curriculum"], n_points, where),
                   dict(raw.get("options") or {}), dict(raw.get("train") or {}),
                   None if variants is None else tuple(str(v) for v in variants))


def task_train(raw: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The ``train`` section that trains ``task``: the top-level one with the task's own
    ``tasks.<task>.train`` keys in its place (plain values, for a rule's ``params``)."""
    return {**raw["train"], **(raw["tasks"][task].get("train") or {})}


def task_variants(raw: Mapping[str, Any], task: str) -> list[str]:
    """The variants trained from scratch on ``task``, in the order of ``variants:``."""
    chosen = raw["tasks"][task].get("variants")
    return [v for v in raw["variants"] if chosen is None or v in chosen]


def train_key(raw: Mapping[str, Any], task: str, key: str) -> str:
    """The config key that sets ``key`` of the section training ``task`` (for messages):
    ``tasks.<task>.train.<key>`` where the task sets it, else ``train.<key>``."""
    own = raw["tasks"][task].get("train") or {}
    return f"tasks.{task}.train.{key}" if key in own else f"train.{key}"


#: keys of the ``finetune:`` section that are not train keys
FINETUNE_ONLY = ("curve_every", "curve_prompts")


def finetune_train(raw: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The ``train`` section of a conversion on ``task``: the task's own (:func:`task_train`)
    with the ``finetune:`` section's train keys in its place (the curriculum is not used: a
    conversion trains at full size from its first step)."""
    own = {k: v for k, v in (raw.get("finetune") or {}).items() if k not in FINETUNE_ONLY}
    return {**task_train(raw, task), **own}


def base_tasks(raw: Mapping[str, Any]) -> list[str]:
    """Tasks that train :data:`BASE_VARIANT`: the ones with swapped runs and conversions."""
    return [t for t in raw["tasks"] if BASE_VARIANT in task_variants(raw, t)]


def finetune_tasks(raw: Mapping[str, Any]) -> list[str]:
    """Tasks with conversions: those that train softmax (a conversion starts from it)."""
    return base_tasks(raw) if raw.get("finetuned") else []


@dataclass(frozen=True)
class ModelRun:
    """One model the DAG evaluates on ``task`` (for every seed): ``variant`` trained from
    scratch, swapped into the trained base model, or converted from it and fine-tuned."""

    task: str
    variant: str
    mode: str

    @property
    def section(self) -> str:
        """The config section with the variant's options."""
        return MODE_SECTIONS[self.mode]

    @property
    def reads(self) -> tuple[str, str]:
        """The model file the evaluation reads, as (mode that wrote it, variant): a swapped run
        reads the trained base model and puts its variant in when it loads it."""
        if self.mode == "swapped":
            return "trained", BASE_VARIANT
        return self.mode, self.variant


def model_runs(raw: Mapping[str, Any]) -> list[ModelRun]:
    """Every evaluated model: the trained variants of every task, then the swapped ones (on the
    tasks that train the base model), then the fine-tuned conversions."""
    return (
        [ModelRun(t, v, "trained") for t in raw["tasks"] for v in task_variants(raw, t)]
        + [ModelRun(t, v, "swapped") for t in base_tasks(raw) for v in raw["swapped"]]
        + [ModelRun(t, v, "finetuned") for t in finetune_tasks(raw)
           for v in raw.get("finetuned") or {}]
    )


@dataclass(frozen=True)
class ModelConfig:
    n_embd: int
    n_layer: int
    n_head: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelConfig:
        cfg = cls(int(raw["n_embd"]), int(raw["n_layer"]), int(raw["n_head"]))
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(
                f"model.n_embd ({cfg.n_embd}) must be divisible by model.n_head ({cfg.n_head})"
            )
        return cfg


@dataclass(frozen=True)
class TrainConfig:
    """A ``train`` section (the top-level one, a task's own, or a conversion's): what the
    training loop (:func:`iclbench.train.train`) runs."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    lr_schedule: str
    grad_clip: float
    log_every: int
    checkpoint_every: int
    dims_curriculum: Mapping[str, int]
    #: (batch_size, n_points) of the short prompts trained beside every step's batch; None: none
    short_prompts: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        short = raw.get("short_prompts")
        return cls(int(raw["steps"]), int(raw["batch_size"]), float(raw["lr"]),
                   int(raw["warmup_steps"]), str(raw["lr_schedule"]), float(raw["grad_clip"]),
                   int(raw["log_every"]), int(raw["checkpoint_every"]),
                   dict(raw["dims_curriculum"]),
                   None if short is None else (int(short["batch_size"]), int(short["n_points"])))

    def dims(self, n_dims: int, where: str = "train") -> Schedule:
        """The curriculum of active input dimensions, up to ``n_dims``."""
        return _schedule(self.dims_curriculum, n_dims, f"{where}.dims_curriculum")


@dataclass(frozen=True)
class EvalConfig:
    n_prompts: int
    batch_size: int
    bootstrap: int
    confidence: float
    seed: int
    #: prompts per level of each OOD setting (the first of the in-distribution functions)
    n_prompts_ood: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EvalConfig:
        cfg = cls(int(raw["n_prompts"]), int(raw["batch_size"]), int(raw["bootstrap"]),
                  float(raw["confidence"]), int(raw["seed"]),
                  int(raw.get("n_prompts_ood", raw["n_prompts"])))
        if cfg.n_prompts_ood > cfg.n_prompts:
            raise ConfigError(f"eval.n_prompts_ood ({cfg.n_prompts_ood}) must not exceed "
                              f"eval.n_prompts ({cfg.n_prompts})")
        if not 0.0 < cfg.confidence < 1.0:
            raise ConfigError(f"eval.confidence must lie in (0, 1), got {cfg.confidence}")
        return cfg


@dataclass(frozen=True)
class OODConfig:
    """One OOD setting of ``ood:``: its levels and the transform's options."""

    name: str
    levels: tuple[float, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> OODConfig:
        return cls(name, tuple(float(c) for c in raw["levels"]), dict(raw.get("options") or {}))


#: the number formats the profiler times models in (torch dtypes by name)
PROFILE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ProfileConfig:
    """The ``profile`` section: what to measure, its context lengths joined by the tasks'
    training lengths (``train_tokens``)."""

    context_tokens: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    max_batch_tokens: int
    min_run_time: float
    replicates: int
    dtype: str
    device: str
    warmup: float  # seconds of untimed forwards before each measurement

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], train_tokens: Iterable[int] = ()) -> ProfileConfig:
        tokens = sorted({int(t) for t in raw["context_tokens"]} | {int(t) for t in train_tokens})
        odd = [t for t in tokens if t % 2]
        if odd:
            raise ConfigError(f"profile.context_tokens: {odd} odd; a prompt is (x, y) token pairs")
        if raw["dtype"] not in PROFILE_DTYPES:
            raise ConfigError(f"profile.dtype: {raw['dtype']!r}; known are: "
                              f"{', '.join(PROFILE_DTYPES)}")
        return cls(tuple(tokens), tuple(sorted({int(b) for b in raw["batch_sizes"]})),
                   int(raw["max_batch_tokens"]), float(raw["min_run_time"]),
                   int(raw["replicates"]), str(raw["dtype"]), str(raw["device"]),
                   float(raw["warmup"]))

    def grid(self) -> list[tuple[int, int]]:
        """(batch, tokens) pairs: batch x tokens within the cap; each length at least once."""
        pairs = []
        for t in self.context_tokens:
            batches = [b for b in self.batch_sizes if b * t <= self.max_batch_tokens]
            pairs += [(b, t) for b in batches or self.batch_sizes[:1]]
        return pairs


@dataclass(frozen=True)
class Config:
    """The whole, checked configuration."""

    results: str
    seeds: tuple[int, ...]
    n_dims: int
    device: str
    threads: int
    tasks: Mapping[str, TaskConfig]
    variants: Mapping[str, Mapping[str, Any]]
    swapped: Mapping[str, Mapping[str, Any]]
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    baselines: Mapping[str, Mapping[str, Any]]
    figures: Mapping[str, Mapping[str, Any]]
    profile: ProfileConfig
    ood: Mapping[str, OODConfig] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Config:
        return check(raw)


def _options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(raw or {})


def parse_config(raw: Mapping[str, Any]) -> Config:
    """The :class:`Config` of a schema-valid dict, without the registry checks of :func:`check`
    (which a config that reaches the DAG has passed)."""
    try:
        n_dims = int(raw["n_dims"])
        tasks = {name: TaskConfig.from_dict(name, t) for name, t in raw["tasks"].items()}
        return Config(
            results=str(raw["results"]),
            seeds=tuple(int(s) for s in raw["seeds"]),
            n_dims=n_dims,
            device=str(raw["device"]),
            threads=int(raw["threads"]),
            tasks=tasks,
            variants={k: _options(v) for k, v in raw["variants"].items()},
            swapped={k: _options(v) for k, v in raw["swapped"].items()},
            model=ModelConfig.from_dict(raw["model"]),
            train=TrainConfig.from_dict(raw["train"]),
            eval=EvalConfig.from_dict(raw["eval"]),
            baselines={k: _options(v) for k, v in raw["baselines"].items()},
            figures={k: _options(v) for k, v in raw["figures"].items()},
            profile=ProfileConfig.from_dict(raw["profile"], [t.tokens for t in tasks.values()]),
            ood={k: OODConfig.from_dict(k, v) for k, v in raw["ood"].items()},
        )
    except KeyError as err:
        raise ConfigError(f"missing config key {err}") from None


def check(raw: Mapping[str, Any], mem_overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a :class:`Config` from a schema-valid dict, checking names and cross-field rules.

    Raises :class:`ConfigError` naming the key. Every registry entry is built once here, so an
    unknown option of a task, variant, baseline or figure fails before any job runs; every number
    must be finite; and every heavy job's estimated memory must fit its rule's ``mem_mb``
    (:mod:`iclbench.budget`; ``mem_overrides``: Snakemake's ``--set-resources``).
    """
    check_finite(raw)
    # imported here: registries pull in torch modules that the schema check alone does not need
    from iclbench.variants import check_variants, get_variant
    from iclbench.baselines import BASELINES
    from iclbench.figures import FIGURES
    from iclbench.ood import IN_DISTRIBUTION, OOD
    from iclbench.tasks import TASKS, build_task

    cfg = parse_config(raw)
    n_dims, model = cfg.n_dims, cfg.model

    try:
        TASKS.check(cfg.tasks, "tasks")
        check_variants(cfg.variants, "variants")
        check_variants(cfg.swapped, "swapped")
        BASELINES.check(cfg.baselines, "baselines")
        FIGURES.check(cfg.figures, "figures")
        OOD.check(cfg.ood, "ood")
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: duplicate seeds in {list(cfg.seeds)}")
    _check_results(cfg.results)
    _check_device(cfg.device)
    for name, task in cfg.tasks.items():
        where = f"tasks.{name}.train" if task.train else "train"
        train = TrainConfig.from_dict(task_train(raw, name))
        _check_train(train, n_dims, where)
        if train.short_prompts is not None and train.short_prompts[1] > task.n_points:
            raise ConfigError(f"{train_key(raw, name, 'short_prompts')}.n_points "
                              f"({train.short_prompts[1]}) exceeds tasks.{name}.n_points "
                              f"({task.n_points}): short prompts must be shorter")
        unknown = sorted(set(task.variants or ()) - set(cfg.variants))
        if unknown:
            raise ConfigError(f"tasks.{name}.variants: {', '.join(map(repr, unknown))} not under "
                              f"variants (known: {', '.join(cfg.variants)})")
    for name, task in cfg.tasks.items():
        _wrap(lambda: build_task(name, n_dims, task.options), f"tasks.{name}.options")
    head_dim = model.n_embd // model.n_head
    for name, opts in cfg.variants.items():
        _wrap(lambda: get_variant(name).check_options(opts, model.n_head, head_dim),
              f"variants.{name}", meta=True)
    for name in cfg.tasks:  # what each variant needs of its task's steps (int8: start_step)
        steps = int(task_train(raw, name)["steps"])
        key = train_key(raw, name, "steps")
        for variant in task_variants(raw, name):
            _check_steps(variant, cfg.variants[variant], steps, f"variants.{variant}", key)
    if cfg.swapped and not base_tasks(raw):
        raise ConfigError("swapped: needs softmax trained on some task (swaps go into "
                          "softmax models)")
    for name, opts in cfg.swapped.items():
        _wrap(lambda: get_variant(name).check_swap_options(opts, model.n_head, head_dim),
              f"swapped.{name}", meta=True)
    _check_finetune(raw, model.n_head, head_dim)
    if "conversion" in cfg.figures and not raw.get("finetuned"):
        raise ConfigError("figures.conversion: needs variants under finetuned (it plots their "
                          "conversion curves)")
    for name, opts in cfg.baselines.items():
        _wrap(lambda: BASELINES.get(name).check_options(opts), f"baselines.{name}")
    for name, opts in cfg.figures.items():
        _wrap(lambda: FIGURES.get(name).check_options(opts), f"figures.{name}")
    _check_device(cfg.profile.device, "profile.device")
    if IN_DISTRIBUTION in cfg.ood:
        raise ConfigError(f"ood.{IN_DISTRIBUTION}: the in-distribution setting is always "
                          "evaluated; list only OOD settings under ood")
    for name, setting in cfg.ood.items():
        _wrap(lambda: OOD.get(name)(**setting.options).check_levels(setting.levels), f"ood.{name}")
    from iclbench.budget import check_budget, mem_limits

    check_budget(raw, mem_limits(raw, mem_overrides))
    return cfg


def check_finite(obj: Any, where: str = "") -> None:
    """Every number in the config is finite (YAML's ``.nan`` and ``.inf`` pass a JSON schema's
    ``minimum``: NaN compares false both ways) and every integer fits 64 bits (torch's sizes)."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            check_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"config key {where}: {obj} is not a finite number")
    elif isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= 2**63:
        raise ConfigError(f"config key {where}: {obj} does not fit a 64-bit integer")


def _check_finetune(raw: Mapping[str, Any], n_head: int, head_dim: int) -> None:
    """The ``finetuned:`` variants and the ``finetune:`` recipe they share."""
    from iclbench.variants import check_variants, get_variant

    finetuned = raw.get("finetuned") or {}
    if not finetuned:
        return
    try:
        check_variants(finetuned, "finetuned")
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    if "finetune" not in raw:
        raise ConfigError("finetuned: needs a finetune section (the conversions' steps, lr, ...)")
    if not finetune_tasks(raw):
        raise ConfigError("finetuned: needs softmax trained on some task (a conversion starts "
                          "from the trained softmax model)")
    if BASE_VARIANT in finetuned:
        raise ConfigError("finetuned.softmax: softmax is the model conversions start from")
    for name, opts in finetuned.items():
        _wrap(lambda: get_variant(name).check_convert_options(_options(opts), n_head, head_dim),
              f"finetuned.{name}", meta=True)
    ft = raw["finetune"]
    for task in finetune_tasks(raw):
        train = finetune_train(raw, task)
        if train["checkpoint_every"] % train["log_every"]:
            raise ConfigError(f"finetune.checkpoint_every ({train['checkpoint_every']}) must be a "
                              f"multiple of the log_every ({train['log_every']}) of task {task}")
        for name, opts in finetuned.items():
            _check_steps(name, _options(opts), int(train["steps"]), f"finetuned.{name}",
                         "the conversion's steps")
    if int(ft["curve_every"]) % int(finetune_train(raw, finetune_tasks(raw)[0])["log_every"]):
        raise ConfigError(f"finetune.curve_every ({ft['curve_every']}) must be a multiple of "
                          "log_every (the curve is scored when a log row is written)")


def _check_steps(variant: str, options: Mapping[str, Any], steps: int, where: str,
                 steps_key: str) -> None:
    """The variant's own rule on the steps it trains (:meth:`Variant.check_steps`)."""
    from iclbench.variants import get_variant

    try:
        get_variant(variant).check_steps(options, steps, where, steps_key)
    except ValueError as err:
        raise ConfigError(str(err)) from None


#: the folders of a results tree: another config's tree (results/<name>) must not be one of them
RESULTS_FOLDERS = (CHECKPOINTS, "data", "eval", "figures", "finetuned", "models", "profile", "summary")


def _check_results(results: str) -> None:
    name = results.partition("/")[2]
    if name in RESULTS_FOLDERS:
        raise ConfigError(f"results: {results!r} is a folder of the default results tree; name "
                          f"another, e.g. results/{name}_run (taken: {', '.join(RESULTS_FOLDERS)})")


def _check_train(train: TrainConfig, n_dims: int, where: str) -> None:
    train.dims(n_dims, where)
    if train.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"{where}.lr_schedule: unknown schedule {train.lr_schedule!r}; known "
                          f"are: {', '.join(LR_SCHEDULES)}")
    if train.checkpoint_every % train.log_every:
        raise ConfigError(
            f"{where}.checkpoint_every ({train.checkpoint_every}) must be a multiple of "
            f"{where}.log_every ({train.log_every})"
        )


def canonical(obj: Any) -> Any:
    """The same config with every mapping's keys sorted, recursively.

    Snakemake compares a rule's ``params`` to those of the last run, key order included; sorting
    once, before the rules read the config, makes reordering keys in a YAML file rerun nothing.
    """
    if isinstance(obj, Mapping):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def _wrap(build: Any, where: str, meta: bool = False) -> None:
    """Run a registry entry's check; its ValueError or TypeError becomes a ConfigError naming
    ``where``. ``meta``: build modules on the meta device, so that checking a variant's options
    (which builds its attention) allocates nothing, whatever size they ask for."""
    import torch

    try:
        if meta:
            with torch.device("meta"):
                build()
        else:
            build()
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_device(device: str, key: str = "device") -> None:
    if device == "auto":
        return
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{key}: {device!r} is not a torch device (use auto, cpu, cuda, cuda:N)") from None


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} asked for, but CUDA is not available here")
    return resolved


def load(path: str | Path, schema: str | Path | None = None) -> Config:
    """Read, schema-validate and check a config file (the schema defaults to config/schema.yaml)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    schema_path = Path(schema) if schema else path.parent / "schema.yaml"
    validate_schema(raw, yaml.safe_load(schema_path.read_text()), source=str(path))
    return check(raw)


def validate_schema(raw: Any, schema: Mapping[str, Any], source: str = "config") -> None:
    """JSON-schema validation (draft 2020-12) with an error that names the key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: config key {key}: {err.message}")
