rule aggregate_results:
    input:
        eval_tables(),
    output:
        errors="results/summary/icl_errors.parquet",
        over_seeds="results/summary/icl_errors_over_seeds.parquet",
    log:
        "logs/aggregate_results.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_results.py"


rule aggregate_conversion:
    input:
        conversion_curves(),
    output:
        "results/summary/conversion.parquet",
    log:
        "logs/aggregate_conversion.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_conversion.py"
