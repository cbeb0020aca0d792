# iclbench: how much in-context-learning accuracy do we lose when inference gets cheaper?
# The DAG: eval prompts -> trained models -> evaluations (models and baselines) -> summary -> figures.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/profile.smk"


localrules:
    all,
    aggregate_results,
    aggregate_profile,
    aggregate_conversion,
    plot_figure,


rule all:
    default_target: True
    input:
        "results/summary/icl_errors.parquet",
        "results/summary/profile.parquet",
        expand("results/figures/{figure}.pdf", figure=FIGURES),
        expand("results/figures/{figure}.png", figure=FIGURES),
