# Inference cost per variant: forward FLOPs, latency and peak memory across context lengths.
# threads: profile.threads; set it to --cores so that no other job shares the CPU while timing.


rule profile_model:
    output:
        f"{R}/profile/{{variant}}-{{mode}}.parquet",
    log:
        f"{LOGS}/profile_model/{{variant}}-{{mode}}.log",
    conda:
        "../../envs/iclbench.yaml"
    threads: config["profile"]["threads"]
    resources:
        mem_mb=MEM_MB["profile_model"],
        runtime=30,
    params:
        job=lambda wc: {
            "profile": config["profile"],
            "n_dims": config["n_dims"],
            "model": config["model"],
            "train_tokens": [t.tokens for t in CFG.tasks.values()],
            "variant_options": variant_options(wc),
        },
    script:
        "../scripts/profile_model.py"


rule aggregate_profile:
    input:
        profile_tables(),
    output:
        f"{R}/summary/profile.parquet",
    log:
        f"{LOGS}/aggregate_profile.log",
    conda:
        "../../envs/iclbench.yaml"
    script:
        "../scripts/aggregate_profile.py"
