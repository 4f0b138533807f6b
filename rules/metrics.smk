rule pixel_space:
    input:
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        "results/{dataset}/metrics/pixel_space.npz",
    log:
        "logs/{dataset}/pixel_space.log",
    benchmark:
        "logs/{dataset}/pixel_space.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        label=config["metrics"]["label"],
        max_cells=config["metrics"]["max_cells"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/pixel_space.py"


rule evaluate_layer:
    input:
        features="results/{dataset}/features/{model}/{layer}.parquet",
        pixels="results/{dataset}/metrics/pixel_space.npz",
    output:
        "results/{dataset}/metrics/{model}/{layer}.json",
    log:
        "logs/{dataset}/evaluate_layer/{model}/{layer}.log",
    benchmark:
        "logs/{dataset}/evaluate_layer/{model}/{layer}.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        metrics=config["metrics"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/evaluate_layer.py"


rule summarize_metrics:
    input:
        metric_files,
    output:
        table=report(
            "results/{dataset}/metrics/summary.csv",
            caption="../report/summary.rst",
            category="Metrics",
        ),
        plot=report(
            "results/{dataset}/metrics/summary.png",
            caption="../report/summary_plot.rst",
            category="Metrics",
        ),
    log:
        "logs/{dataset}/summarize_metrics.log",
    benchmark:
        "logs/{dataset}/summarize_metrics.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/scripts/summarize_metrics.py"
