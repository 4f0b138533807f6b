# Profiles: per-group profiles of every feature table; for screens (a dataset with a
# `layout`), the profiling recipe per table (wells, per-plate normalisation against the
# controls, feature selection, optional sphering and Harmony, consensus) and the screening
# metrics after each step (workflow_scripts.screen).


rule aggregate_profiles:
    input:
        all_feature_tables,
    output:
        profiles=profile_tables("{dataset}"),
        h5ad=h5ad_tables("{dataset}"),
    log:
        "logs/{dataset}/aggregate_profiles.log",
    benchmark:
        "logs/{dataset}/aggregate_profiles.bench.tsv"
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(20),
    params:
        by=config["profiles"]["by"],
        how=config["profiles"]["how"],
    script:
        "../workflow_scripts/scripts/aggregate_profiles.py"


# One screen job per model (all its layers) and one for all baselines, as for the evaluation.
for _name, _tables in evaluated_layers().items():

    rule:
        name:
            f"screen_{_name}"
        input:
            features=[
                f"results/{{dataset}}/features/{name}/{layer}.parquet"
                for name, layer in _tables
            ],
        output:
            metrics=[
                f"results/{{dataset}}/screen/{name}/{layer}.json"
                for name, layer in _tables
            ],
            wells=[
                f"results/{{dataset}}/screen/{name}/{layer}.wells.parquet"
                for name, layer in _tables
            ],
            consensus=[
                f"results/{{dataset}}/screen/{name}/{layer}.consensus.parquet"
                for name, layer in _tables
            ],
            h5ad=(
                [
                    f"results/{{dataset}}/screen/{name}/{layer}{suffix}"
                    for name, layer in _tables
                    for suffix in (".wells.h5ad", ".consensus.h5ad")
                ]
                if config["profiles"]["h5ad"]
                else []
            ),
        log:
            f"logs/{{dataset}}/screen/{_name}.log",
        benchmark:
            f"logs/{{dataset}}/screen/{_name}.bench.tsv"
        wildcard_constraints:
            dataset=screen_datasets_regex(),
        priority: 9 if _name in MODELS else 8
        conda:
            "../envs/core.yaml"
        threads: 1
        resources:
            mem_mb=retry_scaled(8000),
            runtime=retry_scaled(60),
        params:
            layout=dataset_layout,
            profiles=config["profiles"],
            seed=config["seed"],
        script:
            "../workflow_scripts/scripts/screen_profiles.py"


rule screen_summary:
    input:
        screen_metric_files,
    output:
        table="results/{dataset}/metrics/screen.csv",
        plot=report(
            "results/{dataset}/metrics/screen.png",
            caption="../report/screen.rst",
            category="Screen",
        ),
    log:
        "logs/{dataset}/screen_summary.log",
    benchmark:
        "logs/{dataset}/screen_summary.bench.tsv"
    wildcard_constraints:
        dataset=screen_datasets_regex(),
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(5),
    params:
        families={name: m["family"] for name, m in MODELS.items()},
    script:
        "../workflow_scripts/scripts/screen_summary.py"
