rule tile_fields:
    input:
        fields="results/{dataset}/fields/{shard}.npz",
        table="results/{dataset}/fields/{shard}.parquet",
    output:
        tiles="results/{dataset}/tiles/{shard}.npy",
        table="results/{dataset}/tiles/{shard}.parquet",
    log:
        "logs/{dataset}/tile_fields/{shard}.log",
    benchmark:
        "logs/{dataset}/tile_fields/{shard}.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*FIELD_SOURCES),
    group:
        "tile_shards"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb(1000, 16),
        runtime=shard_runtime(2, 2),
    params:
        tiling=config["tiling"],
    script:
        "../workflow_scripts/scripts/tile_fields.py"


rule tile_stats:
    input:
        tiles=tile_shard_arrays,
        tables=tile_shard_tables,
    output:
        "results/{dataset}/tiles/stats.json",
    log:
        "logs/{dataset}/tile_stats.log",
    benchmark:
        "logs/{dataset}/tile_stats.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(15),
    params:
        split=config["split"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/tile_stats.py"
