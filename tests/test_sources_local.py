"""Local fields and pre-cropped cells: listing, metadata, pixel reading, and the errors a user meets."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from workflow_scripts.sources import crops as crops_lib
from workflow_scripts.sources import local

RGB = [{"key": "blue", "name": "dna", "role": "nucleus"}, {"key": "green", "name": "protein", "role": "protein"}]


def _entry(channels, **kw):
    return {"channels": channels, "shard_size": 2, **kw}


def _chans(*keys):
    roles = ["nucleus", "protein", "structure", "other"]
    return [{"key": k, "name": f"c{k}", "role": roles[i]} for i, k in enumerate(keys)]


def test_bbbc021_names_grouped_by_regex_with_folder_metadata(tmp_path):
    rng = np.random.default_rng(0)
    planes = {}
    for plate in ("Week1_22123", "Week2_24121"):
        for site in ("B02_s1", "C03_s2"):
            for w in ("1", "2", "3", "4"):
                data = rng.integers(0, 4000, (32, 40), dtype=np.uint16)
                path = tmp_path / plate / f"{plate}_{site}_w{w}A1B2.tif"
                path.parent.mkdir(exist_ok=True)
                tifffile.imwrite(path, data)
                planes[(plate, site, w)] = data
    pattern = r"(?P<plate>[^/]+)/(?P<image>[^/]+_(?P<well>[A-P]\d\d)_s\d)_w(?P<channel>\d)[^/]*\.tif"
    entry = _entry(_chans("1", "2", "4"), pattern=pattern, group="well")
    index = local.index_fields("bbbc", entry, tmp_path)
    assert len(index) == 4  # channel 3 is not configured: ignored
    assert list(index["shard"]) == ["s0000", "s0000", "s0001", "s0001"]
    # max_shards caps the shards of a folder dataset too: 4 fields in at most 1 shard.
    capped = local.index_fields("bbbc", {**entry, "max_shards": 1}, tmp_path)
    assert list(capped["shard"]) == ["s0000"] * 4
    assert set(index["Metadata_plate"]) == {"Week1_22123", "Week2_24121"}
    assert list(index["Metadata_group"]) == list(index["Metadata_well"])
    row = index[index["Metadata_image"] == "Week2_24121_C03_s2"].iloc[0]
    image = local.read_field(row, entry["channels"], tmp_path)
    assert image.dtype == np.uint16 and image.shape == (3, 32, 40)
    for i, w in enumerate(("1", "2", "4")):
        np.testing.assert_array_equal(image[i], planes[("Week2_24121", "C03_s2", w)])


def test_cell_painting_names(tmp_path):
    for ch in (1, 2, 3):
        tifffile.imwrite(tmp_path / f"r01c01f01p01-ch{ch}sk1fk1fl1.tiff", np.full((8, 8), ch, np.uint16))
    pattern = r"(?P<image>r(?P<row>\d+)c(?P<col>\d+)f(?P<field>\d+)p\d+)-ch(?P<channel>\d+)sk.*\.tiff"
    entry = _entry(_chans("1", "2", "3"), pattern=pattern)
    index = local.index_fields("cp", entry, tmp_path)
    assert index["Metadata_image"].tolist() == ["r01c01f01p01"]
    assert index["Metadata_row"].tolist() == [1]  # numeric groups become numbers
    image = local.read_field(index.iloc[0], entry["channels"], tmp_path)
    assert image[:, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("ome", [False, True])
def test_one_multichannel_tiff_per_field(tmp_path, ome):
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    name = "f1.ome.tif" if ome else "f1.tif"
    if ome:
        tifffile.imwrite(tmp_path / name, data, ome=True, metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(tmp_path / name, data, photometric="minisblack")
    entry = _entry(_chans("2", "0"))  # channel keys are plane indices, in the order wanted
    index = local.index_fields("stack", entry, tmp_path)
    image = local.read_field(index.iloc[0], entry["channels"], tmp_path)
    np.testing.assert_array_equal(image, data[[2, 0]])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_rgb_composite_planes(tmp_path, fmt):
    rgb = np.zeros((24, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 120, 240
    Image.fromarray(rgb).save(tmp_path / f"a.{fmt}", quality=100)
    entry = _entry(RGB)
    index = local.index_fields("rgb", entry, tmp_path)
    image = local.read_field(index.iloc[0], entry["channels"], tmp_path)
    assert image.dtype == np.uint8
    assert np.abs(image[:, 5, 5].astype(int) - [240, 120]).max() <= 2


def test_float_and_8bit_inputs(tmp_path):
    tifffile.imwrite(tmp_path / "x_a.tif", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    tifffile.imwrite(tmp_path / "x_b.tif", np.full((8, 8), 7, np.uint8))
    entry = _entry(_chans("a", "b"), pattern=r"(?P<image>x)_(?P<channel>[ab])\.tif")
    index = local.index_fields("f", entry, tmp_path)
    image = local.read_field(index.iloc[0], entry["channels"], tmp_path)
    assert image.dtype == np.float32
    assert image[0, -1, -1] == pytest.approx(1.0) and image[1, 0, 0] == 7


def test_metadata_csv_joined_and_class_chosen(tmp_path):
    for name in ("p1_A01", "p1_B02"):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.zeros((2, 8, 8), np.uint16))
    meta = tmp_path / "meta.csv"
    pd.DataFrame(
        {"field": ["p1_A01", "p1_B02"], "compound": ["taxol", "dmso"], "dose": ["0.3", "0"], "plate": ["p1", "p1"]}
    ).to_csv(meta, index=False)
    entry = _entry(_chans("0", "1"), metadata=str(meta), metadata_on="field", **{"class": "compound", "group": "plate"})
    index = local.index_fields("m", entry, tmp_path)
    assert index["Metadata_class"].tolist() == ["taxol", "dmso"]
    assert index["Metadata_dose"].tolist() == [0.3, 0.0]
    assert index["Metadata_group"].tolist() == ["p1", "p1"]
    assert "file_0" in index.columns and index.columns[0] == "Metadata_dataset"


def test_screen_controls_without_a_class_are_kept(tmp_path):
    """A field without a class is left out, except a screen's negative control (the plates are
    normalised against them): BBBC021's DMSO when the MoA table lacks it."""
    names = ("p1_A01", "p1_B02", "p1_C03")
    for name in names:
        tifffile.imwrite(tmp_path / f"{name}.tif", np.zeros((2, 8, 8), np.uint16))
    meta = tmp_path / "meta.csv"
    moa = ["tubulin", "", ""]  # the control and an unannotated compound have no class
    pd.DataFrame({"field": names, "compound": ["taxol", "DMSO", "mystery"], "moa": moa}).to_csv(meta, index=False)
    entry = _entry(_chans("0", "1"), metadata=str(meta), metadata_on="field", **{"class": "moa"})
    assert local.index_fields("m", entry, tmp_path)["Metadata_compound"].tolist() == ["taxol"]
    layout = {"plate": "compound", "well": "field", "perturbation": "compound", "negative_control": "DMSO"}
    index = local.index_fields("m", {**entry, "layout": layout}, tmp_path)
    assert index["Metadata_compound"].tolist() == ["taxol", "DMSO"]
    assert index["Metadata_class"].tolist() == ["tubulin", local.CONTROL_CLASS]


