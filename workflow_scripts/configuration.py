"""Resolve a workflow configuration: validate it, complete it and check it across keys.

The Snakefile calls :func:`resolve_config` once, before any job is planned. It is a plain
function of the configuration (and of the files the configuration names), so every rule it
enforces is unit-tested without Snakemake. A configuration with problems raises one
:class:`ConfigError` that lists every problem found, each naming the key, the value and what
was expected, so a user fixes them all in one pass.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

from snakemake.utils import validate

from workflow_scripts import datasets as ds_lib
from workflow_scripts.config_check import config_errors
from workflow_scripts.models.spec import feature_layers, layer_names, resolve_model
from workflow_scripts.screen.layout import normalize_layout, synthetic_layout
from workflow_scripts.sources.registry import source_spec

__all__ = ["ConfigError", "ResolvedConfig", "canonical", "resolve_config"]

#: Where the schema lives, relative to the repository root.
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

class ConfigError(ValueError):
    """Every problem of a configuration, one per line.

    Parameters
    ----------
    problems : list of str
        One message per problem, each naming the key, the value and what was expected.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            "Invalid configuration (config.yaml and any --configfile / --config):\n  " + "\n  ".join(self.problems)
        )


@dataclass(frozen=True)
class ResolvedConfig:
    """A configuration ready for the workflow.

    Attributes
    ----------
    config : dict
        The configuration with the schema's defaults filled in, channel mappings turned
        into ordered lists and every mapping's keys sorted (re-ordering keys in a config
        file then leaves the rules' params, and so the outputs, unchanged).
    models : dict
        Model name -> its complete parameters (family defaults, preset, the entry's own keys;
        a reused model's architecture from the ``model.json`` beside its weights).
    datasets : dict
        The datasets this run processes (``run_datasets``, or all), name -> entry.
    """

    config: dict
    models: dict
    datasets: dict


def resolve_config(config: dict, schema_path: str | Path = SCHEMA) -> ResolvedConfig:
    """Validate and complete ``config``; raise one error listing every problem.

    Parameters
    ----------
    config : dict
        The configuration as Snakemake merged it (``config.yaml``, ``--configfile``,
        ``--config``). It is not modified.
    schema_path : str or Path, optional
        The JSON schema (YAML) the configuration follows.

    Returns
    -------
    ResolvedConfig
        The completed configuration, the resolved models and the datasets to run.

    Raises
    ------
    ConfigError
        Listing every schema violation; or, for a configuration that follows the schema,
        every cross-key problem (sizes that contradict each other, a model family that
        cannot use the input, a dataset without a nucleus channel, a file that does not
        exist, an unknown dataset or explorer layer).

    Examples
    --------
    >>> resolved = resolve_config({"datasets": {"demo": {"source": "synthetic"}},
    ...                            "models": {"vae": {"family": "vae"}}})
    >>> resolved.models["vae"]["latent_dim"], resolved.config["crop"]["resize_to"]
    (32, 64)
    >>> resolve_config({"datasets": {"demo": {"source": "synthetic"}},
    ...                 "models": {"vae": {"family": "vae"}}, "tiling": {"overlap": 64}})
    Traceback (most recent call last):
    ...
    workflow_scripts.configuration.ConfigError: Invalid configuration (config.yaml and any --configfile / --config):
      tiling.overlap (64) must be smaller than tiling.size (64)
    """
    problems = config_errors(config, schema_path)
    if problems:
        raise ConfigError(problems)
    cfg = copy.deepcopy(config)
    validate(cfg, schema=str(schema_path), set_default=True)
    models, problems = _resolve_models(cfg["models"])
    problems += _check_sizes(cfg, models)
    datasets, unknown = _run_datasets(cfg)
    problems += unknown
    problems += [p for name, entry in datasets.items() for p in _check_dataset(name, entry)]
    problems += _check_tile_models(models, datasets)
    problems += _check_explorer(cfg, models)
    if problems:
        raise ConfigError(problems)
    for entry in cfg["datasets"].values():
        if entry["source"] == "synthetic" and entry.get("plates") and not entry.get("layout"):
            entry["layout"] = synthetic_layout()  # a synthetic screen knows its own layout
        # Channel mappings become ordered lists ({key, name, role}) before keys are sorted:
        # the order the user wrote them is the channel order of the arrays.
        channels = ds_lib.normalize_channels(entry)
        if channels is not None:
            entry["channels"] = channels
    cfg = {key: canonical(value) for key, value in cfg.items()}
    return ResolvedConfig(cfg, models, {name: cfg["datasets"][name] for name in datasets})


def canonical(value):
    """Return ``value`` with every mapping's keys sorted, recursively.

    Parameters
    ----------
    value : object
        A configuration value.

    Returns
    -------
    object
        The same value; dicts rebuilt with sorted keys.

    Examples
    --------
    >>> canonical({"b": 1, "a": {"d": 2, "c": 3}})
    {'a': {'c': 3, 'd': 2}, 'b': 1}
    """
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    return value


def _resolve_models(entries: dict) -> tuple[dict, list[str]]:
    models, problems = {}, []
    for name, entry in entries.items():
        try:
            params = resolve_model(name, entry)
            if params["weights"]:
                params = _reused_model(name, params)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        models[name] = params
    return models, problems


def _reused_model(name: str, params: dict) -> dict:
    """Complete a model that reuses weights from the ``model.json`` beside them."""
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
            f"models.{name}: family {params['family']!r} but {record_path} holds a {record.get('family')!r} model"
        )
    return {**params, **record["params"], "weights": str(weights), "input": "cells"}


