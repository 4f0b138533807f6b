rule explorer:
    input:
        features="results/{dataset}/features/{model}/{layer}.parquet",
        cells="results/{dataset}/cells.parquet",
        arrays=cell_shard_arrays,
    output:
        page=report(
            "results/{dataset}/explorer/{model}/{layer}.html",
            caption="../report/explorer.rst",
            category="Explorer",
            labels={"model": "{model}", "layer": "{layer}"},
        ),
        coords="results/{dataset}/explorer/{model}/{layer}.coords.parquet",
    log:
        "logs/{dataset}/explorer/{model}/{layer}.log",
    benchmark:
        "logs/{dataset}/explorer/{model}/{layer}.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(30),
    params:
        label=config["metrics"]["label"],
        group_by=config["metrics"]["group_by"],
        roles=lambda wc: [c["role"] for c in dataset_channels(wc)],
        max_cells=config["explorer"]["max_cells"],
        seed=config["seed"],
    script:
        "../workflow_scripts/scripts/explorer.py"
