# One extraction job per model writes one table per layer; the layers a model exposes are
# known at parse time, so each model gets its own rule.
for _model in MODELS:

    rule:
        name:
            f"extract_features_{_model}"
        input:
            **model_weights(_model),
            cells="results/{dataset}/cells.parquet",
            arrays=cell_shard_arrays,
        output:
            expand(
                "results/{{dataset}}/features/{model}/{layer}.parquet",
                model=_model,
                layer=model_layers(_model),
            ),
        log:
            f"logs/{{dataset}}/extract_features/{_model}.log",
        benchmark:
            f"logs/{{dataset}}/extract_features/{_model}.bench.tsv"
        # A trained model's features and metrics are the DAG's longest chain after training.
        priority: 9
        conda:
            "../envs/torch.yaml"
        threads: threads_up_to(4)
        resources:
            mem_mb=retry_scaled(8000),
            runtime=retry_scaled(60),
        params:
            layers=model_layers(_model),
            pooling=POOLING,
            batch_size=config["features"]["batch_size"],
            out_dir=f"results/{{dataset}}/features/{_model}",
        script:
            "../workflow_scripts/scripts/extract_features.py"


rule pca_features:
    input:
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        "results/{dataset}/features/pca/pixels.parquet",
    log:
        "logs/{dataset}/pca_features.log",
    benchmark:
        "logs/{dataset}/pca_features.bench.tsv"
    # Needs no model: ahead of training, so the baselines' evaluation can fill a core later.
    priority: 11
    conda:
        "../envs/core.yaml"
    threads: threads_up_to(2)
    resources:
        mem_mb=retry_scaled(8000),
        runtime=retry_scaled(30),
    params:
        n_components=config["metrics"]["pca_components"],
        normalize=config["baselines"]["normalize"],
        split=config["split"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/pca_features.py"


rule handcrafted_features:
    input:
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        "results/{dataset}/features/handcrafted/all.parquet",
    log:
        "logs/{dataset}/baselines/handcrafted.log",
    benchmark:
        "logs/{dataset}/baselines/handcrafted.bench.tsv"
    # Needs no model: ahead of training, so the baselines' evaluation can fill a core later.
    priority: 11
    conda:
        "../envs/core.yaml"
    threads: threads_up_to(2)
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(60),
    params:
        kind="handcrafted",
        channels=dataset_channels,
        normalize=config["baselines"]["normalize"],
    script:
        "../workflow_scripts/scripts/baseline_features.py"


rule random_cnn_features:
    input:
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        expand(
            "results/{{dataset}}/features/random_cnn/{layer}.parquet",
            layer=RANDOM_CNN_LAYERS,
        ),
    log:
        "logs/{dataset}/baselines/random_cnn.log",
    benchmark:
        "logs/{dataset}/baselines/random_cnn.bench.tsv"
    # Needs no model: ahead of training, so the baselines' evaluation can fill a core later.
    priority: 11
    conda:
        "../envs/torch.yaml"
    threads: threads_up_to(2)
    resources:
        mem_mb=retry_scaled(8000),
        runtime=retry_scaled(60),
    params:
        kind="random_cnn",
        seed=config["seed"],
        normalize=config["baselines"]["normalize"],
    script:
        "../workflow_scripts/scripts/baseline_features.py"


rule cell_count_features:
    input:
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        "results/{dataset}/features/cellcount/count.parquet",
    log:
        "logs/{dataset}/baselines/cellcount.log",
    benchmark:
        "logs/{dataset}/baselines/cellcount.bench.tsv"
    # Needs no model: ahead of training, so the baselines' evaluation can fill a core later.
    priority: 11
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(5),
    params:
        kind="cellcount",
        group_by=config["metrics"]["group_by"],
    script:
        "../workflow_scripts/scripts/baseline_features.py"
