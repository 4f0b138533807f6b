import math

import mahotas.features
import numpy as np
import pandas as pd
import pytest
import torch
from skimage.draw import disk, ellipse

from workflow_scripts import baselines
from workflow_scripts.baselines import (
    HARALICK_NAMES,
    NUCLEUS_SHAPE_NAMES,
    handcrafted_features,
    haralick_batch,
    pftas_batch,
    random_cnn_features,
)

CHANNELS = ["dna", "actin", "tubulin"]


def synthetic_cells(n, size=64, seed=0):
    """Noisy background, an elliptic nucleus in channel 0 and a larger cell body in 1 and 2."""
    rng = np.random.default_rng(seed)
    crops = rng.normal(100, 5, (n, 3, size, size)).astype(np.float32)
    for i in range(n):
        cy, cx = size // 2 + rng.integers(-3, 4, 2)
        rr, cc = ellipse(cy, cx, 10, 6, shape=(size, size), rotation=rng.uniform(0, np.pi))
        crops[i, 0, rr, cc] += 300 + rng.normal(0, 30, len(rr))
        rr, cc = ellipse(cy, cx, 22, 15, shape=(size, size), rotation=rng.uniform(0, np.pi))
        crops[i, 1, rr, cc] += 100 + rng.gamma(2, 20, len(rr))
        crops[i, 2, rr, cc] += 50 * (1 + np.sin(rr / 3.0))
    return crops


def blob_mask(size=64, radius=20):
    mask = np.zeros((size, size), bool)
    mask[disk((size // 2, size // 2), radius)] = True
    return mask


# -- intensity -------------------------------------------------------------------------------


def test_intensity_features_equal_numpy_over_the_mask():
    rng = np.random.default_rng(1)
    crops = rng.gamma(2.0, 50.0, (4, 3, 64, 64)).astype(np.float32)
    masks = np.stack([blob_mask(radius=r) for r in (5, 12, 20, 31)])
    masks[1, 0, 0] = True  # a stray pixel is part of a given mask
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0, mask=masks)
    assert len(table) == 4 and table.index.tolist() == [0, 1, 2, 3]
    for i in range(4):
        assert table.loc[i, "cell_area"] == masks[i].sum()
        for c, name in enumerate(CHANNELS):
            values = crops[i, c][masks[i]].astype(np.float64)
            median = np.median(values)
            expected = {
                "mean": values.mean(),
                "std": values.std(),
                "median": median,
                "mad": np.median(np.abs(values - median)),
                "q05": np.quantile(values, 0.05),
                "q25": np.quantile(values, 0.25),
                "q75": np.quantile(values, 0.75),
                "q95": np.quantile(values, 0.95),
                "integrated": values.sum(),
            }
            for stat, value in expected.items():
                assert table.loc[i, f"{name}_intensity_{stat}"] == pytest.approx(value, rel=1e-9), (i, name, stat)


def test_constant_crop_is_measured_over_the_whole_crop():
    crops = np.full((1, 3, 32, 32), 7.0, np.float32)
    crops[0, 2] = 0.0
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0)
    assert table.loc[0, "cell_area"] == 0  # no foreground: whole crop used
    assert table.loc[0, "dna_intensity_mean"] == 7.0
    assert table.loc[0, "dna_intensity_integrated"] == 7.0 * 32 * 32
    for stat in ("std", "mad"):
        assert table.loc[0, f"dna_intensity_{stat}"] == 0.0
    for stat in ("median", "q05", "q95"):
        assert table.loc[0, f"dna_intensity_{stat}"] == 7.0


def test_all_zero_crop_has_only_finite_values():
    crops = np.zeros((2, 3, 64, 64), np.float32)
    crops[1] = synthetic_cells(1)[0]
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0)
    assert np.isfinite(table.to_numpy()).all()
    zero = table.loc[0]
    assert (zero[[f"nucleus_{s}" for s in NUCLEUS_SHAPE_NAMES]] == 0).all()
    assert (zero[[c for c in table.columns if "_zernike_" in c]] == 0).all()
    assert (zero[[c for c in table.columns if c.startswith("corr_")]] == 0).all()


