"""Rule train_model: train one (task, variant, seed) model."""

from iclbench.jobs import train_model
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    train_model(sm.wildcards.task, sm.wildcards.variant, int(sm.wildcards.seed), sm.params.job,
                sm.threads, sm.output.model, sm.output.config, sm.output.train_log,
                sm.params.checkpoint)
