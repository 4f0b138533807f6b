"""The source registry gives what rules/common.smk computed per source before it existed.

The ``_today_*`` functions below are the per-source logic of rules/common.smk as it was
written inline (DATASETS[wildcards.dataset] replaced by the entry), kept here as the
reference the registry must reproduce value for value.
"""

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_scripts import datasets as ds_lib
from workflow_scripts.sources import registry
from workflow_scripts.sources.registry import (
    ASSUMED_FIELD_PIXELS,
    DOWNLOAD_SOURCES,
    FIELD_SOURCES,
    INDEXED_SOURCES,
    SOURCES,
    SYNTHETIC_KNOBS,
    dataset_root,
    source_spec,
    sources_where,
)

CHANNELS = [
    {"key": "0", "name": "dna", "role": "nucleus"},
    {"key": "1", "name": "gfp", "role": "protein"},
]
# One entry per source, with the schema's defaults filled in as the Snakefile sees them.
COMMON = {"shard_size": 16, "max_shards": 1000, "on_bad_image": "fail", "download": {}}
ENTRIES = {
    "synthetic": {
        **COMMON,
        "source": "synthetic",
        "n_fields": 40,
        "field_size": 128,
        "cells_per_field": 45,
        "batch_sd": 0.3,
        "difficulty": "hard",
        "defocus": 0.5,
    },
    "local": {**COMMON, "source": "local", "path": "imgs", "pattern": r"(?P<image>.+)\.tif", "channels": CHANNELS},
    "local_table": {
        **COMMON,
        "source": "local",
        "path": "imgs",
        "fields_table": "f.csv",
        "metadata": "m.csv",
        "channels": CHANNELS,
    },
    "crops": {**COMMON, "source": "crops", "path": "cells", "channels": CHANNELS[1:], "cells_per_shard": 4096},
    "crops_array": {
        **COMMON,
        "source": "crops",
        "array": "a.npz",
        "labels": "l.csv",
        "channels": CHANNELS[1:],
        "cells_per_shard": 4096,
    },
    "manifest": {**COMMON, "source": "manifest", "manifest": "m.csv", "channels": CHANNELS, "metadata": "meta.csv"},
    "hpa": {**COMMON, "source": "hpa", "genes": "g.csv", "yellow": True, "max_genes": 2, "base_url": "http://x"},
    "hpa_plain": {**COMMON, "source": "hpa", "genes": "g.csv", "path": "dl", "fields_table": "mine.csv"},
    "bbbc": {
        **COMMON,
        "source": "bbbc",
        "archives": ["http://x/a.zip"],
        "image_csv": ["http://x/i.csv"],
        "channels": [{"key": "DAPI", "name": "dna", "role": "nucleus"}],
    },
}
ENTRIES["bbbc_moa"] = {**ENTRIES["bbbc"], "moa_csv": "http://x/moa.csv"}


# --- rules/common.smk as it was ----------------------------------------------------------------


def _today_dataset_root(dataset, entry):
    return entry.get("path") or f"results/{dataset}/raw"


def _today_fingerprinted(entry):
    return bool(entry["source"] in ("local", "crops") and entry.get("path") and not entry.get("fields_table"))


def _today_index_inputs(dataset, entry):
    inputs = {key: entry[key] for key in ("metadata", "fields_table", "array", "labels") if entry.get(key)}
    if entry["source"] == "manifest":
        inputs["download"] = f"results/{dataset}/acquire/download.json"
    if entry["source"] in ("hpa", "bbbc"):
        inputs["fields_table"] = f"results/{dataset}/raw/fields.csv"
    return inputs


def _today_hpa_options(entry):
    keys = ("max_genes", "max_images_per_gene", "base_url", "image_base_url", "yellow")
    return {k: entry[k] for k in keys if k in entry}


def _today_bbbc_options(entry):
    return {
        "archives": entry["archives"],
        "image_csv": entry["image_csv"],
        "moa_csv": entry.get("moa_csv"),
        "channels": [c["key"] for c in entry["channels"]],
    }


