# One job per dataset builds every explorer page: umap-learn's compiled kernels load once (each
# job of its own paid ~4 s of imports, and on a first run each compiled them, ~15 s).
if MODELS:

    rule explorer:
        input:
            features=explorer_features,
            cells="results/{dataset}/cells.parquet",
            arrays=cell_shard_arrays,
        output:
            pages=[
                report(
                    page,
                    caption="../report/explorer.rst",
                    category="Explorer",
                    labels={"model": model, "layer": layer},
                )
                for model, layer, page in explorer_layers("{dataset}")
            ],
            coords=explorer_coord_files("{dataset}"),
        log:
            "logs/{dataset}/explorer.log",
        benchmark:
            "logs/{dataset}/explorer.bench.tsv"
        # Before the baselines: the best layer's map (the last job) reads its coordinates.
        priority: 7
        conda:
            "../envs/core.yaml"
        threads: 1
        resources:
            mem_mb=retry_scaled(4000),
            runtime=retry_scaled(30),
        params:
            label=config["metrics"]["label"],
            group_by=config["metrics"]["group_by"],
            channels=dataset_channels,
            max_cells=config["explorer"]["max_cells"],
            seed=config["seed"],
        script:
            "../workflow_scripts/scripts/explorer.py"
