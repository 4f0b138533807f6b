rule estimate_scale:
    input:
        fields=scale_sample_fields,
    output:
        scale="results/{dataset}/qc/scale.json",
    log:
        "logs/{dataset}/estimate_scale.log",
    benchmark:
        "logs/{dataset}/estimate_scale.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*FIELD_SOURCES),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(10),
    params:
        nucleus_channel=nucleus_channel,
        segmentation=segmentation_params,
        crop=config["crop"],
        n_fields=config["segmentation"]["scale_fields"],
    script:
        "../workflow_scripts/scripts/estimate_scale.py"


rule segment_and_crop:
    input:
        fields="results/{dataset}/fields/{shard}.npz",
        table="results/{dataset}/fields/{shard}.parquet",
        objects="results/{dataset}/fields/{shard}.objects.parquet",
        scale="results/{dataset}/qc/scale.json",
    output:
        crops="results/{dataset}/cells/{shard}.npy",
        table="results/{dataset}/cells/{shard}.parquet",
        qc="results/{dataset}/cells/{shard}.qc.json",
    log:
        "logs/{dataset}/segment_and_crop/{shard}.log",
    benchmark:
        "logs/{dataset}/segment_and_crop/{shard}.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*FIELD_SOURCES),
    group:
        "segment_shards"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb(1000, 16),
        runtime=shard_runtime(2, 2),
    params:
        nucleus_channel=nucleus_channel,
        channels=dataset_channels,
        save_masks=config["segmentation"]["save_masks"],
        masks_dir="results/{dataset}/masks",
    script:
        "../workflow_scripts/scripts/segment_and_crop.py"


rule segmentation_overlay:
    input:
        fields=first_shard_fields,
        scale="results/{dataset}/qc/scale.json",
    output:
        report(
            "results/{dataset}/qc/segmentation_overlay.png",
            caption="../report/segmentation_overlay.rst",
            category="QC",
        ),
    log:
        "logs/{dataset}/segmentation_overlay.log",
    benchmark:
        "logs/{dataset}/segmentation_overlay.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*FIELD_SOURCES),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(10),
    params:
        nucleus_channel=nucleus_channel,
        channels=dataset_channels,
        n_fields=config["segmentation"]["overlay_fields"],
    script:
        "../workflow_scripts/scripts/segmentation_overlay.py"


rule segmentation_qc:
    input:
        qc=cell_shard_qc,
        scale="results/{dataset}/qc/scale.json",
    output:
        fields="results/{dataset}/qc/segmentation_fields.csv",
        summary="results/{dataset}/qc/segmentation_qc.json",
        figure=report(
            "results/{dataset}/qc/segmentation_qc.png",
            caption="../report/segmentation_qc.rst",
            category="QC",
        ),
    log:
        "logs/{dataset}/segmentation_qc.log",
    benchmark:
        "logs/{dataset}/segmentation_qc.bench.tsv"
    wildcard_constraints:
        dataset=datasets_regex(*FIELD_SOURCES),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(10),
    params:
        scale_tolerance=config["segmentation"]["scale_tolerance"],
        max_dropped_fraction=config["segmentation"]["max_dropped_fraction"],
    script:
        "../workflow_scripts/scripts/segmentation_qc.py"
