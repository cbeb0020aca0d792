"""Rule aggregate_profile: one tidy table of every variant's inference cost."""

from iclbench.jobs import aggregate_profile
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    aggregate_profile(list(sm.input), sm.output[0])
