# Light report rules (the metric table and plots, the QC overlay) run on the submitting machine:
# seconds of work each, not worth a cluster job.


localrules:
    summarize_metrics,
    screen_summary,
    segmentation_overlay,
    segmentation_qc,


rule embed_best_layer:
    input:
        metrics=metric_files,
        pixels="results/{dataset}/metrics/pixel_space.npz",
        features=all_feature_tables,
        explorer=explorer_coords,
    output:
        **embedding_outputs("best"),
    log:
        "logs/{dataset}/embed_best_layer.log",
    benchmark:
        "logs/{dataset}/embed_best_layer.bench.tsv"
    # The last job of the DAG: before summarize_metrics, which is shorter.
    priority: 1
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    params:
        label=config["metrics"]["label"],
        group_by=config["metrics"]["group_by"],
        seed=config["seed"],
        families={name: m["family"] for name, m in MODELS.items()},
    script:
        "../workflow_scripts/scripts/embed_best_layer.py"


rule embed_handcrafted:
    input:
        features="results/{dataset}/features/handcrafted/all.parquet",
        pixels="results/{dataset}/metrics/pixel_space.npz",
    output:
        **embedding_outputs("handcrafted"),
    log:
        "logs/{dataset}/embed_handcrafted.log",
    benchmark:
        "logs/{dataset}/embed_handcrafted.bench.tsv"
    priority: 5
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    params:
        label=config["metrics"]["label"],
        group_by=config["metrics"]["group_by"],
        seed=config["seed"],
        metrics=config["metrics"],
    script:
        "../workflow_scripts/scripts/embed_handcrafted.py"
