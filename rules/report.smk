# Light report rules (the metric table and plots, the QC overlay) run on the submitting machine:
# seconds of work each, not worth a cluster job.


localrules:
    summarize_metrics,
    segmentation_overlay,
    segmentation_qc,


rule embed_best_layer:
    input:
        summary="results/{dataset}/metrics/summary.csv",
        pixels="results/{dataset}/metrics/pixel_space.npz",
        features=all_feature_tables,
    output:
        **embedding_outputs(),
    log:
        "logs/{dataset}/embed_best_layer.log",
    benchmark:
        "logs/{dataset}/embed_best_layer.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 2
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    params:
        label=config["metrics"]["label"],
        group_by=config["metrics"]["group_by"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/embed_best_layer.py"
