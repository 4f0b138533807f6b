import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from workflow_scripts import datasets as ds_lib
from workflow_scripts import scale as scale_lib
from workflow_scripts.config_check import config_errors
from workflow_scripts.models.spec import feature_layers, layer_names, resolve_model

# Validate before any job runs: unknown keys and wrong types stop here, each with the key, the
# value and what was expected. Missing keys take the schema's defaults.
_config_errors = config_errors(
    config, Path(workflow.basedir) / "schemas" / "config.schema.yaml"
)
if _config_errors:
    raise WorkflowError(
        "Invalid configuration (config.yaml and any --configfile / --config):\n  "
        + "\n  ".join(_config_errors)
    )
validate(config, schema="../schemas/config.schema.yaml", set_default=True)


def _resolve_models(cfg):
    """Complete every model entry (family defaults, preset); a reused model takes its family
    and architecture from the model.json beside its weights."""
    resolved = {}
    for name, entry in cfg["models"].items():
        try:
            params = resolve_model(name, entry)
            if params["weights"]:
                params = _reused_model(name, params)
        except ValueError as exc:
            raise WorkflowError(f"Invalid configuration: {exc}") from None
        resolved[name] = params
    return resolved


def _reused_model(name, params):
    weights = Path(params["weights"])
    record_path = weights.with_name("model.json")
    if not weights.exists() or not record_path.exists():
        raise ValueError(
            f"models.{name}.weights: expected {weights} and {record_path} (written by a "
            f"previous cellembed run), found {'neither' if not weights.exists() else 'no model.json'}"
        )
    record = json.loads(record_path.read_text())
    if record.get("family") != params["family"]:
        raise ValueError(
            f"models.{name}: family {params['family']!r} but {record_path} holds a "
            f"{record.get('family')!r} model"
        )
    return {**params, **record["params"], "weights": str(weights), "input": "cells"}


def _check_config(cfg, models):
    """Cross-key checks a JSON schema cannot express."""
    problems = []
    for section in ("segmentation", "filter"):
        lo, hi = cfg[section]["min_area"], cfg[section]["max_area"]
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
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
    for name, model in models.items():
        if model["input"] == "tiles" and model["family"] == "paired_inpainting":
            problems.append(
                f"models.{name}: paired_inpainting pairs cells; it needs input: cells"
            )
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
        if "depth" in model and size % (2 ** model["depth"]) != 0:
            problems.append(
                f"models.{name}.depth ({model['depth']}): the input size {size} must be "
                f"divisible by 2**depth"
            )
    wanted = cfg.get("run_datasets") or list(cfg["datasets"])
    run = {n: d for n, d in cfg["datasets"].items() if n in wanted}
    crops = [n for n, d in run.items() if d["source"] == "crops"]
    for name, model in models.items():
        if model["input"] == "tiles" and crops:
            problems.append(
                f"models.{name}: input: tiles needs whole fields, but dataset(s) {crops} are "
                f"pre-cropped cells (source: crops)"
            )
    for name, entry in run.items():
        if entry["source"] == "synthetic":
            continue
        try:
            chans = ds_lib.normalize_channels(entry)
        except (TypeError, ValueError) as exc:
            problems.append(f"datasets.{name}.channels: {exc}")
            continue
        roles = [c["role"] for c in chans]
        if entry["source"] != "crops" and "nucleus" not in roles:
            problems.append(
                f"datasets.{name}.channels: no channel has role: nucleus (needed to segment "
                f"nuclei); roles given: {roles}"
            )
        if entry.get("pattern") and entry.get("fields_table"):
            problems.append(
                f"datasets.{name}: give 'pattern' or 'fields_table', not both"
            )
        for key in ("pattern",):
            if entry.get(key):
                try:
                    re.compile(entry[key])
                except re.error as exc:
                    problems.append(
                        f"datasets.{name}.{key}: {entry[key]!r} is not a valid regex: {exc}"
                    )
        for key in (
            "path",
            "metadata",
            "fields_table",
            "array",
            "labels",
            "manifest",
            "genes",
        ):
            needs_now = key != "path" or entry["source"] in ("local", "crops")
            if entry.get(key) and needs_now and not Path(entry[key]).exists():
                problems.append(f"datasets.{name}.{key}: {entry[key]!r} does not exist")
    if problems:
        raise WorkflowError("Invalid configuration:\n  " + "\n  ".join(problems))


MODELS = _resolve_models(config)
_check_config(config, MODELS)


def _canonical(value):
    """Dicts with sorted keys, recursively."""
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    return value


# Channel mappings become ordered lists ({key, name, role}) before keys are sorted: the order
# the user wrote them is the channel order of the arrays.
for _entry in config["datasets"].values():
    _chans = ds_lib.normalize_channels(_entry)
    if _chans is not None:
        _entry["channels"] = _chans

