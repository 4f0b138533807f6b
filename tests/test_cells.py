"""Tests for workflow_scripts.cells: a shard of fields -> crops, cell table and QC record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from workflow_scripts.cells import cell_table, segment_shard
from workflow_scripts.crop import segment_and_crop
from workflow_scripts.sources.synthetic import generate_shard

SCALE = {
    "segmentation": {"sigma": 1.0, "min_area": 20, "max_area": 2000, "fill_holes": 50, "min_distance": 3},
    "crop": {"size": 32, "resize_to": 16, "edge": "drop"},
}


def _field_table(image, labels, truth=None):
    table = pd.DataFrame(
        {
            "Metadata_image": image,
            "Metadata_label": np.asarray(labels, np.int64),
            "Metadata_y": np.arange(len(labels), dtype=float),
            "Metadata_x": np.arange(len(labels), dtype=float) + 0.5,
            "Metadata_area": np.full(len(labels), 100, np.int64),
            "QC_saturated_fraction": np.zeros(len(labels)),
        }
    )
    if truth is not None:
        table["truth_label"] = np.asarray(truth, np.int64)
    return table


# --------------------------------------------------------------------------------------------
# cell_table
# --------------------------------------------------------------------------------------------
def test_cell_table_puts_metadata_first_and_merges_field_and_truth_metadata():
    tables = [_field_table("a", [2, 5], truth=[1, 0]), _field_table("b", [1], truth=[2])]
    fields = pd.DataFrame(
        {"Metadata_image": ["a", "b", "c"], "Metadata_class": ["x", "y", "z"], "Metadata_group": ["g1", "g2", "g3"]}
    )
    objects = pd.DataFrame(
        {
            "Metadata_image": ["a", "b", "b"],
            "truth_label": [1, 1, 2],
            "Metadata_trajectory": [0.25, 0.5, 0.75],
            "Metadata_class": ["TRUTH", "TRUTH", "TRUTH"],  # the field's own class wins
            "truth_y": [1.0, 2.0, 3.0],  # not metadata: not taken
        }
    )
    cells = cell_table(tables, fields, objects, "s07")
    assert list(cells.columns) == [
        "Metadata_image",
        "Metadata_label",
        "Metadata_y",
        "Metadata_x",
        "Metadata_area",
        "Metadata_class",
        "Metadata_group",
        "Metadata_trajectory",
        "Metadata_shard",
        "Metadata_row",
        "Metadata_cell",
        "QC_saturated_fraction",
        "truth_label",
    ]
    assert cells["Metadata_image"].tolist() == ["a", "a", "b"]
    assert cells["Metadata_class"].tolist() == ["x", "x", "y"]
    assert cells["Metadata_group"].tolist() == ["g1", "g1", "g2"]
    np.testing.assert_array_equal(cells["Metadata_trajectory"], [0.25, np.nan, 0.75])  # truth 0: no object
    assert cells["Metadata_shard"].tolist() == ["s07"] * 3
    assert cells["Metadata_row"].tolist() == [0, 1, 2] and cells["Metadata_row"].dtype == np.int64
    assert cells["Metadata_cell"].tolist() == ["a-2", "a-5", "b-1"]
    assert cells["truth_label"].tolist() == [1, 0, 2]


def test_cell_table_without_ground_truth_objects_keeps_the_truth_label_last():
    tables = [_field_table("a", [3], truth=[4])]
    fields = pd.DataFrame({"Metadata_image": ["a"], "Metadata_group": ["g"]})
    objects = pd.DataFrame({"Metadata_image": pd.Series([], dtype=str), "truth_label": []})
    cells = cell_table(tables, fields, objects, "s0")
    assert list(cells.columns)[-2:] == ["QC_saturated_fraction", "truth_label"]
    assert cells["truth_label"].tolist() == [4]
    assert cells["Metadata_group"].tolist() == ["g"]


def test_cell_table_of_a_shard_without_cells_still_has_its_columns():
    fields = pd.DataFrame({"Metadata_image": ["a", "b"], "Metadata_group": ["g1", "g2"]})
    cells = cell_table([], fields, pd.DataFrame(), "s1")
    assert len(cells) == 0
    assert list(cells.columns) == [
        "Metadata_image",
        "Metadata_label",
        "Metadata_group",
        "Metadata_shard",
        "Metadata_row",
        "Metadata_cell",
    ]
    assert cells["Metadata_label"].dtype == np.int64


# --------------------------------------------------------------------------------------------
# segment_shard
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shard():
    data = generate_shard(11, [0, 1], size=128, cells_per_field=8)
    images = np.concatenate([data["images"], np.zeros((1, *data["images"].shape[1:]), data["images"].dtype)])
    truth = np.concatenate([data["truth_labels"], np.zeros((1, *data["truth_labels"].shape[1:]), np.int32)])
    fields = pd.concat(
        [data["fields"], pd.DataFrame({"Metadata_image": ["blank"]})], ignore_index=True
    )  # a field without nuclei
    fields.attrs["skipped_fields"] = [{"image": "lost", "reason": "missing_file", "message": "gone"}]
    return images, truth, fields, data["objects"]


def test_segment_shard_is_segment_and_crop_field_by_field(shard):
    images, truth, fields, objects = shard
    crops, cells, qc = segment_shard(
        images, fields, objects, SCALE, nucleus_channel=0, n_channels=3, shard="s3", truth=truth
    )
    expected_crops, expected_tables, n_objects = [], [], 0
    for image, field_truth in zip(images, truth):
        c, t, labels = segment_and_crop(
            image, nucleus_channel=0, segmentation=SCALE["segmentation"], crop=SCALE["crop"], truth=field_truth
        )
        expected_crops.append(c)
        expected_tables.append(t)
        n_objects += int(labels.max())
    np.testing.assert_array_equal(crops, np.concatenate(expected_crops))
    assert crops.dtype == np.float32 and crops.shape[1:] == (3, 16, 16)
    assert len(cells) == len(crops) == sum(len(t) for t in expected_tables) > 0
    np.testing.assert_array_equal(
        cells["Metadata_label"], np.concatenate([t["Metadata_label"] for t in expected_tables])
    )
    assert cells["Metadata_shard"].eq("s3").all() and cells["Metadata_row"].tolist() == list(range(len(cells)))
    assert "Metadata_trajectory" in cells.columns  # ground-truth metadata travels with the cells

    assert list(qc) == [
        "shard",
        "n_fields",
        "n_objects",
        "n_crops",
        "n_edge_dropped",
        "fields_without_cells",
        "fields_skipped",
        "fields",
    ]
    assert qc["shard"] == "s3" and qc["n_fields"] == 3
    assert qc["n_objects"] == n_objects and qc["n_crops"] == len(cells)
    assert qc["n_edge_dropped"] == n_objects - len(cells)
    assert qc["fields_without_cells"] == ["blank"]
    assert qc["fields_skipped"] == fields.attrs["skipped_fields"]
    assert [f["image"] for f in qc["fields"]] == fields["Metadata_image"].tolist()
    assert [f["n_crops"] for f in qc["fields"]] == [len(t) for t in expected_tables]
    assert qc["fields"][0]["n_objects"] >= qc["fields"][0]["n_crops"] and "snr" in qc["fields"][0]


def test_segment_shard_writes_each_fields_labels(shard, tmp_path):
    images, truth, fields, objects = shard
    segment_shard(
        images[:1], fields[:1], objects, SCALE, nucleus_channel=0, n_channels=3, shard="s", masks_dir=tmp_path
    )
    _, _, labels = segment_and_crop(
        images[0], nucleus_channel=0, segmentation=SCALE["segmentation"], crop=SCALE["crop"]
    )
    saved = tifffile.imread(tmp_path / f"{fields['Metadata_image'].iloc[0]}.tif")
    assert saved.dtype == np.int32
    np.testing.assert_array_equal(saved, labels)


def test_a_shard_without_cells_gives_empty_crops_of_the_output_shape(shard):
    images, _, fields, objects = shard
    crops, cells, qc = segment_shard(
        images[2:], fields[2:].reset_index(drop=True), objects, SCALE, nucleus_channel=0, n_channels=3, shard="s"
    )
    assert crops.shape == (0, 3, 16, 16) and crops.dtype == np.float32
    assert len(cells) == 0 and qc["n_crops"] == 0 and qc["fields_without_cells"] == ["blank"]


def test_segment_shard_refuses_a_crop_larger_than_a_field(shard):
    images, _, fields, objects = shard
    scale = {**SCALE, "crop": {"size": 300, "resize_to": 64, "edge": "drop"}}
    with pytest.raises(ValueError, match="crop.size 300 is larger than field 'f00000' .*crop.edge: pad"):
        segment_shard(images, fields, objects, scale, nucleus_channel=0, n_channels=3, shard="s")


def test_segment_shard_names_the_file_and_field_of_a_failure(shard):
    images, _, fields, objects = shard
    with pytest.raises(ValueError, match=r"shard\.npz, field 'f00000': nucleus_channel=5"):
        segment_shard(images, fields, objects, SCALE, nucleus_channel=5, n_channels=3, shard="s", source="shard.npz")
