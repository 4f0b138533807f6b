import json

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.data import (
    ROBUST_RANGE,
    Normalizer,
    PerCellRobust,
    PerFieldRobust,
    ShardedArrays,
    make_normalizer,
    normalizer_from_record,
    open_shards,
    pixel_matrix,
)
from workflow_scripts.training.pairs import PairedSource
from workflow_scripts.training.streams import BatchSource, source_for


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((5, 2, 4, 4)).astype(np.float32)
    b = rng.random((3, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "s0000.npy", a)
    np.save(tmp_path / "s0001.npy", b)
    return tmp_path, a, b


def test_gather_keeps_requested_order(shards):
    path, a, b = shards
    arrays = open_shards([path / "s0000.npy", path / "s0001.npy"])
    got = arrays.gather(np.array(["s0001", "s0000", "s0000", "s0001"]), np.array([2, 4, 0, 0]))
    assert np.array_equal(got, np.stack([b[2], a[4], a[0], b[0]]))
    assert isinstance(arrays.arrays["s0000"], np.memmap)


def test_gather_out_of_range_names_shard(shards):
    path, _, _ = shards
    arrays = ShardedArrays({"s0001": path / "s0001.npy"})
    with pytest.raises(IndexError, match="s0001"):
        arrays.gather(np.array(["s0001"]), np.array([3]))


def test_normalizer_from_stats_and_invert():
    stats = {"mean": [1.0, 2.0], "std": [2.0, 0.0], "p01": [0.0, 1.0], "p99": [4.0, 3.0]}
    z = Normalizer.from_stats(stats, "gaussian")
    x = np.full((1, 2, 2, 2), 3.0, np.float32)
    assert np.allclose(z(x)[0, 0], 1.0) and np.allclose(z(x)[0, 1], 1.0)  # zero std -> scale 1
    assert np.allclose(z.invert(z(x)), x)
    b = Normalizer.from_stats(stats, "bernoulli")
    y = b(np.array([[[[-1.0]], [[5.0]]]], np.float32))
    assert y.min() == 0.0 and y.max() == 1.0


def test_pixel_matrix_downsamples_by_block_mean(shards):
    path, a, _ = shards
    source = BatchSource(open_shards([path / "s0000.npy"]), ["s0000"] * 5, np.arange(5), Normalizer([0, 0], [1, 1]))
    full = pixel_matrix(source)
    assert full.shape == (5, 32) and np.allclose(full, a.reshape(5, -1))
    half = pixel_matrix(source, downsample=2, batch_size=2)
    assert half.shape == (5, 8)
    assert np.isclose(half[0, 0], a[0, 0, :2, :2].mean())


def _field_table(tmp_path):
    """Two fields of 4 cells each; field B is field A's crops times 5 plus 30 (a brighter
    exposure and a higher background)."""
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 10.0, (4, 2, 8, 8)).astype(np.float32)
    np.save(tmp_path / "s0000.npy", np.concatenate([a, 5 * a + 30]))
    table = pd.DataFrame(
        {
            "Metadata_shard": ["s0000"] * 8,
            "Metadata_row": np.arange(8),
            "Metadata_image": ["A"] * 4 + ["B"] * 4,
            "Metadata_group": ["A"] * 4 + ["B"] * 4,
        }
    )
    return table, open_shards([tmp_path / "s0000.npy"]), a


def test_per_cell_robust_maps_each_crops_range_to_unit_and_ignores_gain():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 10.0, (3, 2, 16, 16)).astype(np.float32)
    y = PerCellRobust()(x)
    lo, hi = np.percentile(y, ROBUST_RANGE, axis=(-2, -1))
    assert np.allclose(lo, 0.0, atol=1e-5) and np.allclose(hi, 1.0, atol=1e-5)
    assert np.allclose(PerCellRobust()(7 * x + 100), y, atol=1e-5)  # exposure and offset gone
    constant = PerCellRobust()(np.full((1, 2, 4, 4), 3.0, np.float32))
    assert np.all(constant == 0.0)
    assert PerCellRobust(clip=True)(x).max() == 1.0


def test_per_field_robust_removes_field_exposure_but_keeps_cells_apart(tmp_path):
    table, arrays, a = _field_table(tmp_path)
    source = source_for(table, arrays, make_normalizer("field", table, arrays))
    y = source.batch(np.arange(8))
    assert np.allclose(y[:4], y[4:], atol=1e-5)  # the same cells under two exposures
    # Within a field brightness differences survive (unlike per-cell scaling).
    assert not np.allclose(y[0].mean(), y[1].mean(), atol=1e-3)
    lo, hi = np.percentile(a, ROBUST_RANGE, axis=(0, 2, 3))
    assert np.allclose(y[:4], (a - lo[:, None, None]) / (hi - lo)[:, None, None], atol=1e-5)
    # A batch in any order gets each item's own field range.
    assert np.allclose(source.batch(np.array([5, 0])), y[[5, 0]], atol=1e-6)


def test_per_field_robust_errors_name_what_is_missing(tmp_path):
    table, arrays, _ = _field_table(tmp_path)
    with pytest.raises(ValueError, match="Metadata_image"):
        source_for(table.drop(columns="Metadata_image"), arrays, PerFieldRobust())
    with pytest.raises(RuntimeError, match="bind"):
        PerFieldRobust()(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="normalize: 'plate' is not one of"):
        make_normalizer("plate", table, arrays)


def test_normalizers_round_trip_through_their_model_json_record(tmp_path):
    table, arrays, _ = _field_table(tmp_path)
    x = arrays.gather(table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy())
    for kind in ("dataset", "cell", "field"):
        normalizer = make_normalizer(kind, table, arrays, likelihood="bernoulli")
        record = json.loads(json.dumps(normalizer.to_record()))
        rebuilt = normalizer_from_record(record)
        assert type(rebuilt) is type(normalizer) and rebuilt.to_record() == record
        got = source_for(table, arrays, rebuilt).batch(np.arange(8))
        assert np.allclose(got, source_for(table, arrays, normalizer).batch(np.arange(8)))
        assert got.min() >= 0.0 and got.max() <= 1.0  # Bernoulli models get clipped values
    assert make_normalizer("dataset", table, arrays).invertible
    assert not make_normalizer("cell", table, arrays).invertible
    assert np.allclose(make_normalizer("dataset", table, arrays)(x).mean(axis=(0, 2, 3)), 0.0, atol=1e-4)


def test_paired_source_takes_the_field_normalisation(tmp_path):
    table, arrays, _ = _field_table(tmp_path)
    pairs = PairedSource(arrays, table, "Metadata_group", per_cell_scaling=False, normalizer=PerFieldRobust())
    batch = pairs.batch(np.arange(8))
    assert np.allclose(batch["source"][:4], batch["source"][4:], atol=1e-5)