# Rules receive config sections as params, and Snakemake compares params as written: with
# canonical key order, re-ordering keys in a config file does not make outputs stale.
for _key in list(config):
    config[_key] = _canonical(config[_key])

_wanted = config.get("run_datasets") or list(config["datasets"])
_unknown = [d for d in _wanted if d not in config["datasets"]]
if _unknown:
    raise WorkflowError(
        f"Invalid configuration: run_datasets names {_unknown}, which are not in datasets "
        f"({list(config['datasets'])})"
    )
DATASETS = {name: config["datasets"][name] for name in _wanted}
POOLING = config["features"]["pooling"]
# Sources that give whole fields of view (segmented here); "crops" gives cells directly.
FIELD_SOURCES = ("synthetic", "local", "manifest", "hpa", "bbbc")


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    shard=ds_lib.SHARD_PATTERN,
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    layer="[A-Za-z0-9][A-Za-z0-9_]*",


def datasets_regex(*sources):
    """Wildcard constraint matching exactly the datasets of these sources (rules that only
    apply to some sources, e.g. segmentation, which pre-cropped cells skip)."""
    names = [n for n, e in DATASETS.items() if e["source"] in sources]
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def dataset_root(wildcards):
    """Folder the image paths of a dataset are relative to (downloads land here)."""
    entry = DATASETS[wildcards.dataset]
    return entry.get("path") or f"results/{wildcards.dataset}/raw"


def dataset_entry(wildcards):
    return DATASETS[wildcards.dataset]


def listing_fingerprint(wildcards):
    """Names, sizes and times of a local dataset's files: adding or replacing an image
    re-indexes it (downloaded datasets are re-indexed when their download reruns)."""
    entry = DATASETS[wildcards.dataset]
    if (
        entry["source"] in ("local", "crops")
        and entry.get("path")
        and not entry.get("fields_table")
    ):
        from workflow_scripts.sources.local import listing_fingerprint as fingerprint

        return fingerprint(entry["path"], entry.get("pattern"))
    return ""


def index_inputs(wildcards):
    entry = DATASETS[wildcards.dataset]
    inputs = {
        key: entry[key]
        for key in ("metadata", "fields_table", "array", "labels")
        if entry.get(key)
    }
    if entry["source"] == "manifest":
        inputs["download"] = f"results/{wildcards.dataset}/acquire/download.json"
    if entry["source"] in ("hpa", "bbbc"):
        inputs["fields_table"] = f"results/{wildcards.dataset}/raw/fields.csv"
    return inputs


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
    if entry["source"] == "synthetic":
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


def hpa_options(wildcards):
    entry = DATASETS[wildcards.dataset]
    keys = ("max_genes", "max_images_per_gene", "base_url", "image_base_url", "yellow")
    return {k: entry[k] for k in keys if k in entry}


def bbbc_options(wildcards):
    entry = DATASETS[wildcards.dataset]
    return {
        "archives": entry["archives"],
        "image_csv": entry["image_csv"],
        "moa_csv": entry.get("moa_csv"),
        "channels": [c["key"] for c in entry["channels"]],
    }


def shard_fields(wildcards):
    return ds_lib.shard_fields(DATASETS[wildcards.dataset], wildcards.shard)


# Options of the synthetic source that default to its difficulty's value (None = preset).
SYNTHETIC_KNOBS = (
    "classes",
    "expression_sd",
    "dim_fraction",
    "channel_gain_sd",
    "background",
    "defocus",
    "out_of_focus_fraction",
)


def synthetic_options(wildcards):
    entry = DATASETS[wildcards.dataset]
    return {
        "size": entry["field_size"],
        "cells_per_field": entry["cells_per_field"],
        "batch_sd": entry["batch_sd"],
        "difficulty": entry["difficulty"],
        **{key: entry.get(key) for key in SYNTHETIC_KNOBS},
    }


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


def model_layers(model):
    """Feature tables of a model: one per layer and pooling."""
    return feature_layers(MODELS[model]["family"], MODELS[model], POOLING)


def trained_models():
    """Models this workflow trains (not those reusing weights)."""
    return [name for name, params in MODELS.items() if not params["weights"]]


def model_weights(model):
    """Weights and model.json a model's features come from: trained here, or reused."""
    if MODELS[model]["weights"]:
        weights = MODELS[model]["weights"]
        return {
            "weights": weights,
            "config": str(Path(weights).with_name("model.json")),
        }
    return {
        "weights": f"results/{{dataset}}/models/{model}/weights.safetensors",
        "config": f"results/{{dataset}}/models/{model}/model.json",
    }


RANDOM_CNN_LAYERS = ["conv1", "conv2", "conv3", "conv4"]