# -- texture ---------------------------------------------------------------------------------


def _quantise(channel, mask, levels):
    """Independent re-statement of the documented quantisation."""
    inside = channel[mask].astype(np.float64)
    unit = (channel - inside.min()) / (inside.max() - inside.min())
    q = np.minimum(np.floor(unit * levels), levels - 1) + 1
    return np.where(mask, q, 0).astype(np.uint8)


@pytest.mark.parametrize("distance", [1, 3])
def test_haralick_equals_mahotas(distance):
    crops = synthetic_cells(3, seed=2)
    mask = blob_mask(radius=24)
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0, mask=mask, haralick_distance=distance)
    for i in range(3):
        for c, name in enumerate(CHANNELS):
            q = _quantise(crops[i, c], mask, 32)
            expected = mahotas.features.haralick(q, ignore_zeros=True, distance=distance, return_mean=True)
            got = table.loc[i, [f"{name}_haralick_{s}" for s in HARALICK_NAMES]].to_numpy(np.float64)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_haralick_batch_equals_mahotas_including_edge_cases():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 33, (8, 23, 19)).astype(np.uint8)
    images[1] = 1  # constant: correlation defined as 1 by mahotas
    images[2] = rng.integers(0, 4, (23, 19))  # few levels: mahotas' smaller matrix
    images[3, :12] = 0  # half ignored
    images[4] = 0
    images[4, 5, 5] = 9  # one pixel: no pair, mahotas raises
    for distance in (1, 2):
        got = haralick_batch(images, distance)
        for image, row in zip(images, got):
            try:
                expected = mahotas.features.haralick(image, ignore_zeros=True, distance=distance, return_mean=True)
            except ValueError:
                expected = np.zeros(13)
            np.testing.assert_allclose(row, expected, rtol=1e-9, atol=1e-12)


def test_zernike_and_tas_equal_mahotas():
    crops = synthetic_cells(2, seed=3)
    mask = blob_mask(radius=26)
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0, mask=mask, zernike_degree=6)
    zernike_columns = [c for c in table.columns if c.startswith("actin_zernike_")]
    assert len(zernike_columns) == 16  # (n + 2)(n + 4) / 8 for n = 6
    for i in range(2):
        masked = np.where(mask, crops[i, 1], 0.0)
        expected = mahotas.features.zernike_moments(masked, 32, degree=6, cm=(31.5, 31.5))
        np.testing.assert_allclose(table.loc[i, zernike_columns].to_numpy(np.float64), expected, rtol=1e-9)
        inside = crops[i, 1][mask].astype(np.float64)
        scaled = (crops[i, 1] - inside.min()) / (inside.max() - inside.min())
        eight_bit = np.where(mask, np.rint(scaled * 254) + 1, 0).astype(np.uint8)
        tas = table.loc[i, [f"actin_tas_{k}" for k in range(54)]].to_numpy(np.float64)
        np.testing.assert_allclose(tas, mahotas.features.pftas(eight_bit), rtol=1e-12)


def test_pftas_batch_equals_mahotas():
    rng = np.random.default_rng(4)
    images = (rng.random((6, 40, 33)) * 255).astype(np.uint8)
    images[1] = 0
    images[2] = 17
    images[3, :, :20] = 0
    np.testing.assert_allclose(pftas_batch(images), np.stack([mahotas.features.pftas(im) for im in images]))


