import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from snakemake.exceptions import WorkflowError

from workflow_scripts import datasets as ds_lib
from workflow_scripts import scale as scale_lib
from workflow_scripts.configuration import ConfigError, resolve_config
from workflow_scripts.sources import registry as sources_lib
from workflow_scripts.targets import RANDOM_CNN_LAYERS, Targets

# Validate, complete and check the configuration before any job runs: every problem is listed
# in one error, each with the key, the value and what was expected (workflow_scripts.configuration).
try:
    _resolved = resolve_config(
        config, Path(workflow.basedir) / "schemas" / "config.schema.yaml"
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# Rules receive config sections as params, and Snakemake compares params as written: the
# resolved configuration has canonical key order, so re-ordering keys in a config file does not
# make outputs stale.
config.clear()
config.update(_resolved.config)
MODELS = _resolved.models
DATASETS = _resolved.datasets
POOLING = config["features"]["pooling"]
# Sources that give whole fields of view (segmented here); "crops" gives cells directly.
FIELD_SOURCES = sources_lib.FIELD_SOURCES


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    shard=ds_lib.SHARD_PATTERN,
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    layer="[A-Za-z0-9][A-Za-z0-9_]*",


def datasets_regex(*sources, where=None):
    """Wildcard constraint matching exactly the datasets of these sources (rules that only
    apply to some sources, e.g. segmentation, which pre-cropped cells skip), or those whose
    entry satisfies ``where``."""
    names = [
        n
        for n, e in DATASETS.items()
        if (e["source"] in sources if sources else True) and (where is None or where(e))
    ]
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def source(wildcards):
    """The registry's knowledge of a dataset's source (workflow_scripts.sources.registry)."""
    return sources_lib.source_spec(DATASETS[wildcards.dataset]["source"])


def dataset_root(wildcards):
    """Folder the image paths of a dataset are relative to (downloads land here)."""
    return sources_lib.dataset_root(wildcards.dataset, DATASETS[wildcards.dataset])


def dataset_entry(wildcards):
    return DATASETS[wildcards.dataset]


def listing_fingerprint(wildcards):
    """Names, sizes and times of a local dataset's files: adding or replacing an image
    re-indexes it (downloaded datasets are re-indexed when their download reruns)."""
    return source(wildcards).listing(DATASETS[wildcards.dataset])


def index_inputs(wildcards):
    return source(wildcards).index_inputs(
        wildcards.dataset, DATASETS[wildcards.dataset]
    )


def acquire_options(wildcards):
    """Options of a dataset's acquisition job (synthesis or download)."""
    return source(wildcards).options(DATASETS[wildcards.dataset])


_INDEX_CACHE = {}


def _index_table(dataset, columns=None):
    """The index of a dataset (after its checkpoint ran), cached per file version."""
    path = checkpoints.index_dataset.get(dataset=dataset).output.index
    key = (path, Path(path).stat().st_mtime_ns)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear() if len(_INDEX_CACHE) > 8 else None
        _INDEX_CACHE[key] = pq.read_table(path).to_pandas()
    return _INDEX_CACHE[key]


def shards(dataset):
    entry = DATASETS[dataset]
    if not sources_lib.source_spec(entry["source"]).indexed:
        return ds_lib.shard_names(entry)
    return sorted(_index_table(dataset)["shard"].unique())


def shard_image_files(wildcards):
    """Image files read by one shard's loading job, so replacing an image reruns that shard."""
    entry = DATASETS[wildcards.dataset]
    if entry.get("array"):
        return [entry["array"]]
    table = _index_table(wildcards.dataset)
    rows = table[table["shard"] == wildcards.shard]
    root = Path(dataset_root(wildcards))
    files = {
        str(root / f)
        for col in table.columns
        if col.startswith("file_")
        for f in rows[col]
    }
    return sorted(files)


def shard_fields(wildcards):
    return ds_lib.shard_fields(DATASETS[wildcards.dataset], wildcards.shard)


def dataset_channels(wildcards):
    return ds_lib.channels(DATASETS[wildcards.dataset])


def nucleus_channel(wildcards):
    return ds_lib.channel_index(DATASETS[wildcards.dataset], "nucleus")


def segmentation_params(wildcards):
    """The segmentation section as the segmentation reads it: sizes may still be "auto",
    resolved in the job from results/<ds>/qc/scale.json (workflow_scripts.scale)."""
    seg = dict(config["segmentation"])
    for key in scale_lib.STAGE_KEYS:
        seg.pop(key)
    return seg


def scale_sample_fields(wildcards):
    """Field shards the scale estimate reads: up to scale_fields shards spread evenly over the
    dataset (one field or more from each), so the estimate sees every part of a screen.
    """
    names = shards(wildcards.dataset)
    want = min(len(names), config["segmentation"]["scale_fields"])
    picks = sorted(
        {round(i * (len(names) - 1) / max(want - 1, 1)) for i in range(want)}
    )
    return [f"results/{wildcards.dataset}/fields/{names[i]}.npz" for i in picks]


def shard_files(pattern):
    """Input function: ``pattern`` (with ``{dataset}`` and ``{shard}``) for every shard."""
    return lambda wildcards: expand(
        pattern, dataset=wildcards.dataset, shard=shards(wildcards.dataset)
    )


cell_shard_tables = shard_files("results/{dataset}/cells/{shard}.parquet")
cell_shard_qc = shard_files("results/{dataset}/cells/{shard}.qc.json")
cell_shard_arrays = shard_files("results/{dataset}/cells/{shard}.npy")
tile_shard_arrays = shard_files("results/{dataset}/tiles/{shard}.npy")
tile_shard_tables = shard_files("results/{dataset}/tiles/{shard}.parquet")


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
    if MODELS[wildcards.model].get("feedback"):
        # Expert feedback is an input: editing the CSV retrains this model (and its downstream).
        inputs["feedback"] = MODELS[wildcards.model]["feedback"]
    if MODELS[wildcards.model]["input"] == "tiles":
        inputs["tiles"] = tile_shard_arrays(wildcards)
        inputs["tile_tables"] = tile_shard_tables(wildcards)
        inputs["tile_stats"] = f"results/{wildcards.dataset}/tiles/stats.json"
    return inputs


def model_params(wildcards):
    return MODELS[wildcards.model]


def tensorboard_dir(wildcards):
    if MODELS[wildcards.model]["tensorboard"]:
        return f"results/{wildcards.dataset}/models/{wildcards.model}/tensorboard"
    return None


TARGETS = Targets(config, MODELS, DATASETS)
# Output paths (workflow_scripts.targets), under the names the rules use.
model_layers = TARGETS.model_layers
trained_models = TARGETS.trained_models
model_weights = TARGETS.model_weights
baseline_layers = TARGETS.baseline_layers
feature_tables = TARGETS.feature_tables
evaluated_layers = TARGETS.evaluated_layers
profile_tables = TARGETS.profile_tables
h5ad_tables = TARGETS.h5ad_tables
explorer_layers = TARGETS.explorer_layers
explorer_pages = TARGETS.explorer_pages
explorer_coord_files = TARGETS.explorer_coord_files
guided_pairs = TARGETS.guided_pairs
final_outputs = TARGETS.final_outputs


def all_feature_tables(wildcards):
    return TARGETS.feature_tables(wildcards.dataset)


def metric_files(wildcards):
    return TARGETS.metric_files(wildcards.dataset)


def screen_metric_files(wildcards):
    """The screening metrics of every feature table (none for a dataset without a layout)."""
    return TARGETS.screen_files(wildcards.dataset, ".json")


def screen_datasets_regex():
    """Wildcard constraint matching the datasets with a plate layout (screens)."""
    return datasets_regex(where=lambda entry: bool(entry.get("layout")))


def dataset_layout(wildcards):
    return DATASETS[wildcards.dataset]["layout"]


def embedding_outputs(stem):
    """UMAP and t-SNE maps of ``stem`` (``best``: the best learned layer, with its
    coordinates; ``handcrafted``: the hand-crafted baseline)."""
    outputs = {
        method: report(
            f"results/{{dataset}}/embeddings/{stem}_{method}.png",
            caption=f"../report/embedding_{stem}.rst",
            category="Embeddings",
        )
        for method in ("umap", "tsne")
    }
    if stem == "best":
        outputs["coords"] = "results/{dataset}/embeddings/best_layer.parquet"
    return outputs


def explorer_coords(wildcards):
    """Input function: the explorer pages' coordinates (the best layer's map reuses the UMAP
    of its page)."""
    return TARGETS.explorer_coord_files(wildcards.dataset)


def explorer_features(wildcards):
    """The feature table of every explorer page, in page order."""
    return TARGETS.explorer_features(wildcards.dataset)