def test_field_table_layout(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "c.png")
    table = tmp_path / "fields.csv"
    pd.DataFrame({"image": ["c one"], "file_blue": ["c.png"], "file_green": ["c.png"], "cell_line": ["U2OS"]}).to_csv(
        table, index=False
    )
    index = local.index_fields("t", _entry(RGB), tmp_path, fields_table=table)
    assert index["Metadata_image"].tolist() == ["c_one"]
    assert index["Metadata_cell_line"].tolist() == ["U2OS"]


@pytest.mark.parametrize(
    "setup, entry_kw, message",
    [
        ("missing_channel", {"pattern": r"(?P<image>f\d)_(?P<channel>[ab])\.tif"}, r"f2.*no file for channel.*\['b'\]"),
        ("none", {"pattern": r"nomatch\.tif"}, "no file under .* matches pattern"),
        ("ok", {"class": "compound"}, "class: 'compound' is not a metadata field"),
        ("no_image_group", {"pattern": r"f\d_(?P<channel>[ab])\.tif"}, "no 'image' group"),
    ],
)
def test_listing_errors_name_the_problem(tmp_path, setup, entry_kw, message):
    tifffile.imwrite(tmp_path / "f1_a.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "f1_b.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "f2_a.tif", np.zeros((4, 4), np.uint8))
    if setup == "ok":
        entry_kw = {"pattern": r"(?P<image>f1)_(?P<channel>[ab])\.tif", **entry_kw}
    with pytest.raises(ValueError, match=message):
        local.index_fields("d", _entry(_chans("a", "b"), **entry_kw), tmp_path)


