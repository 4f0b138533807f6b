# Acquisition: every source ends in per-shard field arrays (fields/<shard>.npz + .parquet), or,
# for pre-cropped cells, directly in per-shard cell arrays (cells/<shard>.npy + .parquet).
# Downloads run on the submitting machine (localrules): cluster compute nodes often have no
# internet. Sources other than synthetic are listed once by the index_dataset checkpoint.


localrules:
    download_manifest,
    acquire_hpa,
    acquire_bbbc,


rule synthesize_fields:
    output:
        fields="results/{dataset}/fields/{shard}.npz",
        table="results/{dataset}/fields/{shard}.parquet",
        objects="results/{dataset}/fields/{shard}.objects.parquet",
    log:
        "logs/{dataset}/synthesize_fields/{shard}.log",
    benchmark:
        "logs/{dataset}/synthesize_fields/{shard}.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex("synthetic"),
    group:
        "acquire_shards"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb(1000, 16),
        runtime=shard_runtime(2, 2),
    params:
        seed=config["seed"],
        indices=shard_fields,
        options=acquire_options,
    script:
        "../workflow_scripts/scripts/synthesize_fields.py"


rule download_manifest:
    input:
        manifest=lambda wc: DATASETS[wc.dataset]["manifest"],
    output:
        "results/{dataset}/acquire/download.json",
    log:
        "logs/{dataset}/download_manifest.log",
    benchmark:
        "logs/{dataset}/download_manifest.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex("manifest"),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(1440),
    params:
        root=dataset_root,
        download=lambda wc: DATASETS[wc.dataset]["download"],
    script:
        "../workflow_scripts/scripts/download_manifest.py"


rule acquire_hpa:
    input:
        genes=lambda wc: DATASETS[wc.dataset]["genes"],
    output:
        "results/{dataset}/raw/fields.csv",
    log:
        "logs/{dataset}/acquire_hpa.log",
    benchmark:
        "logs/{dataset}/acquire_hpa.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex("hpa"),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(1440),
    params:
        root=dataset_root,
        options=acquire_options,
        download=lambda wc: DATASETS[wc.dataset]["download"],
    script:
        "../workflow_scripts/scripts/acquire_hpa.py"


rule acquire_bbbc:
    output:
        "results/{dataset}/raw/fields.csv",
    log:
        "logs/{dataset}/acquire_bbbc.log",
    benchmark:
        "logs/{dataset}/acquire_bbbc.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex("bbbc"),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(1440),
    params:
        root=dataset_root,
        options=acquire_options,
        download=lambda wc: DATASETS[wc.dataset]["download"],
    script:
        "../workflow_scripts/scripts/acquire_bbbc.py"


checkpoint index_dataset:
    input:
        unpack(index_inputs),
    output:
        index="results/{dataset}/index.parquet",
    log:
        "logs/{dataset}/index_dataset.log",
    benchmark:
        "logs/{dataset}/index_dataset.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*sources_lib.INDEXED_SOURCES),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(30),
    params:
        entry=dataset_entry,
        root=dataset_root,
        listing=listing_fingerprint,
        required=[
            config["metrics"]["label"],
            config["filter"]["group_by"],
            config["split"]["by"],
        ],
    script:
        "../workflow_scripts/scripts/index_dataset.py"


rule load_fields:
    input:
        index="results/{dataset}/index.parquet",
        images=shard_image_files,
    output:
        fields="results/{dataset}/fields/{shard}.npz",
        table="results/{dataset}/fields/{shard}.parquet",
        objects="results/{dataset}/fields/{shard}.objects.parquet",
    log:
        "logs/{dataset}/load_fields/{shard}.log",
    benchmark:
        "logs/{dataset}/load_fields/{shard}.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(
            *sources_lib.sources_where(whole_fields=True, indexed=True)
        ),
    group:
        "acquire_shards"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb(1000, 16),
        runtime=shard_runtime(2, 2),
    params:
        entry=dataset_entry,
        root=dataset_root,
    script:
        "../workflow_scripts/scripts/load_fields.py"


rule load_crops:
    input:
        index="results/{dataset}/index.parquet",
        images=shard_image_files,
    output:
        crops="results/{dataset}/cells/{shard}.npy",
        table="results/{dataset}/cells/{shard}.parquet",
        qc="results/{dataset}/cells/{shard}.qc.json",
    log:
        "logs/{dataset}/load_crops/{shard}.log",
    benchmark:
        "logs/{dataset}/load_crops/{shard}.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex("crops"),
    group:
        "acquire_shards"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb(1000, 16),
        runtime=shard_runtime(2, 2),
    params:
        entry=dataset_entry,
        root=dataset_root,
        size=config["crop"]["resize_to"],
    script:
        "../workflow_scripts/scripts/load_crops.py"
