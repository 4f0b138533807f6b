from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from workflow_scripts import datasets as ds_lib
from workflow_scripts.models.spec import layer_names

# Validate before any job runs: unknown keys and wrong types stop here, with the key named.
# Missing keys take the schema's defaults.
validate(config, schema="../schemas/config.schema.yaml", set_default=True)


def _check_config(cfg):
    """Cross-key checks a JSON schema cannot express."""
    problems = []
    for section in ("segmentation", "filter"):
        lo, hi = cfg[section]["min_area"], cfg[section]["max_area"]
        if lo > hi:
            problems.append(
                f"{section}.min_area ({lo}) is larger than {section}.max_area ({hi})"
            )
    if cfg["tiling"]["overlap"] >= cfg["tiling"]["size"]:
        problems.append(
            f"tiling.overlap ({cfg['tiling']['overlap']}) must be smaller than "
            f"tiling.size ({cfg['tiling']['size']})"
        )
    if cfg["metrics"]["summary_k"] not in cfg["metrics"]["neighbors"]:
        problems.append(
            f"metrics.summary_k ({cfg['metrics']['summary_k']}) must be one of "
            f"metrics.neighbors {cfg['metrics']['neighbors']}"
        )
    for name, model in cfg["models"].items():
        if (
            model["input"] == "tiles"
            and cfg["tiling"]["size"] != cfg["crop"]["resize_to"]
        ):
            problems.append(
                f"models.{name}: tile models are applied to cell crops for features, so "
                f"tiling.size ({cfg['tiling']['size']}) must equal crop.resize_to "
                f"({cfg['crop']['resize_to']})"
            )
        size = cfg["crop"]["resize_to"]
        if size % (2 ** model["depth"]) != 0:
            problems.append(
                f"models.{name}.depth ({model['depth']}): the input size {size} must be "
                f"divisible by 2**depth"
            )
    if problems:
        raise WorkflowError("Invalid configuration:\n  " + "\n  ".join(problems))


_check_config(config)


def _canonical(value):
    """Dicts with sorted keys, recursively."""
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    return value


# Rules receive config sections as params, and Snakemake compares params as written: with
# canonical key order, re-ordering keys in a config file does not make outputs stale.
for _key in list(config):
    config[_key] = _canonical(config[_key])

DATASETS = config["datasets"]
MODELS = config["models"]


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    shard=ds_lib.SHARD_PATTERN,
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    layer="[A-Za-z0-9][A-Za-z0-9_]*",


def shards(dataset):
    return ds_lib.shard_names(DATASETS[dataset])


def shard_fields(wildcards):
    return ds_lib.shard_fields(DATASETS[wildcards.dataset], wildcards.shard)


def synthetic_options(wildcards):
    entry = DATASETS[wildcards.dataset]
    return {
        "size": entry["field_size"],
        "cells_per_field": entry["cells_per_field"],
        "classes": entry["classes"],
        "batch_sd": entry["batch_sd"],
    }


def dataset_channels(wildcards):
    return ds_lib.channels(DATASETS[wildcards.dataset])


def nucleus_channel(wildcards):
    return ds_lib.channel_index(DATASETS[wildcards.dataset], "nucleus")


def segmentation_params(wildcards):
    seg = dict(config["segmentation"])
    for key in ("save_masks", "overlay_fields"):
        seg.pop(key)
    return seg


def cell_shard_tables(wildcards):
    return expand(
        "results/{dataset}/cells/{shard}.parquet",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def cell_shard_qc(wildcards):
    return expand(
        "results/{dataset}/cells/{shard}.qc.json",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def cell_shard_arrays(wildcards):
    return expand(
        "results/{dataset}/cells/{shard}.npy",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def tile_shard_arrays(wildcards):
    return expand(
        "results/{dataset}/tiles/{shard}.npy",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def tile_shard_tables(wildcards):
    return expand(
        "results/{dataset}/tiles/{shard}.parquet",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def first_shard_fields(wildcards):
    return "results/{}/fields/{}.npz".format(
        wildcards.dataset, shards(wildcards.dataset)[0]
    )


def train_inputs(wildcards):
    """Cells (always: they define the split and the reconstructions) plus tiles for tile models."""
    inputs = {
        "cells": f"results/{wildcards.dataset}/cells.parquet",
        "arrays": cell_shard_arrays(wildcards),
    }
    if MODELS[wildcards.model]["input"] == "tiles":
        inputs["tiles"] = tile_shard_arrays(wildcards)
        inputs["tile_tables"] = tile_shard_tables(wildcards)
        inputs["tile_stats"] = f"results/{wildcards.dataset}/tiles/stats.json"
    return inputs


def model_params(wildcards):
    return MODELS[wildcards.model]


def model_layers(model):
    return layer_names(MODELS[model]["family"], MODELS[model])


def feature_tables(dataset):
    """Every (model, layer) feature table of a dataset, the raw-pixel PCA baseline first."""
    tables = [f"results/{dataset}/features/pca/pixels.parquet"]
    for model in MODELS:
        tables += expand(
            "results/{dataset}/features/{model}/{layer}.parquet",
            dataset=dataset,
            model=model,
            layer=model_layers(model),
        )
    return tables


def all_feature_tables(wildcards):
    return feature_tables(wildcards.dataset)


def metric_files(wildcards):
    files = [f"results/{wildcards.dataset}/metrics/pca/pixels.json"]
    for model in MODELS:
        files += expand(
            "results/{dataset}/metrics/{model}/{layer}.json",
            dataset=wildcards.dataset,
            model=model,
            layer=model_layers(model),
        )
    return files


def final_outputs():
    """What `snakemake all` builds: per dataset the metric summary, the embedding of the
    best layer, QC figures and every model's training outputs."""
    outputs = []
    for dataset in DATASETS:
        outputs += [
            f"results/{dataset}/metrics/summary.csv",
            f"results/{dataset}/metrics/summary.png",
            f"results/{dataset}/embeddings/best_layer_umap.png",
            f"results/{dataset}/qc/segmentation_overlay.png",
            f"results/{dataset}/qc/drops.csv",
        ]
        for model in MODELS:
            outputs += expand(
                "results/{dataset}/models/{model}/{name}",
                dataset=dataset,
                model=model,
                name=["learning_curve.png", "reconstructions.png"],
            )
    return outputs
