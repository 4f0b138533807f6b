"""Tests for the stage functions of workflow_scripts.scale: the field sample of a dataset, its
scale record, and its segmentation QC table and summary."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from workflow_scripts.io import write_fields
from workflow_scripts.scale import (
    FIELD_QC_COLUMNS,
    dataset_scale,
    dataset_warnings,
    estimate_scale,
    field_qc_table,
    resolve_crop,
    resolve_segmentation,
    sample_fields,
    segmentation_report,
)
from workflow_scripts.sources.synthetic import generate_shard


def _shard(path, prefix, n):
    """A shard of ``n`` 2-channel fields, each channel of each field a different constant."""
    images = [np.stack([np.full((8, 8), 100 * i), np.full((8, 8), 100 * i + 1000)]).astype(np.uint16) for i in range(n)]
    write_fields(path, images, [f"{prefix}{i}" for i in range(n)])
    return images


# --------------------------------------------------------------------------------------------
# sample_fields
# --------------------------------------------------------------------------------------------
def test_sample_fields_spreads_the_sample_over_each_shard(tmp_path):
    a = _shard(tmp_path / "a.npz", "a", 5)
    b = _shard(tmp_path / "b.npz", "b", 3)
    nuclear, names = sample_fields([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")], 1, 4)
    # ceil(4 / 2) = 2 per shard, evenly spaced: the first and last field of each
    assert names == ["a0", "a4", "b0", "b2"]
    for image, expected in zip(nuclear, [a[0], a[4], b[0], b[2]], strict=True):
        np.testing.assert_array_equal(image, expected[1])


def test_sample_fields_stops_at_the_number_wanted(tmp_path):
    _shard(tmp_path / "a.npz", "a", 5)
    _shard(tmp_path / "b.npz", "b", 3)
    nuclear, names = sample_fields([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")], 0, 3)
    assert names == ["a0", "a4", "b0"] and len(nuclear) == 3


# --------------------------------------------------------------------------------------------
# dataset_scale
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nuclear():
    images = generate_shard(5, [0, 1], size=192, cells_per_field=12)["images"]
    return [image[0] for image in images]


def test_dataset_scale_record_is_the_estimate_resolved(nuclear, caplog):
    segmentation = {"diameter": "auto", "min_area": 30, "clear_border": False, "split_touching": True}
    crop = {"size": "auto", "resize_to": 32, "edge": "drop"}
    with caplog.at_level(logging.INFO, logger="workflow_scripts.scale"):
        record = dataset_scale("ds", nuclear, ["f0", "f1"], segmentation, crop)
    scale = estimate_scale(nuclear)
    params, info = resolve_segmentation(dict(segmentation), scale)
    assert list(record) == [
        "dataset",
        "diameter",
        "estimated_diameter",
        "threshold_level",
        "sample",
        "segmentation",
        "source",
        "crop",
    ]
    assert record["dataset"] == "ds" and record["estimated_diameter"] == scale["diameter"]
    assert record["diameter"] == info["diameter"] and record["segmentation"] == params
    assert record["segmentation"]["min_area"] == 30 and record["source"]["min_area"] == "config"
    assert record["crop"] == resolve_crop(crop, info["diameter"])
    assert [s["image"] for s in record["sample"]] == ["f0", "f1"]
    assert [s["diameter"] for s in record["sample"]] == scale["field_diameters"]
    assert "dataset ds: nucleus diameter" in caplog.text


def test_dataset_scale_uses_the_configured_min_snr_and_warns_without_nuclei(nuclear, caplog):
    with caplog.at_level(logging.INFO, logger="workflow_scripts.scale"):
        record = dataset_scale("ds", nuclear, ["f0", "f1"], {"min_snr": 1e9}, {"size": 64})
    assert math.isnan(record["estimated_diameter"])  # no field stands out of the noise
    assert record["diameter"] == 20.0  # the fallback
    assert record["segmentation"]["min_snr"] == 1e9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no nucleus found in the 2 sampled fields (f0, f1)" in w for w in warnings)


def test_dataset_scale_needs_a_field():
    with pytest.raises(ValueError, match="dataset ds: no field"):
        dataset_scale("ds", [], [], {}, {})


# --------------------------------------------------------------------------------------------
# field_qc_table and segmentation_report
# --------------------------------------------------------------------------------------------
def _qc(image, **kw):
    record = {
        "image": image,
        "snr": 20.0,
        "background_corrected": False,
        "foreground_px": 1000.0,
        "kept_px": 900.0,
        "n_candidates": 12,
        "n_too_small": 2,
        "n_too_large": 0,
        "px_too_small": 100.0,
        "px_too_large": 0.0,
        "n_objects": 10,
        "diameter": 20.0,
        "low_contrast": False,
        "n_crops": 8,
    }
    return record | kw


RECORDS = [
    _qc("ok"),
    _qc("noise", low_contrast=True, n_objects=0, n_crops=0, foreground_px=0.0, kept_px=0.0, diameter=float("nan")),
    _qc("big", diameter=45.0, kept_px=200.0, px_too_large=700.0, n_too_large=3, background_corrected=True),
]
SCALE = {
    "diameter": 20.0,
    "source": {"diameter": "auto", "min_area": "auto", "max_area": "config"},
    "segmentation": {"min_snr": 5.0, "min_area": 30, "max_area": 300},
}


def test_field_qc_table_columns_values_and_flags():
    table = field_qc_table(RECORDS, 20.0, tolerance=1.5, max_dropped_fraction=0.5)
    assert list(table.columns) == FIELD_QC_COLUMNS
    assert table["Metadata_image"].tolist() == ["ok", "noise", "big"]
    assert table["flags"].tolist() == ["", "low_contrast", "size_filters;scale_mismatch"]
    np.testing.assert_allclose(table["kept_fraction"], [0.9, np.nan, 0.2])
    assert table["n_too_large"].tolist() == [0, 0, 3]
    assert table["background_corrected"].tolist() == [False, False, True]
    assert table["n_crops"].tolist() == [8, 0, 8]


def test_segmentation_report_summarises_the_table():
    table, summary = segmentation_report("ds", RECORDS, SCALE, tolerance=1.5, max_dropped_fraction=0.5)
    assert table.equals(field_qc_table(RECORDS, 20.0, tolerance=1.5, max_dropped_fraction=0.5))
    assert list(summary) == [
        "dataset",
        "diameter",
        "diameter_source",
        "n_fields",
        "n_objects",
        "kept_fraction",
        "n_flagged_fields",
        "flag_counts",
        "warnings",
    ]
    assert summary["dataset"] == "ds" and summary["diameter"] == 20.0 and summary["diameter_source"] == "auto"
    assert summary["n_fields"] == 3 and summary["n_objects"] == 20
    assert summary["kept_fraction"] == pytest.approx((900 + 200) / 2000)
    assert summary["n_flagged_fields"] == 2
    assert summary["flag_counts"] == {"low_contrast": 1, "no_nuclei": 0, "size_filters": 1, "scale_mismatch": 1}
    info = {"diameter": 20.0, "source": SCALE["source"]}
    assert summary["warnings"] == dataset_warnings("ds", table, SCALE["segmentation"], info)
    assert any("segmentation.max_area" in w and "big" in w for w in summary["warnings"])