# -- shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "rotation"), [(12, 12, 0.0), (14, 7, 0.6), (18, 6, 2.0)])
def test_nucleus_shape_of_a_drawn_ellipse(a, b, rotation):
    crops = np.zeros((1, 2, 64, 64), np.float32)
    rr, cc = ellipse(32, 31, a, b, rotation=rotation)
    crops[0, 0, rr, cc] = 100.0
    crops[0, 0, 2:8, 2:8] = 100.0  # an off-centre neighbour must be ignored
    crops[0, 1] = 1.0
    row = handcrafted_features(crops, ["dna", "other"], nucleus_channel=0).loc[0]
    assert row["nucleus_area"] == len(rr)  # the whole drawn ellipse, nothing else
    # skimage.draw.ellipse keeps pixels strictly inside: 437 for pi 12^2 = 452.
    assert row["nucleus_area"] == pytest.approx(math.pi * a * b, rel=0.05)
    assert row["nucleus_eccentricity"] == pytest.approx(math.sqrt(1 - (b / a) ** 2), abs=0.03)
    assert row["nucleus_major_axis_length"] == pytest.approx(2 * a, rel=0.05)
    assert row["nucleus_minor_axis_length"] == pytest.approx(2 * b, rel=0.05)
    assert row["nucleus_equivalent_diameter"] == pytest.approx(2 * math.sqrt(a * b), rel=0.03)
    assert row["nucleus_solidity"] > 0.93
    assert row["nucleus_feret_diameter_max"] == pytest.approx(2 * a, rel=0.08)
    if a == b:
        assert row["nucleus_form_factor"] == pytest.approx(1.0, abs=0.1)
        assert row["nucleus_extent"] == pytest.approx(len(rr) / (np.ptp(rr) + 1) / (np.ptp(cc) + 1))
        assert row["nucleus_extent"] == pytest.approx(math.pi / 4, rel=0.06)


def test_nucleus_off_the_centre_pixel_is_the_nearest_one():
    crops = np.zeros((1, 1, 64, 64), np.float32)
    crops[0, 0][disk((40, 40), 6)] = 1.0  # does not cover (32, 32)
    crops[0, 0][disk((8, 8), 7)] = 1.0
    row = handcrafted_features(crops, ["dna"], nucleus_channel=0).loc[0]
    assert row["nucleus_area"] == pytest.approx(math.pi * 36, rel=0.1)


def test_default_mask_is_the_central_cell_dilated():
    crops = np.random.default_rng(0).normal(10, 1, (1, 2, 64, 64)).astype(np.float32)
    crops[0, :][:, *disk((32, 32), 15)] += 50
    crops[0, 1][disk((5, 58), 4)] += 500  # a bright neighbour in one channel
    area = handcrafted_features(crops, ["a", "b"], nucleus_channel=0).loc[0, "cell_area"]
    assert math.pi * 15**2 < area < math.pi * 18**2


# -- correlation -----------------------------------------------------------------------------


def test_channel_correlations():
    rng = np.random.default_rng(5)
    base = rng.gamma(2.0, 10.0, (2, 64, 64))
    crops = np.stack([base, 3 * base + 1, 500 - base, rng.random((2, 64, 64))], axis=1).astype(np.float64)
    names = ["a", "same", "anti", "noise"]
    table = handcrafted_features(crops, names, nucleus_channel=0, mask=blob_mask(radius=25))
    assert table["corr_a_same"].to_numpy() == pytest.approx(1.0)
    assert table["corr_a_anti"].to_numpy() == pytest.approx(-1.0)
    assert table["corr_same_anti"].to_numpy() == pytest.approx(-1.0)
    assert np.all(np.abs(table["corr_a_noise"]) < 0.1)
    mask = blob_mask(radius=25)
    expected = np.corrcoef(crops[0, 0][mask], crops[0, 3][mask])[0, 1]
    assert table.loc[0, "corr_a_noise"] == pytest.approx(expected)


# -- table -----------------------------------------------------------------------------------


