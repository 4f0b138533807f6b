import numpy as np
import pytest

from workflow_scripts.tiles import channel_stats, stitch_tiles, tile_image, tile_origins


def _image(channels=3, height=130, width=97, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((channels, height, width)) * 1000 + 1).astype(dtype)


def test_origins_cover_every_pixel():
    for height, width, size, overlap in [(130, 97, 32, 8), (64, 64, 32, 0), (33, 40, 32, 31)]:
        origins = tile_origins(height, width, size, overlap)
        covered = np.zeros((height, width), dtype=int)
        for y, x in origins:
            covered[y : y + size, x : x + size] += 1
        assert covered.min() >= 1
        assert origins.min() >= 0
        assert (origins[:, 0] + size).max() == height and (origins[:, 1] + size).max() == width


def test_adjacent_tiles_really_overlap():
    ys = np.unique(tile_origins(130, 97, 32, 8)[:, 0])
    np.testing.assert_array_equal(ys, [0, 24, 48, 72, 96, 98])
    # Shared pixels between neighbours: size - stride = overlap, except the last shifted one.
    shared = 32 - np.diff(ys)
    assert np.all(shared[:-1] == 8) and shared[-1] >= 8
    xs = np.unique(tile_origins(130, 97, 32, 8)[:, 1])
    np.testing.assert_array_equal(xs, [0, 24, 48, 65])


def test_exact_fit_has_no_extra_tile():
    np.testing.assert_array_equal(np.unique(tile_origins(56, 56, 32, 8)[:, 0]), [0, 24])
    np.testing.assert_array_equal(tile_origins(32, 32, 32, 0), [[0, 0]])


def test_tile_image_keeps_dtype_and_content():
    image = _image(dtype=np.uint16)
    tiles, origins = tile_image(image, 32, 8)
    assert tiles.dtype == np.uint16 and tiles.shape == (len(origins), 3, 32, 32)
    assert tiles.flags["C_CONTIGUOUS"]
    for tile, (y, x) in zip(tiles, origins):
        np.testing.assert_array_equal(tile, image[:, y : y + 32, x : x + 32])


@pytest.mark.parametrize("overlap", [0, 8, 31])
@pytest.mark.parametrize("explicit", [True, False])
def test_round_trip(overlap, explicit):
    image = _image()
    tiles, origins = tile_image(image, 32, overlap)
    kwargs = {"overlap": overlap} if explicit else {}
    out = stitch_tiles(tiles, origins, 130, 97, **kwargs)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, image, rtol=1e-5)


def test_round_trip_integer_tiles():
    image = _image(dtype=np.uint16)
    tiles, origins = tile_image(image, 32, 8)
    np.testing.assert_allclose(stitch_tiles(tiles, origins, 130, 97), image, rtol=1e-5)


def test_overlaps_blend_smoothly():
    # Two tiles in a row disagree (0 vs 1); the overlap must crossfade, not switch.
    size, overlap = 16, 6
    origins = np.array([[0, 0], [0, size - overlap]])
    tiles = np.stack([np.zeros((1, size, size)), np.ones((1, size, size))])
    out = stitch_tiles(tiles, origins, size, 2 * size - overlap, overlap=overlap)
    row = out[0, size // 2]
    np.testing.assert_array_equal(row[: size - overlap], 0)
    np.testing.assert_array_equal(row[size:], 1)
    ramp = row[size - overlap : size]
    assert np.all((ramp > 0) & (ramp < 1))
    assert np.all(np.diff(row) >= 0)
    # Linear ramps sum to 1 over an exact overlap: equal steps of 1 / (overlap + 1).
    np.testing.assert_allclose(
        np.diff(row[size - overlap - 1 : size + 1]), 1 / (overlap + 1), rtol=1e-5
    )
    # Every row gets the same crossfade: the window is separable, not a hard seam.
    np.testing.assert_allclose(out[0], np.broadcast_to(row, out[0].shape), atol=1e-6)


def test_stitch_rejects_gaps_and_bad_arguments():
    tiles = np.zeros((2, 1, 8, 8))
    with pytest.raises(ValueError, match="cover"):
        stitch_tiles(tiles, np.array([[0, 0], [0, 10]]), 8, 18, overlap=0)
    with pytest.raises(ValueError, match="origins"):
        stitch_tiles(tiles, np.array([[0, 0], [0, 12]]), 8, 18)
    with pytest.raises(ValueError, match="origins"):
        stitch_tiles(tiles, np.array([[0, 0]]), 8, 18)
    with pytest.raises(ValueError, match="origins"):
        stitch_tiles(tiles, np.array([[0.0, 0.0], [0.0, 8.0]]), 8, 16)
    with pytest.raises(ValueError, match="tiles"):
        stitch_tiles(np.zeros((2, 8, 8)), np.zeros((2, 2), int), 8, 16)
    with pytest.raises(ValueError, match="overlap"):
        stitch_tiles(tiles, np.array([[0, 0], [0, 8]]), 8, 16, overlap=8)
    with pytest.raises(ValueError, match="height"):
        stitch_tiles(tiles, np.array([[0, 0], [0, 8]]), 0, 16)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((20, 97, 32, 8), "size"),
        ((130, 20, 32, 8), "size"),
        ((130, 97, 0, 0), "size"),
        ((130, 97, 32, 32), "overlap"),
        ((130, 97, 32, -1), "overlap"),
        ((130, 97, 32, 2.0), "overlap"),
        ((0, 97, 32, 8), "height"),
    ],
)
def test_origins_invalid_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        tile_origins(*args)


