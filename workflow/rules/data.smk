rule sample_eval_prompts:
    output:
        f"{R}/data/{{task}}/{{ood}}.safetensors",
    log:
        f"{LOGS}/sample_eval_prompts/{{task}}/{{ood}}.log",
    conda:
        "../../envs/iclbench.yaml"
    resources:
        mem_mb=MEM_MB["sample_eval_prompts"],
    params:
        task=lambda wc: config["tasks"][wc.task],
        n_dims=config["n_dims"],
        eval=config["eval"],
        ood=ood_section,
    script:
        "../scripts/sample_eval_prompts.py"
