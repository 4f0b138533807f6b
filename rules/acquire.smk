rule synthesize_fields:
    output:
        fields="results/{dataset}/fields/{shard}.npz",
        table="results/{dataset}/fields/{shard}.parquet",
        objects="results/{dataset}/fields/{shard}.objects.parquet",
    log:
        "logs/{dataset}/synthesize_fields/{shard}.log",
    benchmark:
        "logs/{dataset}/synthesize_fields/{shard}.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seed=config["seed"],
        indices=shard_fields,
        options=synthetic_options,
    script:
        "../workflow_scripts/scripts/synthesize_fields.py"
