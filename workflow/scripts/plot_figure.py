"""Rule plot_figure: draw one registered figure from the summary tables."""

from iclbench.jobs import plot_figure
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    plot_figure(sm.wildcards.figure, sm.params.options, dict(sm.input.items()), sm.output.pdf,
                sm.output.png)