_TODAY_KNOBS = (
    "classes",
    "expression_sd",
    "dim_fraction",
    "channel_gain_sd",
    "background",
    "defocus",
    "out_of_focus_fraction",
)


def _today_synthetic_options(entry):
    return {
        "size": entry["field_size"],
        "cells_per_field": entry["cells_per_field"],
        "batch_sd": entry["batch_sd"],
        "difficulty": entry["difficulty"],
        **{key: entry.get(key) for key in _TODAY_KNOBS},
    }


def _today_files_checked(entry):
    """The keys _check_config checks for existence, in order (none for synthetic)."""
    if entry["source"] == "synthetic":
        return []
    keys = ("path", "metadata", "fields_table", "array", "labels", "manifest", "genes")
    return [key for key in keys if key != "path" or entry["source"] in ("local", "crops")]


def _today_shard_megapixels(entry, shard, resize_to, n_indexed):
    if entry["source"] == "synthetic":
        fields = len(ds_lib.shard_fields(entry, shard))
        pixels = entry["field_size"] ** 2
    elif entry["source"] == "crops":
        fields = entry["cells_per_shard"]  # what a crops shard holds (not shard_size fields)
        pixels = (2 * resize_to) ** 2
    else:
        fields = ds_lib.effective_shard_size(entry, n_indexed)
        pixels = 2048 * 2048
    channels = ds_lib.normalize_channels(entry) or ds_lib.SYNTHETIC_CHANNELS
    return fields * pixels * len(channels) / 1e6


# --- the registry gives the same --------------------------------------------------------------


def test_source_names_are_the_schema_enum():
    schema = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
    enum = re.search(r"source: \{type: string, enum: \[([^\]]+)\]", schema.read_text()).group(1)
    assert list(SOURCES) == [name.strip() for name in enum.split(",")]
    assert all(spec.name == name for name, spec in SOURCES.items())


def test_source_groups_match_the_workflow():
    assert FIELD_SOURCES == ("synthetic", "local", "manifest", "hpa", "bbbc")
    assert INDEXED_SOURCES == ("local", "crops", "manifest", "hpa", "bbbc")
    assert DOWNLOAD_SOURCES == ("manifest", "hpa", "bbbc")
    # load_fields: indexed whole fields.
    assert sources_where(whole_fields=True, indexed=True) == ("local", "manifest", "hpa", "bbbc")
    assert sources_where(lists_user_files=True) == ("local", "crops")


def test_unknown_source_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown source 'omero'; expected one of \['synthetic', 'local'"):
        source_spec("omero")
    with pytest.raises(ValueError, match="unknown source None"):
        source_spec(None)


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match=r"unknown flag\(s\) \['module'\]"):
        sources_where(module="x")


@pytest.mark.parametrize("name", list(ENTRIES))
def test_entry_values_equal_common_smk(name):
    entry = ENTRIES[name]
    spec = source_spec(entry["source"])
    assert dataset_root(name, entry) == _today_dataset_root(name, entry)
    assert spec.fingerprinted(entry) == _today_fingerprinted(entry)
    assert spec.index_inputs(name, entry) == _today_index_inputs(name, entry)
    assert list(spec.index_inputs(name, entry)) == list(_today_index_inputs(name, entry))
    assert [k for k in spec.files_needed_at_start] == _today_files_checked(entry)
    assert spec.whole_fields == (entry["source"] != "crops")
    assert spec.needs_nucleus == (entry["source"] != "crops")
    assert (spec.fixed_channels is not None) == (entry["source"] == "synthetic")
    if entry["source"] == "hpa":
        assert spec.options(entry) == _today_hpa_options(entry)
    elif entry["source"] == "bbbc":
        assert spec.options(entry) == _today_bbbc_options(entry)
    elif entry["source"] == "synthetic":
        options = spec.options(entry)
        assert options == _today_synthetic_options(entry)
        assert list(options) == list(_today_synthetic_options(entry))
    else:
        assert spec.options(entry) == {}


