rule evaluate_model:
    input:
        model=model_to_evaluate,
        prompts=eval_prompt_files,
    output:
        f"{R}/eval/{{task}}/{{variant}}-{{mode}}-seed{{seed}}.parquet",
    log:
        f"{LOGS}/evaluate_model/{{task}}/{{variant}}-{{mode}}-seed{{seed}}.log",
    conda:
        "../../envs/iclbench.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MEM_MB["evaluate_model"],
    params:
        job=lambda wc: {
            "eval": config["eval"],
            "variant_options": variant_options(wc),
            "device": config["device"],
        },
    script:
        "../scripts/evaluate_model.py"


rule evaluate_baseline:
    input:
        prompts=eval_prompt_files,
    output:
        f"{R}/eval/{{task}}/baseline-{{baseline}}.parquet",
    log:
        f"{LOGS}/evaluate_baseline/{{task}}/{{baseline}}.log",
    conda:
        "../../envs/iclbench.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MEM_MB["evaluate_baseline"],
    params:
        job=lambda wc: {
            "eval": config["eval"],
            "options": config["baselines"][wc.baseline],
        },
    script:
        "../scripts/evaluate_baseline.py"
