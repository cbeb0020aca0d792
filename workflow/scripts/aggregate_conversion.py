"""Rule aggregate_conversion: the conversion curves of every fine-tuned model, one table."""

from iclbench.jobs import aggregate_conversion
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    aggregate_conversion(list(sm.input), sm.output[0])
