rule filter_cells:
    input:
        tables=cell_shard_tables,
        qc=cell_shard_qc,
    output:
        cells="results/{dataset}/cells.parquet",
        drops=report(
            "results/{dataset}/qc/drops.csv",
            caption="../report/drops.rst",
            category="QC",
        ),
        skipped="results/{dataset}/qc/skipped_fields.csv",
    log:
        "logs/{dataset}/filter_cells.log",
    benchmark:
        "logs/{dataset}/filter_cells.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(10),
    params:
        filter=config["filter"],
    script:
        "../workflow_scripts/scripts/filter_cells.py"