def baseline_layers():
    """(name, layer) of every baseline evaluated beside the models, raw-pixel PCA first."""
    layers = [("pca", "pixels")]
    if config["baselines"]["handcrafted"]:
        layers.append(("handcrafted", "all"))
    if config["baselines"]["random_cnn"]:
        layers += [("random_cnn", layer) for layer in RANDOM_CNN_LAYERS]
    if config["baselines"]["cell_count"]:
        layers.append(("cellcount", "count"))
    return layers


def feature_tables(dataset):
    """Every (model, layer) feature table of a dataset, the baselines first."""
    tables = [
        f"results/{dataset}/features/{name}/{layer}.parquet"
        for name, layer in baseline_layers()
    ]
    for model in MODELS:
        tables += expand(
            "results/{dataset}/features/{model}/{layer}.parquet",
            dataset=dataset,
            model=model,
            layer=model_layers(model),
        )
    return tables


def evaluated_layers():
    """Evaluation job -> the (name, layer) tables it evaluates: one job for all baselines
    (``baselines``), then one per model."""
    out = {}
    if baseline_layers():
        out["baselines"] = list(baseline_layers())
    for model in MODELS:
        out[model] = [(model, layer) for layer in model_layers(model)]
    return out


def profile_tables(dataset):
    """Per-group profiles of every feature table (``dataset`` may be the wildcard)."""
    layers = baseline_layers() + [
        (model, layer) for model in MODELS for layer in model_layers(model)
    ]
    return [
        f"results/{dataset}/profiles/{name}/{layer}.parquet" for name, layer in layers
    ]


def h5ad_tables(dataset):
    """AnnData exports (``profiles.h5ad``): per cell ``profiles/<name>/<layer>.cells.h5ad``
    and per group ``profiles/<name>/<layer>.h5ad``; none when the option is off."""
    if not config["profiles"]["h5ad"]:
        return []
    return [
        path.replace(".parquet", suffix)
        for path in profile_tables(dataset)
        for suffix in (".cells.h5ad", ".h5ad")
    ]


def all_feature_tables(wildcards):
    return feature_tables(wildcards.dataset)


def metric_files(wildcards):
    files = [
        f"results/{wildcards.dataset}/metrics/{name}/{layer}.json"
        for name, layer in baseline_layers()
    ]
    for model in MODELS:
        files += expand(
            "results/{dataset}/metrics/{model}/{layer}.json",
            dataset=wildcards.dataset,
            model=model,
            layer=model_layers(model),
        )
    return files


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


def explorer_coord_files(dataset):
    """The 2-D coordinates beside every explorer page of ``dataset`` (may be the wildcard)."""
    return [
        page[: -len(".html")] + ".coords.parquet" for page in explorer_pages(dataset)
    ]


def explorer_coords(wildcards):
    """Input function: the explorer pages' coordinates (the best layer's map reuses the UMAP
    of its page)."""
    return explorer_coord_files(wildcards.dataset)


def guided_pairs():
    """Guided model -> the unguided model of the same family it is compared with (the first
    one configured), for the before/after table of the report."""
    pairs = {}
    for name, params in MODELS.items():
        if params.get("guided"):
            base = [
                other
                for other, p in MODELS.items()
                if p["family"] == params["family"] and not p.get("guided")
            ]
            if base:
                pairs[name] = base[0]
    return pairs


def explorer_layers(dataset):
    """(model, layer, page) of every explorer page: per model, the layers of
    ``explorer.layers`` or its last layer (``dataset`` may be the wildcard)."""
    pages = []
    for model in MODELS:
        family = MODELS[model]["family"]
        layers = config["explorer"]["layers"].get(
            model, [layer_names(family, MODELS[model])[-1]]
        )
        known = model_layers(model)
        for layer in layers:
            if layer not in known:
                raise WorkflowError(
                    f"Invalid configuration: explorer.layers.{model}: {layer!r} is not a "
                    f"layer of {model}; expected one of {known}"
                )
            pages.append(
                (model, layer, f"results/{dataset}/explorer/{model}/{layer}.html")
            )
    return pages


def explorer_pages(dataset):
    """Explorer pages (files) of ``dataset``."""
    return [page for _, _, page in explorer_layers(dataset)]


def explorer_features(wildcards):
    """The feature table of every explorer page, in page order."""
    return [
        f"results/{wildcards.dataset}/features/{model}/{layer}.parquet"
        for model, layer, _ in explorer_layers(wildcards.dataset)
    ]


