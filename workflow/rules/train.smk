rule train_model:
    output:
        model=f"{R}/models/{{task}}/{{variant}}/seed{{seed}}/model.safetensors",
        config=f"{R}/models/{{task}}/{{variant}}/seed{{seed}}/config.json",
        train_log=f"{R}/models/{{task}}/{{variant}}/seed{{seed}}/train_log.parquet",
    log:
        f"{LOGS}/train_model/{{task}}/{{variant}}/seed{{seed}}.log",
    conda:
        "../../envs/iclbench.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MEM_MB["train_model"],
        runtime=120,
    params:
        job=lambda wc: {
            "task": config["tasks"][wc.task],
            "n_dims": config["n_dims"],
            "model": config["model"],
            "train": task_train(config, wc.task),
            "variant_options": config["variants"][wc.variant],
            "device": config["device"],
        },
        # outside the declared outputs, so Snakemake keeps it when a job is killed or fails;
        # under the default storage prefix when there is one (common.smk, checkpoint_path)
        checkpoint=lambda wc: checkpoint_path(
            wc.task, wc.variant, f"seed{wc.seed}.ckpt"
        ),
    script:
        "../scripts/train_model.py"


rule finetune_model:
    input:
        softmax=f"{R}/models/{{task}}/softmax/seed{{seed}}/model.safetensors",
    output:
        model=f"{R}/finetuned/{{task}}/{{variant}}/seed{{seed}}/model.safetensors",
        config=f"{R}/finetuned/{{task}}/{{variant}}/seed{{seed}}/config.json",
        train_log=f"{R}/finetuned/{{task}}/{{variant}}/seed{{seed}}/train_log.parquet",
        curve=f"{R}/finetuned/{{task}}/{{variant}}/seed{{seed}}/conversion.parquet",
    log:
        f"{LOGS}/finetune_model/{{task}}/{{variant}}/seed{{seed}}.log",
    conda:
        "../../envs/iclbench.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MEM_MB["finetune_model"],
        runtime=60,
    params:
        job=lambda wc: {
            "task": config["tasks"][wc.task],
            "n_dims": config["n_dims"],
            "train": finetune_train(config, wc.task),
            "curve": {k: config["finetune"][k] for k in FINETUNE_ONLY},
            "variant_options": config["finetuned"][wc.variant],
            "device": config["device"],
        },
        checkpoint=lambda wc: checkpoint_path(
            "finetuned", wc.task, wc.variant, f"seed{wc.seed}.ckpt"
        ),
    script:
        "../scripts/finetune_model.py"
