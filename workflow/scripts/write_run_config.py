"""Rule run_config: the config this run used, as it was checked, beside its results."""

from iclbench.jobs import write_run_config
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    write_run_config(sm.params.config, sm.output[0])
