rule aggregate_results:
    input:
        eval_tables(),
    output:
        errors=f"{R}/summary/icl_errors.parquet",
        over_seeds=f"{R}/summary/icl_errors_over_seeds.parquet",
    log:
        f"{LOGS}/aggregate_results.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_results.py"


rule aggregate_conversion:
    input:
        conversion_curves(),
    output:
        f"{R}/summary/conversion.parquet",
    log:
        f"{LOGS}/aggregate_conversion.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_conversion.py"


rule run_config:
    output:
        f"{R}/config.yaml",
    log:
        f"{LOGS}/run_config.log",
    conda:
        "../../envs/iclbench.yaml"
    params:
        config=config,
    script:
        "../scripts/write_run_config.py"
