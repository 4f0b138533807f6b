"""The configuration schema is the one home of every key, its default and its meaning.

README's configuration reference is generated from it (``workflow_scripts.config_reference``);
these tests check that README is current, that every key is described, and that the schema,
the model spec (``workflow_scripts.models.spec``), the model registry, the metric defaults
and the shipped configuration files agree with each other.
"""

from pathlib import Path

import jsonschema
import pytest
import yaml

from workflow_scripts.config_check import config_errors
from workflow_scripts.config_reference import (
    README,
    SCHEMA,
    START,
    load_schema,
    main,
    readme_block,
    render_reference,
)
from workflow_scripts.models import spec

REPO = Path(__file__).resolve().parents[1]
#: Spec keys that are not configuration: set at training time and recorded with the weights.
INTERNAL_MODEL_KEYS = {"guided_labels"}


@pytest.fixture(scope="module")
def schema() -> dict:
    """Load the configuration schema once."""
    return load_schema()


def _model_properties(schema: dict) -> dict:
    return schema["$defs"]["model"]["properties"]


def _properties(node, path=()):
    """Yield (dotted path, property schema) of every property, nested ones included."""
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            yield ".".join((*path, name)), prop
            yield from _properties(prop, (*path, name))
        for key in ("additionalProperties", "items"):
            yield from _properties(node.get(key), (*path, "*"))
        for name, definition in node.get("$defs", {}).items():
            yield from _properties(definition, ("$defs", name))


def _merge(base: dict, update: dict) -> dict:
    """Snakemake's merge of a --configfile over config.yaml: nested dicts key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_readme_reference_is_current(schema):
    """README's table is what the schema renders to."""
    assert readme_block(README.read_text()) == render_reference(schema), (
        "README's configuration reference is stale: run python -m workflow_scripts.config_reference"
    )


def test_check_reports_a_stale_readme_and_the_cli_rewrites_it(tmp_path, capsys):
    """``--check`` exits 1 on a stale table; a plain run rewrites it."""
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace(START, f"{START}\n| `stale` | | row |", 1))
    assert main(["--check", "--readme", str(readme)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--readme", str(readme)]) == 0
    assert readme.read_text() == README.read_text()
    assert main(["--check", "--readme", str(readme)]) == 0


def test_every_property_has_a_description(schema):
    """Every key of the schema, nested ones included, says what it means."""
    missing = [path for path, prop in _properties(schema) if not str(prop.get("description", "")).strip()]
    assert missing == []


def test_model_keys_are_the_spec_keys(schema):
    """The schema's model keys are the spec's, and presets only set those."""
    spec_keys = set(spec.COMMON_DEFAULTS).union(*spec.FAMILY_DEFAULTS.values()) - INTERNAL_MODEL_KEYS
    assert set(_model_properties(schema)) - {"family"} == spec_keys
    assert not INTERNAL_MODEL_KEYS & set(_model_properties(schema))
    for family, overrides in spec.TRAINING_DEFAULTS.items():
        assert set(overrides) <= set(spec.COMMON_DEFAULTS), family
    for preset in spec.PRESETS.values():
        for family, overrides in preset.items():
            assert set(overrides) <= spec_keys, family


def test_family_lists_agree(schema):
    """Schema enum, spec, presets and registry name the same families."""
    registry = pytest.importorskip("workflow_scripts.models.registry")  # imports torch
    enum = _model_properties(schema)["family"]["enum"]
    assert tuple(enum) == spec.FAMILIES
    assert set(registry._CLASSES) == set(spec.FAMILIES)
    assert list(spec.PRESETS["quick"]) == list(spec.PRESETS["full"]) == list(spec.FAMILIES)


def test_schema_defaults_agree_with_the_spec(schema):
    """A model key with a schema default has the spec's default."""
    for key, prop in _model_properties(schema).items():
        if "default" not in prop:
            continue
        if key in spec.COMMON_DEFAULTS:
            assert prop["default"] == spec.COMMON_DEFAULTS[key], key
        for family, defaults in spec.FAMILY_DEFAULTS.items():
            if key in defaults:
                assert prop["default"] == defaults[key], (key, family)


@pytest.mark.parametrize("preset", sorted(spec.PRESETS))
@pytest.mark.parametrize("family", spec.FAMILIES)
def test_resolved_spec_defaults_are_valid_config(schema, family, preset):
    """Every family's resolved defaults pass the schema (types, ranges, enums)."""
    resolved = spec.resolve_model("m", {"family": family, "preset": preset})
    entry = {key: value for key, value in resolved.items() if key not in INTERNAL_MODEL_KEYS}
    validator = jsonschema.Draft202012Validator({**schema["$defs"]["model"], "$defs": schema["$defs"]})
    assert [error.message for error in validator.iter_errors(entry)] == []


def test_metric_defaults_agree_with_the_schema(schema):
    """The metric suite's fallback defaults are the schema's."""
    suite = pytest.importorskip("workflow_scripts.metrics.suite")
    metrics = schema["properties"]["metrics"]["properties"]
    for key, value in suite.DEFAULTS.items():
        assert key in metrics and metrics[key].get("default") == value, key


def test_synthetic_knob_descriptions_give_each_difficulty_value(schema):
    """The synthetic knobs' descriptions quote each difficulty's value."""
    synthetic = pytest.importorskip("workflow_scripts.sources.synthetic")
    dataset = schema["$defs"]["dataset"]["properties"]
    assert dataset["difficulty"]["enum"] == list(synthetic.DIFFICULTIES)
    for knob in set(synthetic.DIFFICULTIES["standard"]) - {"classes"}:
        assert dataset[knob].get("x-default") == "the difficulty's", knob
        for difficulty, values in synthetic.DIFFICULTIES.items():
            assert f"`{difficulty}` {values[knob]:g}" in dataset[knob]["description"], (knob, difficulty)


def _shipped_configs():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    yield "config.yaml", base
    for path in sorted((REPO / "config" / "examples").glob("*.yaml")):
        yield f"config/examples/{path.name}", _merge(base, yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(("name", "config"), list(_shipped_configs()), ids=lambda v: v if isinstance(v, str) else "")
def test_shipped_configs_set_only_valid_keys(name, config):
    """config.yaml, alone and under each example, passes the schema and the spec."""
    assert config_errors(config, SCHEMA) == [], name
    for model, entry in config["models"].items():
        spec.resolve_model(model, entry)  # keys the family does not take raise
