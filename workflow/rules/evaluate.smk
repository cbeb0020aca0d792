def model_to_evaluate(wildcards):
    # a swapped run puts the variant's attention into the softmax-trained model
    variant = wildcards.variant if wildcards.mode == "trained" else "softmax"
    return f"results/models/{wildcards.task}/{variant}/seed{wildcards.seed}/model.safetensors"


rule evaluate_model:
    input:
        model=model_to_evaluate,
        prompts=eval_prompt_files,
    output:
        "results/eval/{task}/{variant}-{mode}-seed{seed}.parquet",
    params:
        job=lambda wc: {
            "eval": config["eval"],
            "variant_options": config["variants"].get(wc.variant, {}),
            "device": config["device"],
        },
    threads: config["threads"]
    resources:
        mem_mb=2000,
    log:
        "logs/evaluate_model/{task}/{variant}-{mode}-seed{seed}.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/evaluate_model.py"


rule evaluate_baseline:
    input:
        prompts=eval_prompt_files,
    output:
        "results/eval/{task}/baseline-{baseline}.parquet",
    params:
        job=lambda wc: {"eval": config["eval"], "options": config["baselines"][wc.baseline]},
    threads: config["threads"]
    resources:
        mem_mb=2000,
    log:
        "logs/evaluate_baseline/{task}/{baseline}.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/evaluate_baseline.py"
