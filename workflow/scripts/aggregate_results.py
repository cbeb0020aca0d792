"""Rule aggregate_results: one tidy table of every evaluation."""

from iclbench.jobs import aggregate_results
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    aggregate_results(list(sm.input), sm.output.errors, sm.output.over_seeds)