def test_columns_and_per_cell_independence():
    crops = synthetic_cells(5, seed=6)
    table = handcrafted_features(crops, CHANNELS, nucleus_channel=0)
    columns = list(table.columns)
    assert columns[0] == "cell_area"
    assert len(columns) == len(set(columns))
    n_per_channel = 9 + len(HARALICK_NAMES) + 25 + 54
    assert len(columns) == 1 + 3 * n_per_channel + len(NUCLEUS_SHAPE_NAMES) + 3
    for name in ("tubulin_intensity_q95", "dna_haralick_entropy", "actin_zernike_24", "dna_tas_53"):
        assert name in columns
    assert columns[-3:] == ["corr_dna_actin", "corr_dna_tubulin", "corr_actin_tubulin"]
    assert table.dtypes.unique().tolist() == [np.float64]
    alone = handcrafted_features(crops[3:4], CHANNELS, nucleus_channel=0)
    np.testing.assert_allclose(alone.to_numpy()[0], table.to_numpy()[3], rtol=1e-12)
    assert handcrafted_features(crops[:0], CHANNELS, nucleus_channel=0).shape == (0, len(columns))


def test_parallel_equals_serial(monkeypatch):
    monkeypatch.setattr(baselines, "CHUNK", 4)
    crops = synthetic_cells(10, size=32, seed=7)
    serial = handcrafted_features(crops, CHANNELS, nucleus_channel=0)
    parallel = handcrafted_features(crops, CHANNELS, nucleus_channel=0, n_jobs=2)
    np.testing.assert_array_equal(serial.to_numpy(), parallel.to_numpy())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"crops": np.zeros((2, 64, 64))}, "crops"),
        ({"crops": np.full((1, 3, 8, 8), np.nan)}, "crops"),
        ({"channel_names": ["a", "b"]}, "channel_names"),
        ({"channel_names": ["a", "a", "b"]}, "channel_names"),
        ({"nucleus_channel": 3}, "nucleus_channel"),
        ({"nucleus_channel": 1.0}, "nucleus_channel"),
        ({"mask": np.ones((2, 64, 64), bool)}, "mask"),
        ({"mask": np.ones((1, 8, 8))}, "mask"),
        ({"haralick_distance": 0}, "haralick_distance"),
        ({"zernike_degree": -1}, "zernike_degree"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_handcrafted_invalid_arguments(kwargs, name):
    args = {"crops": np.ones((1, 3, 8, 8)), "channel_names": CHANNELS, "nucleus_channel": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        handcrafted_features(**args)


# -- random CNN ------------------------------------------------------------------------------


@pytest.mark.usefixtures("torch_one_thread")
def test_random_cnn_features_deterministic_per_seed():
    crops = synthetic_cells(12, size=32, seed=8)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    a = random_cnn_features(crops, seed=1, width=8, depth=3)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG is left alone
    assert list(a) == ["conv1", "conv2", "conv3"]
    assert [v.shape for v in a.values()] == [(12, 8), (12, 16), (12, 32)]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in a.values())
    again = random_cnn_features(crops, seed=1, width=8, depth=3, batch_size=5)
    other = random_cnn_features(crops, seed=2, width=8, depth=3)
    for name in a:
        np.testing.assert_allclose(again[name], a[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(other[name], a[name])
        assert a[name].std(axis=0).mean() > 0  # features vary across cells
    peak = random_cnn_features(crops, seed=1, width=8, depth=3, pooling="max")
    assert all((peak[name] >= a[name] - 1e-6).all() for name in a)


@pytest.mark.usefixtures("torch_one_thread")
def test_random_cnn_default_architecture_and_normalisation():
    crops = synthetic_cells(3, seed=9)
    features = random_cnn_features(crops, seed=0)
    assert [v.shape[1] for v in features.values()] == [32, 64, 128, 256]
    # Inputs are z-scored per channel over the crops: a global affine change of a channel is invisible.
    rescaled = crops * np.array([2.0, 0.5, 10.0], np.float32)[None, :, None, None] + 7.0
    for name, values in random_cnn_features(rescaled, seed=0).items():
        np.testing.assert_allclose(values, features[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"crops": np.zeros((2, 32, 32))}, "crops"),
        ({"crops": np.full((1, 1, 32, 32), np.inf)}, "crops"),
        ({"seed": 1.5}, "seed"),
        ({"width": 0}, "width"),
        ({"depth": 6}, "depth"),
        ({"pooling": "sum"}, "pooling"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_random_cnn_invalid_arguments(kwargs, name):
    args = {"crops": np.ones((2, 1, 32, 32)), "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        random_cnn_features(**args)


# -- feature tables of the baseline_features rule --------------------------------------------


class CropSource:
    """The batch-source interface (``len``, ``batch(index)``) over an array of crops."""

    def __init__(self, crops):
        self.crops = crops

    def __len__(self):
        return len(self.crops)

    def batch(self, index):
        return self.crops[index]


def cell_table(n):
    return pd.DataFrame(
        {"Metadata_cell": [f"c{i}" for i in range(n)], "QC_area": np.arange(n), "Metadata_well": ["a", "b"] * (n // 2)},
        index=np.arange(100, 100 + n),
    )


def test_crop_batches_reads_every_crop_in_order():
    crops = np.arange(7 * 2 * 4 * 4, dtype=np.float32).reshape(7, 2, 4, 4)
    blocks = list(baselines.crop_batches(CropSource(crops), batch_size=3))
    assert [len(b) for b in blocks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), crops)
    assert list(baselines.crop_batches(CropSource(crops[:0]))) == []


def test_standardize_columns_centres_and_scales_each_column():
    values = pd.DataFrame({"a": [1.0, 2.0, 6.0], "b": [4.0, 4.0, 4.0]})
    out = baselines.standardize_columns(values)
    np.testing.assert_allclose(out["a"], (values["a"] - 3.0) / values["a"].std(ddof=0))
    np.testing.assert_array_equal(out["b"], 0.0)  # constant: only centred


def test_handcrafted_table_is_the_standardised_features_after_the_metadata():
    crops = synthetic_cells(6, size=32, seed=11)
    channels = [
        {"name": "actin", "role": "cytoplasm"},
        {"name": "dna", "role": "nucleus"},
        {"name": "tub", "role": "x"},
    ]
    cells = cell_table(6)
    table = baselines.handcrafted_table(cells, CropSource(crops[:, [1, 0, 2]]), channels)
    values = handcrafted_features(crops[:, [1, 0, 2]], ["actin", "dna", "tub"], nucleus_channel=1)
    expected = ((values - values.mean(axis=0)) / values.std(axis=0, ddof=0).replace(0, 1.0)).astype(np.float32)
    assert list(table.columns) == ["Metadata_cell", "Metadata_well", *values.columns]
    assert table.index.tolist() == list(range(6))
    assert table["Metadata_cell"].tolist() == cells["Metadata_cell"].tolist()
    pd.testing.assert_frame_equal(table[values.columns], expected)


@pytest.mark.usefixtures("torch_one_thread")
def test_random_cnn_tables_one_per_layer():
    crops = synthetic_cells(4, size=32, seed=12)
    cells = cell_table(4)
    tables = baselines.random_cnn_tables(cells, CropSource(crops), seed=3)
    layers = random_cnn_features(crops, seed=3)
    assert list(tables) == list(layers)
    for name, values in layers.items():
        table = tables[name]
        assert list(table.columns[:2]) == ["Metadata_cell", "Metadata_well"]
        assert list(table.columns[2:]) == [f"{name}_{i}" for i in range(values.shape[1])]
        np.testing.assert_array_equal(table.iloc[:, 2:].to_numpy(), values)


def test_cell_count_table_counts_the_cells_of_each_group():
    cells = cell_table(6).iloc[:5]
    table = baselines.cell_count_table(cells, "Metadata_well")
    assert list(table.columns) == ["Metadata_cell", "Metadata_well", "count_0"]
    assert table["count_0"].dtype == np.float32
    assert table["count_0"].tolist() == [3, 2, 3, 2, 3]