def _megapixels(entry, shard, resize_to, index_rows):
    """Megapixels of a shard from the registry's shard size, as the cluster sizing computes them."""
    spec = source_spec(entry["source"])
    fields, pixels = spec.shard_size(entry, shard, resize_to=resize_to, index_rows=index_rows)
    channels = ds_lib.normalize_channels(entry) or ds_lib.SYNTHETIC_CHANNELS
    return fields * pixels * len(channels) / 1e6


@pytest.mark.parametrize("name", list(ENTRIES))
@pytest.mark.parametrize("n_indexed", [1, 100, 50_000])
def test_shard_size_gives_the_megapixels_of_common_smk(name, n_indexed):
    entry = ENTRIES[name]
    shards = ds_lib.shard_names(entry) if entry["source"] == "synthetic" else ["s0000"]
    for shard in shards:
        got = _megapixels(entry, shard, 64, lambda: n_indexed)
        assert got == _today_shard_megapixels(entry, shard, 64, n_indexed)
    assert ASSUMED_FIELD_PIXELS == 2048 * 2048


def test_index_size_is_asked_only_where_needed():
    def no_index():
        raise AssertionError("the index was read")

    for name in ("synthetic", "crops"):
        entry = ENTRIES[name]
        fields, pixels = source_spec(entry["source"]).shard_size(entry, "s0000", resize_to=64, index_rows=no_index)
        assert fields > 0 and pixels > 0


def test_listing_fingerprint_follows_the_files(tmp_path):
    from workflow_scripts.sources.local import listing_fingerprint

    (tmp_path / "a.tif").write_bytes(b"1")
    entry = {**ENTRIES["local"], "path": str(tmp_path), "pattern": None}
    spec = source_spec("local")
    first = spec.listing(entry)
    assert first == listing_fingerprint(tmp_path, None) and first
    (tmp_path / "b.tif").write_bytes(b"2")
    assert spec.listing(entry) != first
    assert spec.listing({**entry, "fields_table": "f.csv"}) == ""
    assert source_spec("manifest").listing({**ENTRIES["manifest"], "path": str(tmp_path)}) == ""


def test_synthetic_knobs_are_the_difficulty_settings():
    from workflow_scripts.sources.synthetic import DIFFICULTIES

    assert SYNTHETIC_KNOBS == _TODAY_KNOBS
    for preset in DIFFICULTIES.values():
        assert tuple(preset) == SYNTHETIC_KNOBS


def test_synthetic_channels_are_the_generator_channels():
    from workflow_scripts.sources.synthetic import CHANNELS as GENERATED

    fixed = source_spec("synthetic").fixed_channels
    assert tuple(c["name"] for c in fixed) == GENERATED


@pytest.mark.parametrize("name", list(SOURCES))
def test_spec_module_exists(name):
    assert importlib.util.find_spec(SOURCES[name].module) is not None


def test_registry_imports_nothing_heavy():
    code = (
        "import sys; import workflow_scripts.sources.registry; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'requests', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_specs_are_immutable():
    with pytest.raises(AttributeError):
        registry.SOURCES["hpa"].downloads = False  # type: ignore[misc]
    assert math.isclose(_megapixels(ENTRIES["synthetic"], "s0000", 64, int), 16 * 128**2 * 3 / 1e6)


def test_a_crops_shard_is_sized_by_the_cells_it_holds():
    """A crops shard holds ``cells_per_shard`` cells (4,096 by default), not ``shard_size``
    (fields, 16): the cluster's memory and time requests follow the cells."""
    entry = {**ENTRIES["crops"], "shard_size": 16, "cells_per_shard": 4096}
    fields, pixels = source_spec("crops").shard_size(entry, "s0000", resize_to=64, index_rows=lambda: 0)
    assert (fields, pixels) == (4096, 128 * 128)
    from workflow_scripts.cluster import scaled_by_pixels, shard_megapixels

    megapixels = shard_megapixels(entry, "s0000", 64, lambda: 0)
    assert megapixels == pytest.approx(4096 * 128 * 128 * len(ds_lib.normalize_channels(entry)) / 1e6)
    assert scaled_by_pixels(1000, 16, megapixels, 1) > 2000  # load_crops' request, MB
