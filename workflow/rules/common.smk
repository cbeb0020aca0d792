# Validation and target lists. The config is checked (schema, then registry names and cross-field
# rules) when the DAG is built, so a bad config fails before any job runs. Nothing here imports
# torch once a config has passed: iclbench.plan keeps the registry facts of checked configs.
from iclbench.budget import mem_limits
from iclbench.config import (
    FINETUNE_ONLY,
    MODE_SECTIONS,
    ModelRun,
    canonical,
    finetune_train,
    model_runs,
    parse_config,
    task_train,
    validate_schema,
)
from iclbench.plan import checked_plan
from iclbench.storage import CHECKPOINTS, checkpoint_location, logs_dir
import yaml

# libyaml's loader when present: faster
_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
with open(workflow.source_path("../../config/schema.yaml")) as _schema:
    validate_schema(config, yaml.load(_schema, Loader=_loader), source="config")
# a profile's --set-resources raise a rule's mem_mb; the config's estimated memory per job must
# fit it (iclbench.budget)
_mem_overrides = workflow.resource_settings.overwrite_resources
PLAN = checked_plan(config, _mem_overrides)
MEM_MB = mem_limits(config, _mem_overrides)
# sorted keys: reordering a YAML file must not change any rule's params (and rerun it)
_canonical = canonical(config)
config.clear()
config.update(_canonical)
CFG = parse_config(config)

TASKS = list(CFG.tasks)
VARIANTS = list(CFG.variants)
SWAPPED = list(CFG.swapped)
SEEDS = list(CFG.seeds)
FIGURES = list(CFG.figures)
# this config's results tree (its `results` key) and the job logs beside it: the default config's
# results/ and logs/, another's results/<name>/ and logs/<name>/, so runs of two configs never
# share a file (docs/running.md#several-configs)
R = CFG.results
LOGS = logs_dir(R)


wildcard_constraints:
    task="[a-z0-9_]+",
    variant="[a-z0-9_]+",
    baseline="[a-z0-9_]+",
    figure="[a-z0-9_]+",
    ood="[a-z0-9_]+",
    mode="trained|swapped|finetuned",
    seed=r"\d+",


def checkpoint_path(*parts):
    """A training job's resumable checkpoint, R/CHECKPOINTS/<parts>: kept outside the declared
    outputs (Snakemake would delete it when the job fails), so with remote default storage it is
    put under the same prefix as the results (gs://BUCKET/iclbench/results/checkpoints/...), where
    a retry on a fresh VM finds it. Each spawned job gets the same two settings from Snakemake.
    """
    settings = workflow.storage_settings
    return checkpoint_location(
        "/".join([R, CHECKPOINTS, *parts]),
        settings.default_storage_provider,
        settings.default_storage_prefix,
    )


def baseline_pairs():
    """(task, baseline) pairs: each baseline on the tasks it applies to."""
    return [(t, b) for t in TASKS for b in PLAN.baselines[t]]


def eval_tables():
    """Every evaluation: each model run (iclbench.config.model_runs) per seed, then baselines."""
    models = [
        f"{R}/eval/{r.task}/{r.variant}-{r.mode}-seed{s}.parquet"
        for r in model_runs(config)
        for s in SEEDS
    ]
    baselines = [f"{R}/eval/{t}/baseline-{b}.parquet" for t, b in baseline_pairs()]
    return models + baselines


def conversion_curves():
    return [
        f"{R}/finetuned/{r.task}/{r.variant}/seed{s}/conversion.parquet"
        for r in model_runs(config)
        if r.mode == "finetuned"
        for s in SEEDS
    ]


def variant_options(wildcards):
    return config[MODE_SECTIONS[wildcards.mode]][wildcards.variant]


def eval_prompt_files(wildcards):
    return [
        f"{R}/data/{wildcards.task}/{o}.safetensors" for o in PLAN.oods[wildcards.task]
    ]


def ood_section(wildcards):
    # the in-distribution setting has no section: level 0, no options
    return config["ood"].get(wildcards.ood, {"levels": [0.0], "options": {}})


def model_to_evaluate(wildcards):
    """The model file an evaluation reads (a swapped run: the trained base model's)."""
    w = wildcards
    mode, variant = ModelRun(w.task, w.variant, w.mode).reads
    stage = "finetuned" if mode == "finetuned" else "models"
    return f"{R}/{stage}/{w.task}/{variant}/seed{w.seed}/model.safetensors"


def figure_tables(wildcards):
    return {t: f"{R}/summary/{t}.parquet" for t in PLAN.figure_tables[wildcards.figure]}


def profile_tables():
    trained = expand(f"{R}/profile/{{variant}}-trained.parquet", variant=VARIANTS)
    swapped = expand(f"{R}/profile/{{variant}}-swapped.parquet", variant=SWAPPED)
    return trained + swapped