def _check_sizes(cfg: dict, models: dict) -> list[str]:
    """Sizes that contradict each other (area limits, tiles, model depth)."""
    problems = []
    for section in ("segmentation", "filter"):
        lo, hi = cfg[section]["min_area"], cfg[section]["max_area"]
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(f"{section}.min_area ({lo}) is larger than {section}.max_area ({hi})")
    tiling, size = cfg["tiling"], cfg["crop"]["resize_to"]
    if tiling["overlap"] >= tiling["size"]:
        problems.append(f"tiling.overlap ({tiling['overlap']}) must be smaller than tiling.size ({tiling['size']})")
    metrics = cfg["metrics"]
    if metrics["summary_k"] not in metrics["neighbors"]:
        problems.append(f"metrics.summary_k ({metrics['summary_k']}) must be one of metrics.neighbors {metrics['neighbors']}")
    for name, model in models.items():
        if model["input"] == "tiles" and model["family"] == "paired_inpainting":
            problems.append(f"models.{name}: paired_inpainting pairs cells; it needs input: cells")
        if model["input"] == "tiles" and tiling["size"] != size:
            problems.append(
                f"models.{name}: tile models are applied to cell crops for features, so "
                f"tiling.size ({tiling['size']}) must equal crop.resize_to ({size})"
            )
        if "depth" in model and size % (2 ** model["depth"]) != 0:
            problems.append(
                f"models.{name}.depth ({model['depth']}): the input size {size} must be divisible by 2**depth"
            )
    return problems


def _run_datasets(cfg: dict) -> tuple[dict, list[str]]:
    """Return the datasets this run processes, and a problem for each unknown name asked for."""
    wanted = cfg.get("run_datasets") or list(cfg["datasets"])
    unknown = [d for d in wanted if d not in cfg["datasets"]]
    known = {name: cfg["datasets"][name] for name in wanted if name in cfg["datasets"]}
    if unknown:
        return known, [f"run_datasets names {unknown}, which are not in datasets ({list(cfg['datasets'])})"]
    return known, []


def _check_dataset(name: str, entry: dict) -> list[str]:
    """Channels, patterns and files of one dataset entry."""
    spec = source_spec(entry["source"])
    if spec.fixed_channels is not None:
        return _check_plates(name, entry)
    try:
        channels = ds_lib.normalize_channels(entry)
    except (TypeError, ValueError) as exc:
        return [f"datasets.{name}.channels: {exc}"]
    problems = []
    roles = [c["role"] for c in channels]
    if spec.needs_nucleus and "nucleus" not in roles:
        problems.append(
            f"datasets.{name}.channels: no channel has role: nucleus (needed to segment nuclei); roles given: {roles}"
        )
    if entry.get("layout"):
        try:
            normalize_layout(entry["layout"], dataset=name)
        except ValueError as exc:
            problems.append(str(exc))
    if entry.get("pattern") and entry.get("fields_table"):
        problems.append(f"datasets.{name}: give 'pattern' or 'fields_table', not both")
    if entry.get("pattern"):
        try:
            re.compile(entry["pattern"])
        except re.error as exc:
            problems.append(f"datasets.{name}.pattern: {entry['pattern']!r} is not a valid regex: {exc}")
    for key in spec.files_needed_at_start:
        if entry.get(key) and not Path(entry[key]).exists():
            problems.append(f"datasets.{name}.{key}: {entry[key]!r} does not exist")
    return problems


def _check_plates(name: str, entry: dict) -> list[str]:
    """Check that a synthetic screen's plates divide its fields and leave wells for perturbations."""
    plates = entry.get("plates") or 0
    if not plates:
        return []
    if entry["n_fields"] % plates:
        return [f"datasets.{name}.n_fields ({entry['n_fields']}) must be a multiple of datasets.{name}.plates ({plates})"]
    wells, controls = entry["n_fields"] // plates, entry.get("controls_per_plate", 4)
    if controls >= wells:
        return [
            f"datasets.{name}.controls_per_plate ({controls}) must be smaller than the wells per plate "
            f"(n_fields / plates = {wells})"
        ]
    return []


def _check_tile_models(models: dict, datasets: dict) -> list[str]:
    """Tile models need whole fields: no pre-cropped dataset in the run."""
    crops = [n for n, d in datasets.items() if not source_spec(d["source"]).whole_fields]
    if not crops:
        return []
    return [
        f"models.{name}: input: tiles needs whole fields, but dataset(s) {crops} are pre-cropped cells (source: crops)"
        for name, model in models.items()
        if model["input"] == "tiles"
    ]


def _check_explorer(cfg: dict, models: dict) -> list[str]:
    """Every layer named under ``explorer.layers`` is a layer of a configured model."""
    problems = []
    for model, layers in cfg["explorer"]["layers"].items():
        if model not in models:
            continue
        known = feature_layers(models[model]["family"], models[model], cfg["features"]["pooling"])
        problems += [
            f"explorer.layers.{model}: {layer!r} is not a layer of {model}; expected one of {known}"
            for layer in layers
            if layer not in known
        ]
    return problems


def explorer_layer_names(cfg: dict, models: dict, model: str) -> list[str]:
    """Return the layers the explorer builds a page for, for one model.

    Parameters
    ----------
    cfg : dict
        The resolved configuration.
    models : dict
        The resolved models.
    model : str
        A model name.

    Returns
    -------
    list of str
        ``explorer.layers.<model>`` if given, else the model's last layer.
    """
    params = models[model]
    return cfg["explorer"]["layers"].get(model, [layer_names(params["family"], params)[-1]])