def test_tile_image_needs_channels_first():
    with pytest.raises(ValueError, match="image"):
        tile_image(np.zeros((64, 64)), 32, 0)


# --- channel_stats ----------------------------------------------------------------------------


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    # Uneven batch sizes and a large offset: a naive E[x^2] - E[x]^2 in float32 would fail.
    sizes = [7, 1, 30, 12]
    scale = np.array([1.0, 10.0, 0.01], dtype=np.float32)[None, :, None, None]
    offset = np.array([0.0, 5000.0, -3.0], dtype=np.float32)[None, :, None, None]
    return [(rng.normal(size=(n, 3, 16, 16)).astype(np.float32) * scale + offset) for n in sizes]


def test_channel_stats_equal_numpy():
    batches = _batches()
    stats = channel_stats(iter(batches))
    data = np.concatenate(batches).astype(np.float64)
    axes = (0, 2, 3)
    np.testing.assert_allclose(stats["mean"], data.mean(axis=axes), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["std"], data.std(axis=axes), rtol=1e-6)
    np.testing.assert_array_equal(stats["min"], data.min(axis=axes))
    np.testing.assert_array_equal(stats["max"], data.max(axis=axes))
    assert stats["n_pixels"] == data.shape[0] * 16 * 16
    # Fewer pixels than the reservoir holds: percentiles are exact.
    p01, p99 = np.percentile(data.transpose(1, 0, 2, 3).reshape(3, -1), [1, 99], axis=1)
    np.testing.assert_allclose(stats["p01"], p01, rtol=1e-6)
    np.testing.assert_allclose(stats["p99"], p99, rtol=1e-6)
    assert all(isinstance(v, float) for v in stats["mean"] + stats["p99"])


def test_channel_stats_percentiles_from_reservoir():
    batches = _batches(seed=1) * 20  # 20 x 50 tiles x 256 px = 256,000 px per channel
    data = np.concatenate(batches).transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    stats = channel_stats(batches, reservoir_size=20_000, seed=3)
    for c in range(3):
        # Within about four standard errors of the sampled quantile.
        for key, p in (("p01", 0.01), ("p99", 0.99)):
            quantile = np.mean(data[c] <= stats[key][c])
            assert abs(quantile - p) < 4 * np.sqrt(p * (1 - p) / 20_000)
    assert channel_stats(batches, reservoir_size=20_000, seed=3) == stats


def test_channel_stats_integer_tiles_and_single_array():
    tiles = np.random.default_rng(2).integers(0, 65535, size=(10, 2, 8, 8), dtype=np.uint16)
    stats = channel_stats(tiles)
    np.testing.assert_allclose(stats["mean"], tiles.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], tiles.std(axis=(0, 2, 3)), rtol=1e-9)


def test_channel_stats_errors():
    with pytest.raises(ValueError, match="tiles"):
        channel_stats([])
    with pytest.raises(ValueError, match="tiles"):
        channel_stats([np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 4, 4))])
    with pytest.raises(ValueError, match="tiles"):
        channel_stats([np.zeros((2, 4, 4))])
    with pytest.raises(ValueError, match="tiles"):
        channel_stats([np.full((1, 2, 4, 4), np.nan)])
    with pytest.raises(ValueError, match="reservoir_size"):
        channel_stats([np.zeros((1, 2, 4, 4))], reservoir_size=0)
