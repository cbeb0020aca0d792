"""Rule profile_model: FLOPs, int8 operations, latency and peak memory of one variant across
context lengths."""

from iclbench.jobs import profile_model
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    profile_model(sm.wildcards.variant, sm.wildcards.mode, sm.params.job, sm.threads,
                  sm.output[0])
