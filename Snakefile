# iclbench: how much in-context-learning accuracy do we lose when inference gets cheaper?
# The DAG: eval prompts -> trained models -> evaluations (models and baselines) -> summary -> figures.
from snakemake.utils import min_version

min_version("9.0")


# A config file stands alone: `--configfile X` replaces the default config instead of merging into
# it (Snakemake would otherwise fill every key X leaves out from config/config.yaml, and no section
# could be removed). Without --configfile the default is read; --config key=value applies on top.
if not workflow.config_settings.configfiles:
    workflow.configfile("config/config.yaml")


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
    run_config,
    aggregate_results,
    aggregate_profile,
    aggregate_conversion,
    plot_figure,


rule all:
    default_target: True
    input:
        f"{R}/config.yaml",
        f"{R}/summary/icl_errors.parquet",
        f"{R}/summary/profile.parquet",
        expand(f"{R}/figures/{{figure}}.pdf", figure=FIGURES),
        expand(f"{R}/figures/{{figure}}.png", figure=FIGURES),