def final_outputs():
    """What `snakemake all` builds: per dataset the metric summary, the embedding of the
    best layer, QC figures and every model's training outputs."""
    outputs = []
    for dataset in DATASETS:
        outputs += [
            f"results/{dataset}/metrics/summary.csv",
            f"results/{dataset}/metrics/summary.png",
            f"results/{dataset}/embeddings/best_umap.png",
            *(
                [f"results/{dataset}/embeddings/handcrafted_umap.png"]
                if config["baselines"]["handcrafted"]
                else []
            ),
            f"results/{dataset}/metrics/comparison.html",
            *profile_tables(dataset),
            *h5ad_tables(dataset),
            *explorer_pages(dataset),
            f"results/{dataset}/qc/drops.csv",
        ]
        if DATASETS[dataset]["source"] != "crops":
            outputs += [
                f"results/{dataset}/qc/segmentation_overlay.png",
                f"results/{dataset}/qc/segmentation_qc.png",
            ]
        for model in trained_models():
            outputs += expand(
                "results/{dataset}/models/{model}/{name}",
                dataset=dataset,
                model=model,
                name=["learning_curve.png", "reconstructions.png"],
            )
            if MODELS[model]["input"] == "tiles":
                outputs.append(f"results/{dataset}/models/{model}/stitched.png")
    return outputs


# --- Cluster sizing (the SLURM profile, profiles/slurm) -----------------------------------------
# Per-shard jobs ask for memory and time in proportion to the pixels of their shard; every job
# asks for more on each retry (`attempt` is 1, then 2, ...; the SLURM profile sets `retries`), so
# a job the cluster killed for memory or time gets more when it is resubmitted.
import math

#: Pixels of one field where the configuration does not say (real microscopy: 2048 x 2048).
ASSUMED_FIELD_PIXELS = 2048 * 2048


def shard_megapixels(wildcards):
    """Millions of pixel values (fields x height x width x channels) in one shard."""
    entry = DATASETS[wildcards.dataset]
    if entry["source"] == "synthetic":
        fields = len(ds_lib.shard_fields(entry, wildcards.shard))
        pixels = entry["field_size"] ** 2
    elif entry["source"] == "crops":
        fields = entry["shard_size"]
        pixels = (2 * config["crop"]["resize_to"]) ** 2
    else:
        # Shards grow past max_shards (datasets.effective_shard_size).
        n_fields = len(_index_table(wildcards.dataset))
        fields = ds_lib.effective_shard_size(entry, n_fields)
        pixels = ASSUMED_FIELD_PIXELS
    channels = ds_lib.normalize_channels(entry) or ds_lib.SYNTHETIC_CHANNELS
    return fields * pixels * len(channels) / 1e6


def shard_mem_mb(base_mb, mb_per_megapixel):
    """Memory of a per-shard job: a base plus so much per megapixel of the shard."""

    def mem_mb(wildcards, attempt):
        mpx = shard_megapixels(wildcards)
        return attempt * (base_mb + math.ceil(mb_per_megapixel * mpx))

    return mem_mb


def shard_runtime(base_minutes, seconds_per_megapixel):
    """Wall time (minutes) of a per-shard job: a base plus so long per megapixel."""

    def runtime(wildcards, attempt):
        mpx = shard_megapixels(wildcards)
        return attempt * (base_minutes + math.ceil(seconds_per_megapixel * mpx / 60))

    return runtime


def threads_up_to(n):
    """``threads:`` of a multi-threaded rule: ``n``, but 1 on a machine of fewer than 4 cores.
    There jobs run side by side, one per core, and fill each other's gaps: a job on 2 threads
    leaves a core idle in its single-threaded parts and blocks every 1-thread job until both
    cores are free (measured on 2 cores, quick preset: a 2-thread training step takes
    0.55-0.61x the time of a 1-thread one, so two 1-thread jobs do 10-20 % more). Without
    --cores (a cluster run) ``n``."""

    def threads(wildcards):
        try:
            cores = workflow.cores
        except WorkflowError:
            return n
        return 1 if cores < 4 else n

    return threads


def retry_scaled(value):
    """A resource that is ``value`` on the first attempt, twice that on the second, ..."""
    return lambda wildcards, attempt: value * attempt


def share_set_resources(family, rules):
    """Rules generated per model (``extract_features_<model>``, ``evaluate_<name>``) take the
    ``--set-resources`` (a profile's ``set-resources:``) given for their family name, e.g.
    ``extract_features``; an entry naming the rule itself wins, key by key. Called before the
    rules are defined; the submitted jobs' own Snakemake receives the merged entries."""
    given = getattr(workflow.resource_settings, "_parsed_overwrite_resources", None)
    if not given or family not in given:
        return
    for name in rules:
        merged = given[family].copy()
        if name in given:
            merged.update(given[name])
        given[name] = merged


share_set_resources("extract_features", [f"extract_features_{m}" for m in MODELS])
share_set_resources("evaluate", [f"evaluate_{name}" for name in evaluated_layers()])