def test_missing_folder_and_metadata_rows(tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        local.index_fields("d", _entry(_chans("0")), tmp_path / "nope")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    meta = tmp_path / "m.csv"
    pd.DataFrame({"image": ["b"], "x": [1]}).to_csv(meta, index=False)
    with pytest.raises(ValueError, match=r"m.csv: no row for 1 field\(s\), e.g. \['a'\]"):
        local.index_fields("d", _entry(_chans("0"), metadata=str(meta)), tmp_path)


def test_reading_errors_name_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "f_a.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "f_b.tif", np.zeros((5, 4), np.uint8))
    chans = _chans("a", "b")
    with pytest.raises(ValueError, match=r"differ in shape: a: f_a.tif \(4, 4\), b: f_b.tif \(5, 4\)"):
        local.read_channels({"a": "f_a.tif", "b": "f_b.tif"}, chans, tmp_path)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="bad.tif: cannot read image"):
        local.read_channels({"a": "bad.tif", "b": "f_a.tif"}, chans, tmp_path)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 4, 4), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match="3 planes for the single channel 'a'.*plane"):
        local.read_channels({"a": "stack.tif", "b": "f_a.tif"}, chans, tmp_path)


def test_fingerprint_changes_when_an_image_is_added(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    before = local.listing_fingerprint(tmp_path, None)
    assert local.listing_fingerprint(tmp_path, None) == before
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((4, 4), np.uint8))
    assert local.listing_fingerprint(tmp_path, None) != before


# --- pre-cropped cells ----------------------------------------------------------------------


def test_crops_one_file_per_channel_per_cell(tmp_path):
    rng = np.random.default_rng(1)
    truth = {}
    for cls in ("ER", "nucleolus"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            ramp = np.add.outer(np.arange(48.0), rng.uniform(0.5, 2) * np.arange(48.0))
            gfp, rfp = (100 * ramp).astype(np.uint16), (300 * ramp[::-1]).astype(np.uint16)
            tifffile.imwrite(tmp_path / cls / f"{cls}_{i}_f{i % 2}_gfp.tif", gfp)
            tifffile.imwrite(tmp_path / cls / f"{cls}_{i}_f{i % 2}_rfp.tif", rfp)
            truth[f"{cls}_{cls}_{i}_f{i % 2}"] = np.stack([rfp, gfp])
    entry = {
        "channels": [
            {"key": "rfp", "name": "marker", "role": "structure"},
            {"key": "gfp", "name": "protein", "role": "protein"},
        ],
        "pattern": r"(?P<class>[^/]+)/[^/]+_f(?P<image>\d)_(?P<channel>gfp|rfp)\.tif",
        "cells_per_shard": 4,
    }
    index = crops_lib.index_crops("yeast", entry, tmp_path)
    assert len(index) == 6 and index["shard"].tolist() == ["s0000"] * 4 + ["s0001"] * 2
    assert sorted(index["Metadata_class"].unique()) == ["ER", "nucleolus"]
    assert set(index["Metadata_cell"]) == set(truth)
    arrays, table = crops_lib.load_crops(index, entry, tmp_path, 24)
    assert arrays.shape == (6, 2, 24, 24) and arrays.dtype == np.float32
    for k, cell in enumerate(table["Metadata_cell"]):
        expected = truth[cell].astype(np.float32).reshape(2, 24, 2, 24, 2).mean(axis=(2, 4))
        assert np.abs(arrays[k] - expected).max() < 0.01 * expected.max()  # a smooth ramp survives resizing
    assert table["Metadata_area"].isna().all() and (table["QC_saturated_fraction"] >= 0).all()


@pytest.mark.parametrize("fmt", ["npz", "h5"])
def test_crops_from_one_array_with_labels(tmp_path, fmt):
    arr = np.random.default_rng(2).random((5, 3, 16, 16)).astype(np.float32)
    path = tmp_path / f"cells.{fmt}"
    if fmt == "npz":
        np.savez(path, crops=arr)
    else:
        import h5py

        with h5py.File(path, "w") as h5:
            h5["crops"] = arr
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"class": list("aabbb"), "fov": [1, 1, 2, 2, 3]}).to_csv(labels, index=False)
    entry = {
        "channels": [{"key": "2", "name": "x", "role": "protein"}, {"key": "0", "name": "y", "role": "nucleus"}],
        "array": str(path),
        "labels": str(labels),
        "group": "fov",
        "cells_per_shard": 10,
    }
    index = crops_lib.index_crops("arr", entry, None)
    assert index["Metadata_class"].tolist() == list("aabbb")
    assert index["Metadata_group"].tolist() == ["1", "1", "2", "2", "3"]
    out, _ = crops_lib.load_crops(index, entry, None, 16)
    np.testing.assert_array_equal(out, arr[:, [2, 0]])
    bad = dict(entry, labels=None)
    pd.DataFrame({"class": list("ab")}).to_csv(labels, index=False)
    with pytest.raises(ValueError, match="2 rows but .* holds 5 crops"):
        crops_lib.index_crops("arr", dict(bad, labels=str(labels)), None)
    with pytest.raises(ValueError, match="plane 7 but"):
        crops_lib.index_crops("arr", dict(entry, channels=[{"key": "7", "name": "z", "role": "other"}]), None)
