rule aggregate_results:
    input:
        eval_tables(),
    output:
        "results/summary/icl_errors.parquet",
    log:
        "logs/aggregate_results.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_results.py"
