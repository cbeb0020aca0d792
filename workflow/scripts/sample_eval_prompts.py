"""Rule sample_eval_prompts: fixed evaluation prompts for one task and OOD setting."""

from iclbench.jobs import sample_eval_prompts
from iclbench.logs import job_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
with job_logging(sm.log[0]):
    sample_eval_prompts(sm.wildcards.task, sm.params.task, sm.params.n_dims, sm.params.eval,
                        sm.wildcards.ood, sm.output[0], sm.params.ood)
