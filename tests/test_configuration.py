"""resolve_config: the configuration the workflow runs with, and every problem in one error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from workflow_scripts.configuration import ConfigError, canonical, resolve_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def _config(**sections):
    config = copy.deepcopy(DEFAULT)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def _problems(config) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve_config(config)
    assert str(info.value).startswith("Invalid configuration")
    return info.value.problems


def test_default_config_resolves_with_schema_defaults_and_sorted_keys():
    resolved = resolve_config(DEFAULT)
    config = resolved.config
    assert list(config["crop"]) == sorted(config["crop"]) and list(config["models"]) == sorted(config["models"])
    assert config["metrics"]["n_splits"] == 5 and config["explorer"]["max_cells"] == 20000  # schema defaults
    assert config["datasets"]["synthetic"]["difficulty"] == "hard"  # the file's own value
    assert list(resolved.models) == ["vae", "pci", "simclr"]  # the order written
    assert resolved.models["simclr"]["batch_size"] == 128 and resolved.models["vae"]["latent_dim"] == 32
    assert list(resolved.datasets) == ["synthetic"]
    assert DEFAULT == yaml.safe_load((REPO / "config.yaml").read_text())  # the input is not modified


def test_key_order_of_the_file_does_not_change_the_resolved_config():
    shuffled = {key: DEFAULT[key] for key in reversed(list(DEFAULT))}
    shuffled["crop"] = dict(reversed(list(DEFAULT["crop"].items())))
    assert resolve_config(shuffled).config == resolve_config(DEFAULT).config


def test_channels_become_an_ordered_list(tmp_path):
    config = _config(
        datasets={
            "mine": {
                "source": "local",
                "path": str(tmp_path),
                "channels": {"dapi": {"name": "DAPI", "role": "nucleus"}, "gfp": {"name": "GFP", "role": "protein"}},
            }
        },
        run_datasets=["mine"],
    )
    channels = resolve_config(config).datasets["mine"]["channels"]
    assert [c["key"] for c in channels] == ["dapi", "gfp"] and channels[0]["role"] == "nucleus"


def test_schema_violations_are_listed_together():
    config = _config(seed="zero", crop={"size": 0})
    problems = _problems(config)
    assert len(problems) == 2
    assert any(p.startswith("seed = 'zero'") for p in problems)
    assert any(p.startswith("crop.size = 0") for p in problems)


def test_cross_key_problems_are_listed_together(tmp_path):
    config = _config(
        segmentation={"min_area": 500, "max_area": 100},
        tiling={"size": 64, "overlap": 64},
        crop={"resize_to": 96},
        metrics={"summary_k": 7},
        run_datasets=["synthetic", "elsewhere"],
        explorer={"layers": {"vae": ["conv9"]}},
    )
    config["models"]["pci"]["input"] = "tiles"
    config["models"]["vae"]["depth"] = 6
    problems = _problems(config)
    expected = [
        "segmentation.min_area (500) is larger than segmentation.max_area (100)",
        "tiling.overlap (64) must be smaller than tiling.size (64)",
        "metrics.summary_k (7) must be one of metrics.neighbors [5, 10, 20, 50]",
        "models.vae.depth (6): the input size 96 must be divisible by 2**depth",
        "models.pci: paired_inpainting pairs cells; it needs input: cells",
        "models.pci: tile models are applied to cell crops for features, so tiling.size (64) must equal crop.resize_to (96)",
        "run_datasets names ['elsewhere'], which are not in datasets",
        "explorer.layers.vae: 'conv9' is not a layer of vae; expected one of ['conv1',",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)


def test_model_problems_name_each_model():
    config = _config()
    config["models"]["vae"]["dropout"] = 0.5
    config["models"]["pci"]["family"] = "vae"
    config["models"]["pci"]["width_mult"] = 2.0
    problems = _problems(config)
    assert any("dropout" in p for p in problems)  # the schema rejects an unknown key
    config = _config()
    config["models"]["pci"] = {"family": "vae", "width_mult": 2.0}
    config["models"]["ae"] = {"family": "ae", "beta": 2.0}
    problems = _problems(config)
    assert len(problems) == 2
    assert "models.pci: 'width_mult' not used by family 'vae'" in problems[0]
    assert "models.ae: 'beta' not used by family 'ae'" in problems[1]


def test_dataset_problems(tmp_path):
    config = _config(
        datasets={
            "a": {
                "source": "local",
                "path": str(tmp_path / "nowhere"),
                "pattern": "(?P<image",
                "channels": {"gfp": {"name": "GFP", "role": "protein"}},
            },
            "b": {"source": "crops", "path": str(tmp_path), "array": str(tmp_path / "x.npz"), "labels": "y.csv",
                  "channels": {"gfp": {"name": "GFP", "role": "protein"}}},
        },
        run_datasets=["a", "b"],
    )
    config["models"]["vae"]["input"] = "tiles"
    problems = _problems(config)
    assert any("datasets.a.channels: no channel has role: nucleus" in p for p in problems)
    assert any("datasets.a.pattern: '(?P<image' is not a valid regex" in p for p in problems)
    assert any(p.startswith("datasets.a.path:") and "does not exist" in p for p in problems)
    assert any(p.startswith("datasets.b.array:") for p in problems)
    assert not any(p.startswith("datasets.b.channels") for p in problems)  # crops need no nucleus
    assert any("models.vae: input: tiles needs whole fields, but dataset(s) ['b']" in p for p in problems)


def test_reused_weights_must_exist_with_their_record(tmp_path):
    config = _config()
    config["models"]["vae"]["weights"] = str(tmp_path / "weights.safetensors")
    problems = _problems(config)
    assert problems == [
        f"models.vae.weights: expected {tmp_path / 'weights.safetensors'} and {tmp_path / 'model.json'} "
        "(written by a previous cellembed run), found neither"
    ]


def test_canonical_sorts_nested_keys_and_keeps_lists():
    assert canonical({"b": [3, 1], "a": {"z": 1, "y": {"x": 0, "w": 0}}}) == {"a": {"y": {"w": 0, "x": 0}, "z": 1}, "b": [3, 1]}
    assert list(canonical({"b": 1, "a": 2})) == ["a", "b"]


def test_config_yaml_restates_only_schema_defaults_apart_from_its_dataset_and_models():
    """Defaults live in the schema: the values config.yaml shows as a starting point are the
    schema's own, so the two cannot drift apart (the dataset and models are the file's)."""
    schema_defaults = resolve_config({"datasets": DEFAULT["datasets"], "models": DEFAULT["models"]}).config
    shown = resolve_config(DEFAULT).config
    assert shown == schema_defaults
