rule embed_best_layer:
    input:
        summary="results/{dataset}/metrics/summary.csv",
        features=all_feature_tables,
    output:
        plot=report(
            "results/{dataset}/embeddings/best_layer_umap.png",
            caption="../report/embedding.rst",
            category="Embeddings",
        ),
        coords="results/{dataset}/embeddings/best_layer_umap.parquet",
    log:
        "logs/{dataset}/embed_best_layer.log",
    benchmark:
        "logs/{dataset}/embed_best_layer.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        label=config["metrics"]["label"],
        group_by=config["metrics"]["group_by"],
        max_cells=config["metrics"]["max_cells"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/embed_best_layer.py"
