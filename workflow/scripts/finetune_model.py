"""Rule finetune_model: convert a trained softmax model to a variant and fine-tune it."""

from iclbench.jobs import finetune_model
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    finetune_model(sm.wildcards.task, sm.wildcards.variant, int(sm.wildcards.seed), sm.params.job,
                   sm.threads, sm.input.softmax, sm.output.model, sm.output.config,
                   sm.output.train_log, sm.output.curve, sm.params.checkpoint)
