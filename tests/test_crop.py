"""Tests of workflow_scripts.crop: single-cell crops and whole-field segment-and-crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from workflow_scripts.crop import crop_cells, saturated_fraction, segment_and_crop
from workflow_scripts.segment import segment_nuclei

DATA = Path(__file__).parent / "data"
TABLE_COLUMNS = [
    "Metadata_label",
    "Metadata_y",
    "Metadata_x",
    "Metadata_area",
    "QC_saturated_fraction",
]


@pytest.fixture(scope="module")
def example_human() -> np.ndarray:
    """(3, 512, 512) uint8: DNA, PH3, cell body (CellProfiler ExampleHuman, CC0)."""
    files = sorted((DATA / "example_human").glob("*d[0-2].tif"))
    assert [f.name[-6:] for f in files] == ["d0.tif", "d1.tif", "d2.tif"]
    return np.stack([tifffile.imread(f) for f in files])


# --------------------------------------------------------------------------------------------
# crop_cells geometry
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [15, 16, 64])
def test_bright_pixel_lands_at_crop_centre(size):
    image = np.zeros((2, 100, 120), dtype=np.uint16)
    image[1, 40, 57] = 1000
    # Any centre within half a pixel rounds to the bright pixel.
    centres = np.array([[40.0, 57.0], [40.4, 56.6], [39.5, 57.49]])
    crops, kept = crop_cells(image, centres, size=size, resize_to=None)
    assert kept.all()
    assert crops.shape == (3, 2, size, size) and crops.dtype == np.float32
    for crop in crops:
        assert crop[1, size // 2, size // 2] == 1000
        assert crop.sum() == 1000


def test_crops_equal_direct_slices():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, size=(3, 200, 150), dtype=np.uint16)
    centres = rng.uniform([20, 20], [180, 130], size=(25, 2))
    size = 32
    crops, kept = crop_cells(image, centres, size=size, resize_to=None)
    assert kept.all()
    for crop, (y, x) in zip(crops, centres, strict=True):
        y0, x0 = int(np.floor(y + 0.5)) - size // 2, int(np.floor(x + 0.5)) - size // 2
        np.testing.assert_array_equal(crop, image[:, y0 : y0 + size, x0 : x0 + size])


def test_edge_drop_versus_pad():
    rng = np.random.default_rng(1)
    image = rng.uniform(1, 2, size=(2, 80, 90)).astype(np.float32)  # no zeros inside
    centres = np.array([[5.0, 6.0], [40.0, 45.0], [78.0, 88.0]])
    size = 32

    crops, kept = crop_cells(image, centres, size=size, resize_to=None, edge="drop")
    np.testing.assert_array_equal(kept, [False, True, False])
    assert crops.shape == (1, 2, size, size)

    crops, kept = crop_cells(image, centres, size=size, resize_to=None, edge="pad")
    assert kept.all() and crops.shape == (3, 2, size, size)
    # Centre (5, 6): window rows -11..20, cols -10..21. Outside the image it is zero.
    first = crops[0]
    assert not first[:, :11, :].any() and not first[:, :, :10].any()
    np.testing.assert_array_equal(first[:, 11:, 10:], image[:, :21, :22])
    # Centre (78, 88): window rows 62..93, cols 72..103 -> 18 rows and 18 columns inside.
    last = crops[2]
    np.testing.assert_array_equal(last[:, :18, :18], image[:, 62:, 72:])
    assert not last[:, 18:, :].any() and not last[:, :, 18:].any()
    # Interior windows are identical in both modes.
    np.testing.assert_array_equal(
        crops[1], crop_cells(image, centres[1:2], size=size, resize_to=None)[0][0]
    )


def test_resize_128_to_64_is_a_2x2_block_mean():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 65535, size=(3, 300, 300), dtype=np.uint16)
    centres = np.array([[100.0, 150.0], [200.0, 170.0]])
    full, _ = crop_cells(image, centres, size=128, resize_to=None)
    small, kept = crop_cells(image, centres, size=128, resize_to=64)
    assert kept.all() and small.shape == (2, 3, 64, 64) and small.dtype == np.float32
    expected = full.astype(np.float64).reshape(2, 3, 64, 2, 64, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(small, expected, rtol=1e-6)


def test_resize_by_non_integer_factor_preserves_range():
    image = np.full((2, 200, 200), 1234, dtype=np.uint16)
    image[1] = 77
    crops, _ = crop_cells(image, np.array([[100.0, 100.0]]), size=100, resize_to=64)
    assert crops.shape == (1, 2, 64, 64) and crops.dtype == np.float32
    # intensity units kept, not rescaled to [0, 1] (to float32 rounding of the area weights)
    np.testing.assert_allclose(crops[0, 0], 1234, rtol=1e-6)
    np.testing.assert_allclose(crops[0, 1], 77, rtol=1e-6)


def test_no_centres():
    image = np.zeros((3, 50, 50), dtype=np.uint8)
    crops, kept = crop_cells(image, np.empty((0, 2)), size=16, resize_to=8)
    assert crops.shape == (0, 3, 8, 8) and crops.dtype == np.float32
    assert kept.shape == (0,) and kept.dtype == bool
    crops, kept = crop_cells(image, np.empty((0, 2)), size=16, resize_to=None)
    assert crops.shape == (0, 3, 16, 16)


def test_crop_larger_than_image():
    image = np.arange(2 * 50 * 40, dtype=np.float32).reshape(2, 50, 40) + 1
    centres = np.array([[25.0, 20.0]])
    crops, kept = crop_cells(image, centres, size=64, resize_to=None, edge="drop")
    assert crops.shape == (0, 2, 64, 64) and not kept.any()
    crops, kept = crop_cells(image, centres, size=64, resize_to=None, edge="pad")
    assert kept.all()
    # Window rows -7..56, cols -12..51: the whole image sits at offset (7, 12).
    np.testing.assert_array_equal(crops[0, :, 7:57, 12:52], image)
    assert crops[0].sum() == image.sum()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(edge="wrap"), "edge"),
        (dict(size=0), "size"),
        (dict(size=8.5), "size"),
        (dict(resize_to=-1), "resize_to"),
    ],
)
def test_crop_cells_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        crop_cells(np.zeros((1, 20, 20)), np.array([[10.0, 10.0]]), **kwargs)


@pytest.mark.parametrize(
    "image, centres, name",
    [
        (np.zeros((20, 20)), np.array([[10.0, 10.0]]), "image"),
        (np.zeros((1, 20, 20)), np.array([10.0, 10.0, 3.0]), "centres"),
        (np.zeros((1, 20, 20)), np.array([[np.nan, 10.0]]), "centres"),
    ],
)
def test_crop_cells_invalid_inputs(image, centres, name):
    with pytest.raises(ValueError, match=name):
        crop_cells(image, centres, size=8)


# --------------------------------------------------------------------------------------------
# saturated_fraction
# --------------------------------------------------------------------------------------------
def test_saturated_fraction_values():
    image = np.zeros((2, 100, 100), dtype=np.uint8)
    image[0, 10:20, 10:20] = 255  # 100 saturated px in channel 0
    image[1, 15:25, 15:20] = 255  # 50 in channel 1, 25 of them shared with channel 0
    image[1, 60:64, 60:64] = 254  # below saturation
    centres = np.array([[16.0, 16.0], [62.0, 62.0], [2.0, 2.0]])
    size = 20
    _, kept = crop_cells(image, centres, size=size, resize_to=None, edge="drop")
    np.testing.assert_array_equal(kept, [True, True, False])
    fraction = saturated_fraction(image, centres, size, kept, 255)
    # Window of the first centre: rows 6..25, cols 6..25 -> holds all 100 + 50 - 25 = 125 px.
    np.testing.assert_allclose(fraction, [125 / 400, 0.0])
    np.testing.assert_allclose(
        saturated_fraction(image, centres, size, kept, 254), [125 / 400, 16 / 400]
    )

    # edge='pad': the window of (2, 2) covers rows/cols -8..11 -> 2x2 saturated px of 400.
    _, kept = crop_cells(image, centres, size=size, resize_to=None, edge="pad")
    fraction = saturated_fraction(image, centres, size, kept, 255)
    np.testing.assert_allclose(fraction, [125 / 400, 0.0, 4 / 400])

    none = saturated_fraction(image, centres, size, np.zeros(3, dtype=bool), 255)
    assert none.shape == (0,)


def test_saturated_fraction_validates_kept():
    with pytest.raises(ValueError, match="kept"):
        saturated_fraction(np.zeros((1, 9, 9)), np.array([[4.0, 4.0]]), 3, np.ones(2, bool), 1)


# --------------------------------------------------------------------------------------------
# segment_and_crop
# --------------------------------------------------------------------------------------------
# ExampleHuman nuclei are small (~10 px across, ~100 px area): lighter smoothing and a lower
# minimum area than the defaults, which are tuned for larger nuclei.
_EXAMPLE_SEGMENTATION = dict(sigma=1.0, min_distance=5, min_area=30, max_area=3000)


def test_segment_and_crop_example_human(example_human):
    crops, table, labels = segment_and_crop(
        example_human,
        nucleus_channel=0,
        segmentation=_EXAMPLE_SEGMENTATION,
        crop=dict(size=64, resize_to=64, edge="drop"),
    )
    n_cells, n_kept = int(labels.max()), len(table)
    print(f"ExampleHuman: {n_cells} nuclei segmented, {n_kept} crops kept (64 px, edge='drop')")

    assert labels.shape == (512, 512) and labels.dtype == np.int32
    assert 200 <= n_cells <= 450  # the field holds roughly 300 nuclei
    assert 0.6 * n_cells <= n_kept < n_cells  # a 32-px margin drops border cells only
    assert crops.shape == (n_kept, 3, 64, 64) and crops.dtype == np.float32
    assert list(table.columns) == TABLE_COLUMNS
    assert table["Metadata_label"].is_unique
    assert table["Metadata_label"].dtype == np.int64 and table["Metadata_area"].dtype == np.int64
    assert table["Metadata_area"].min() >= 30
    assert table["QC_saturated_fraction"].between(0, 1).all()
    # uint8 with saturation=None -> pixels at 255 count; this field has a few.
    assert table["QC_saturated_fraction"].max() > 0
    # Kept cells are those whose window fits: centres at least 32 px from the edges.
    yx = np.floor(table[["Metadata_y", "Metadata_x"]].to_numpy() + 0.5)
    assert (yx >= 32).all() and (yx <= 512 - 32).all()
    # The crop centre is the nucleus: the DNA channel there is in the nucleus' label.
    rows = np.floor(table["Metadata_y"].to_numpy() + 0.5).astype(int)
    cols = np.floor(table["Metadata_x"].to_numpy() + 0.5).astype(int)
    on_own = labels[rows, cols] == table["Metadata_label"].to_numpy()
    assert on_own.mean() > 0.95  # a centre of mass can fall outside a crescent-shaped nucleus
    np.testing.assert_array_equal(crops[:, :, 32, 32], example_human[:, rows, cols].T)


def test_segment_and_crop_truth_and_float_images(example_human):
    seg, crop = _EXAMPLE_SEGMENTATION, dict(size=48, resize_to=24, edge="pad")
    truth = segment_nuclei(example_human[0], **seg)
    crops, table, labels = segment_and_crop(
        example_human, nucleus_channel=0, segmentation=seg, crop=crop, truth=truth
    )
    assert list(table.columns) == [*TABLE_COLUMNS, "truth_label"]
    assert len(table) == labels.max() and crops.shape == (len(table), 3, 24, 24)
    # Against itself the best truth label is the label.
    np.testing.assert_array_equal(table["truth_label"], table["Metadata_label"])

    # Float image, saturation=None: no saturation check at all.
    _, table_f, labels_f = segment_and_crop(
        example_human.astype(np.float32), nucleus_channel=0, segmentation=seg, crop=crop
    )
    np.testing.assert_array_equal(labels_f, labels)
    assert (table_f["QC_saturated_fraction"] == 0).all()
    # An explicit saturation applies to float images too.
    _, table_s, _ = segment_and_crop(
        example_human.astype(np.float32),
        nucleus_channel=0,
        segmentation=seg,
        crop=crop,
        saturation=255.0,
    )
    np.testing.assert_allclose(table_s["QC_saturated_fraction"], table["QC_saturated_fraction"])


def test_segment_and_crop_field_without_nuclei():
    crops, table, labels = segment_and_crop(
        np.zeros((2, 64, 64), dtype=np.uint16), nucleus_channel=1, segmentation={}, crop={}
    )
    assert crops.shape == (0, 2, 64, 64)
    assert list(table.columns) == TABLE_COLUMNS and len(table) == 0
    assert not labels.any()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(nucleus_channel=3), "nucleus_channel"),
        (dict(segmentation={"sigmaa": 2}), "segmentation"),
        (dict(crop={"margin": 2}), "crop"),
        (dict(truth=np.zeros((10, 10), int)), "truth"),
    ],
)
def test_segment_and_crop_invalid_arguments(kwargs, name):
    args = dict(nucleus_channel=0, segmentation={}, crop={}) | kwargs
    with pytest.raises(ValueError, match=name):
        segment_and_crop(np.zeros((3, 32, 32), dtype=np.uint8), **args)
