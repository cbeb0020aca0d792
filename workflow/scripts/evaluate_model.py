"""Rule evaluate_model: score a trained (or attention-swapped) model on the fixed prompts."""

from iclbench.jobs import evaluate_model
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    evaluate_model(sm.wildcards.task, sm.wildcards.variant, sm.wildcards.mode,
                   int(sm.wildcards.seed), sm.params.job, sm.threads, sm.input.model,
                   list(sm.input.prompts), sm.output[0])
