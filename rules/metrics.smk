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
    # Every evaluation reads it: ready before the first trained model's features are.
    priority: 11
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(8000),
        runtime=retry_scaled(20),
    params:
        label=config["metrics"]["label"],
        max_cells=config["metrics"]["max_cells"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/pixel_space.py"


# One evaluation job per model covers all its layers, and one job all baselines: the metric
# libraries are imported once per job (~4.5 s), and changing one model re-evaluates only that
# model.
for _name, _tables in evaluated_layers().items():

    rule:
        name:
            f"evaluate_{_name}"
        input:
            features=[
                f"results/{{dataset}}/features/{name}/{layer}.parquet"
                for name, layer in _tables
            ],
            pixels="results/{dataset}/metrics/pixel_space.npz",
        output:
            [
                f"results/{{dataset}}/metrics/{name}/{layer}.json"
                for name, layer in _tables
            ],
        log:
            f"logs/{{dataset}}/evaluate/{_name}.log",
        benchmark:
            f"logs/{{dataset}}/evaluate/{_name}.bench.tsv"
        # A trained model's metrics first (the longest chain), then the baselines'.
        priority: 9 if _name in MODELS else 8
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=retry_scaled(8000),
            runtime=retry_scaled(120),
        params:
            metrics=config["metrics"],
            seed=config["seed"],
        script:
            "../workflow_scripts/scripts/evaluate_layer.py"


rule summarize_metrics:
    input:
        metrics=metric_files,
        screen=screen_metric_files,
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
        grid=report(
            "results/{dataset}/metrics/all_metrics.png",
            caption="../report/all_metrics.rst",
            category="Metrics",
        ),
        html=report(
            "results/{dataset}/metrics/comparison.html",
            caption="../report/comparison.rst",
            category="Metrics",
        ),
        confusion=report(
            "results/{dataset}/metrics/confusion.png",
            caption="../report/confusion.rst",
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
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(5),
    params:
        families={name: m["family"] for name, m in MODELS.items()},
        normalize={
            **{name: m["normalize"] for name, m in MODELS.items()},
            **dict.fromkeys(
                ("pca", "handcrafted", "random_cnn"), config["baselines"]["normalize"]
            ),
        },
        guided=guided_pairs(),
    script:
        "../workflow_scripts/scripts/summarize_metrics.py"
