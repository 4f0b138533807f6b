import numpy as np
import pytest

from workflow_scripts.data import BatchSource, Normalizer, ShardedArrays, open_shards, pixel_matrix


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
