"""Rule evaluate_baseline: score one classical baseline on the fixed prompts."""

from iclbench.jobs import evaluate_baseline
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    evaluate_baseline(sm.wildcards.task, sm.wildcards.baseline, sm.params.job, sm.threads,
                      list(sm.input.prompts), sm.output[0])
