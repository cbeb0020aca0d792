# Validation and target lists. The config is checked (schema, then registry names and cross-field
# rules) when the DAG is built, so a bad config fails before any job runs.
from iclbench.baselines import BASELINES
from iclbench.budget import mem_limits
from iclbench.ood import IN_DISTRIBUTION, OOD
from iclbench.figures import FIGURES as FIGURE_REGISTRY
from iclbench.config import (
    FINETUNE_ONLY,
    canonical,
    check,
    finetune_tasks,
    finetune_train,
    task_train,
    task_variants,
    validate_schema,
)
from iclbench.storage import CHECKPOINTS, checkpoint_location
import yaml

validate_schema(
    config,
    yaml.safe_load(open(workflow.source_path("../../config/schema.yaml"))),
    source="config",
)
# a profile's --set-resources raise a rule's mem_mb; the config's estimated memory per job must
# fit it (iclbench.budget)
_mem_overrides = workflow.resource_settings.overwrite_resources
CFG = check(config, _mem_overrides)
MEM_MB = mem_limits(config, _mem_overrides)
# sorted keys: reordering a YAML file must not change any rule's params (and rerun it)
_canonical = canonical(config)
config.clear()
config.update(_canonical)

TASKS = list(config["tasks"])
VARIANTS = list(config["variants"])
SWAPPED = list(config["swapped"])
FINETUNED = list(config.get("finetuned") or {})
SEEDS = [int(s) for s in config["seeds"]]
FIGURES = list(config["figures"])
OODS = [IN_DISTRIBUTION, *config["ood"]]


wildcard_constraints:
    task="[a-z0-9_]+",
    variant="[a-z0-9_]+",
    baseline="[a-z0-9_]+",
    figure="[a-z0-9_]+",
    ood="[a-z0-9_]+",
    mode="trained|swapped|finetuned",
    seed=r"\d+",


def checkpoint_path(*parts):
    """A training job's resumable checkpoint, CHECKPOINTS/<parts>: kept outside the declared
    outputs (Snakemake would delete it when the job fails), so with remote default storage it is
    put under the same prefix as the results (gs://BUCKET/iclbench/results/checkpoints/...), where
    a retry on a fresh VM finds it. Each spawned job gets the same two settings from Snakemake.
    """
    settings = workflow.storage_settings
    return checkpoint_location(
        "/".join([CHECKPOINTS, *parts]),
        settings.default_storage_provider,
        settings.default_storage_prefix,
    )


def baseline_pairs():
    """(task, baseline) pairs: each baseline on the tasks it applies to."""
    return [
        (t, b)
        for t in TASKS
        for b in config["baselines"]
        if BASELINES.get(b).applies_to(t)
    ]


def trained_pairs():
    """(task, variant) pairs trained from scratch: tasks.<task>.variants, or every variant."""
    return [(t, v) for t in TASKS for v in task_variants(config, t)]


def eval_tables():
    models = [
        f"results/eval/{t}/{v}-trained-seed{s}.parquet"
        for t, v in trained_pairs()
        for s in SEEDS
    ]
    # swaps go into the softmax models, so only on the tasks softmax is trained on
    swapped = [
        f"results/eval/{t}/{v}-swapped-seed{s}.parquet"
        for t in TASKS
        if "softmax" in task_variants(config, t)
        for v in SWAPPED
        for s in SEEDS
    ]
    finetuned = [
        f"results/eval/{t}/{v}-finetuned-seed{s}.parquet"
        for t in finetune_tasks(config)
        for v in FINETUNED
        for s in SEEDS
    ]
    baselines = [f"results/eval/{t}/baseline-{b}.parquet" for t, b in baseline_pairs()]
    return models + swapped + finetuned + baselines


def conversion_curves():
    return [
        f"results/finetuned/{t}/{v}/seed{s}/conversion.parquet"
        for t in finetune_tasks(config)
        for v in FINETUNED
        for s in SEEDS
    ]


def variant_options(wildcards):
    section = {"trained": "variants", "swapped": "swapped", "finetuned": "finetuned"}
    return config[section[wildcards.mode]][wildcards.variant]


def task_oods(task):
    """The OOD settings evaluated on ``task``: none, then each one that applies to it."""
    return [o for o in OODS if OOD.get(o).applies_to(task)]


def eval_prompt_files(wildcards):
    return expand(
        "results/data/{task}/{ood}.safetensors",
        task=wildcards.task,
        ood=task_oods(wildcards.task),
    )


def ood_section(wildcards):
    # the in-distribution setting has no section: level 0, no options
    return config["ood"].get(wildcards.ood, {"levels": [0.0], "options": {}})


def model_to_evaluate(wildcards):
    # a swapped run puts the variant's attention into the softmax-trained model
    w = wildcards
    if w.mode == "finetuned":
        return f"results/finetuned/{w.task}/{w.variant}/seed{w.seed}/model.safetensors"
    variant = w.variant if w.mode == "trained" else "softmax"
    return f"results/models/{w.task}/{variant}/seed{w.seed}/model.safetensors"


def figure_tables(wildcards):
    tables = FIGURE_REGISTRY.get(wildcards.figure).tables
    return {t: f"results/summary/{t}.parquet" for t in tables}


def profile_tables():
    trained = expand("results/profile/{variant}-trained.parquet", variant=VARIANTS)
    swapped = expand("results/profile/{variant}-swapped.parquet", variant=SWAPPED)
    return trained + swapped
