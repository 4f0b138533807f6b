rule train_model:
    input:
        unpack(train_inputs),
    output:
        weights="results/{dataset}/models/{model}/weights.safetensors",
        config="results/{dataset}/models/{model}/model.json",
        history=report(
            "results/{dataset}/models/{model}/history.csv",
            caption="../report/history.rst",
            category="Training",
            subcategory="{model}",
        ),
        curve=report(
            "results/{dataset}/models/{model}/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="Training",
            subcategory="{model}",
        ),
        recon=report(
            "results/{dataset}/models/{model}/reconstructions.png",
            caption="../report/reconstructions.rst",
            category="Training",
            subcategory="{model}",
        ),
    log:
        "logs/{dataset}/train_model/{model}.log",
    benchmark:
        "logs/{dataset}/train_model/{model}.bench.tsv"
    # Training is the longest chain of the DAG: start it before the baselines and metrics.
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: threads_up_to(4)
    resources:
        mem_mb=retry_scaled(8000),
        runtime=retry_scaled(240),
    params:
        model=model_params,
        channels=dataset_channels,
        split=config["split"],
        seed=config["seed"],
        checkpoint="results/{dataset}/models/{model}/checkpoint.pt",
        tensorboard=tensorboard_dir,
    script:
        "../workflow_scripts/scripts/train_model.py"


rule stitch_reconstructions:
    input:
        weights="results/{dataset}/models/{model}/weights.safetensors",
        config="results/{dataset}/models/{model}/model.json",
        tiles=tile_shard_arrays,
        tables=tile_shard_tables,
        stats="results/{dataset}/tiles/stats.json",
    output:
        report(
            "results/{dataset}/models/{model}/stitched.png",
            caption="../report/stitched.rst",
            category="Training",
            subcategory="{model}",
        ),
    log:
        "logs/{dataset}/stitch_reconstructions/{model}.log",
    benchmark:
        "logs/{dataset}/stitch_reconstructions/{model}.bench.tsv"
    conda:
        "../envs/torch.yaml"
    threads: threads_up_to(2)
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    params:
        tiling=config["tiling"],
        n_fields=2,
    script:
        "../workflow_scripts/scripts/stitch_reconstructions.py"
