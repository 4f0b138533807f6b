"""Cutting fields of view into overlapping square tiles, stitching them back, and
streaming per-channel statistics over tiles.

Fixes relative to the reference (LLF) tiling: ``overlap`` overlaps tiles instead of
shrinking them, the border remainder is covered by a last tile shifted to end at the
border instead of being dropped, stitching blends overlaps instead of overwriting, and
statistics are streamed with float64 accumulators instead of materialising float64
copies of the data. (Splitting by field rather than by tile, and computing statistics on
the training split only, are the callers' job; see ``split.py``.)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

__all__ = ["tile_origins", "tile_image", "stitch_tiles", "channel_stats"]


def tile_origins(height: int, width: int, size: int, overlap: int) -> np.ndarray:
    """Top-left corners of ``size x size`` tiles covering a ``height x width`` image.

    Parameters
    ----------
    height, width : int
        Image size in pixels, each ``>= size``.
    size : int
        Tile side in pixels, ``>= 1``.
    overlap : int
        Pixels shared by adjacent tiles, ``0 <= overlap < size``; the stride is
        ``size - overlap``.

    Returns
    -------
    ndarray of shape (T, 2), dtype int64
        ``(y, x)`` corners in row-major order (y slowest). Along each axis the corners are
        ``0, stride, 2 * stride, ...`` and, if that does not reach the border, one more
        tile at ``length - size`` (it overlaps its neighbour by more than ``overlap``), so
        every pixel is covered and no remainder is dropped.
    """
    for name, value in (("height", height), ("width", width), ("size", size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if (
        not isinstance(overlap, numbers.Integral)
        or isinstance(overlap, bool)
        or not 0 <= overlap < size
    ):
        raise ValueError(
            f"overlap must be an integer with 0 <= overlap < size={size}; got {overlap!r}"
        )
    if size > height or size > width:
        raise ValueError(
            f"size must not exceed the image; got size={size} for an image of "
            f"{height} x {width} pixels"
        )
    ys = _axis_origins(int(height), int(size), int(overlap))
    xs = _axis_origins(int(width), int(size), int(overlap))
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _axis_origins(length: int, size: int, overlap: int) -> np.ndarray:
    starts = np.arange(0, length - size + 1, size - overlap, dtype=np.int64)
    if starts[-1] != length - size:
        starts = np.append(starts, length - size)
    return starts


def tile_image(image: np.ndarray, size: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut an image into overlapping square tiles.

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
        Any dtype; the tiles keep it.
    size : int
        Tile side in pixels, ``<= min(H, W)``.
    overlap : int
        Pixels shared by adjacent tiles, ``0 <= overlap < size``.

    Returns
    -------
    tiles : ndarray of shape (T, C, size, size), same dtype as ``image``
        A new, contiguous array.
    origins : ndarray of shape (T, 2), dtype int64
        ``(y, x)`` top-left corner of each tile, from :func:`tile_origins`.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W); got shape {image.shape}")
    origins = tile_origins(image.shape[1], image.shape[2], size, overlap)
    # A strided view of every possible window; fancy indexing copies only the chosen ones.
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(1, 2))
    tiles = windows[:, origins[:, 0], origins[:, 1]]  # (C, T, size, size)
    return np.ascontiguousarray(tiles.transpose(1, 0, 2, 3)), origins


def stitch_tiles(
    tiles: np.ndarray,
    origins: np.ndarray,
    height: int,
    width: int,
    *,
    overlap: int | None = None,
) -> np.ndarray:
    """Blend overlapping tiles back into one image.

    Each tile is weighted by a separable window that ramps linearly over ``overlap``
    pixels at each edge and is 1 in the interior; the image is the weighted sum divided
    by the summed weights. Where two tiles overlap by exactly ``overlap`` pixels their
    weights sum to 1 and the result crossfades linearly from one to the other, so tiles
    predicted independently (e.g. reconstructions) meet without a seam.

    Parameters
    ----------
    tiles : ndarray of shape (T, C, s, s)
        Any real dtype.
    origins : ndarray of shape (T, 2)
        Integer ``(y, x)`` top-left corners, each tile inside the image.
    height, width : int
        Output size; every pixel must be covered by at least one tile.
    overlap : int, optional
        Ramp width in pixels, ``0 <= overlap < s``. By default it is inferred as
        ``s - stride`` from the smallest spacing between distinct corners (0 when all
        tiles share a corner coordinate along both axes); pass the tiling's overlap when
        the tiles are not on a regular grid.

    Returns
    -------
    ndarray of shape (C, height, width), dtype float32
        The stitched image. For tiles from :func:`tile_image` it equals the original up
        to float32 rounding.

    Notes
    -----
    The window is strictly positive (the outermost pixel weighs ``1 / (overlap + 1)``),
    so any pixel covered by a tile gets a well-defined value, including at the image
    border. Accumulators are float32 and the weight sum is shared by all channels: at
    most ``(C + 1) * H * W * 4`` bytes beyond the tiles themselves.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[2] != tiles.shape[3]:
        raise ValueError(f"tiles must have shape (T, C, s, s); got shape {tiles.shape}")
    if tiles.dtype.kind not in "fiub":
        raise ValueError(f"tiles must hold real numbers; got dtype {tiles.dtype}")
    n_tiles, n_channels, size, _ = tiles.shape
    origins = np.asarray(origins)
    if origins.shape != (n_tiles, 2) or origins.dtype.kind not in "iu":
        raise ValueError(
            f"origins must be an integer array of shape ({n_tiles}, 2); got shape "
            f"{origins.shape} and dtype {origins.dtype}"
        )
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if n_tiles and (
        origins.min() < 0
        or origins[:, 0].max() + size > height
        or origins[:, 1].max() + size > width
    ):
        raise ValueError(
            f"origins must place every {size} x {size} tile inside the {height} x {width} "
            f"image; got corners spanning y {origins[:, 0].min()}..{origins[:, 0].max()}, "
            f"x {origins[:, 1].min()}..{origins[:, 1].max()}"
        )
    if overlap is None:
        overlap = _infer_overlap(origins, size)
    elif (
        not isinstance(overlap, numbers.Integral)
        or isinstance(overlap, bool)
        or not 0 <= overlap < size
    ):
        raise ValueError(f"overlap must be an integer with 0 <= overlap < {size}; got {overlap!r}")

    ramp = np.minimum(np.arange(1, size + 1), np.arange(size, 0, -1)) / (overlap + 1)
    ramp = np.minimum(ramp, 1.0).astype(np.float32)
    window = np.outer(ramp, ramp)

    out = np.zeros((n_channels, height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    # A loop over tiles: vectorising would need a (T, C, H, W) intermediate.
    for tile, (y, x) in zip(tiles, origins):
        out[:, y : y + size, x : x + size] += tile.astype(np.float32, copy=False) * window
        weight[y : y + size, x : x + size] += window
    if not np.all(weight > 0):
        n_missing = int(np.count_nonzero(weight == 0))
        raise ValueError(
            f"origins must cover the whole {height} x {width} image; {n_missing} pixels "
            f"are covered by no tile"
        )
    out /= weight
    return out


def _infer_overlap(origins: np.ndarray, size: int) -> int:
    """``size - stride`` for the smallest spacing of distinct corners along either axis."""
    spacings = [np.diff(np.unique(origins[:, axis])) for axis in (0, 1)]
    spacings = [s for s in spacings if len(s)]
    if not spacings:
        return 0
    # A gap between tiles (stride > size) leaves pixels uncovered; that is reported as
    # such after accumulation rather than as a negative overlap here.
    return int(max(0, size - min(s.min() for s in spacings)))


def channel_stats(
    tiles: Iterable[np.ndarray], *, reservoir_size: int = 100_000, seed: int = 0
) -> dict:
    """Per-channel statistics streamed over batches of tiles.

    Parameters
    ----------
    tiles : iterable of ndarray of shape (n, C, s, s)
        Batches with the same ``C`` (spatial sizes may differ), any real dtype, finite.
        Only the training split should be passed; that selection is the caller's job.
    reservoir_size : int, default=100_000
        Pixels kept for the percentile estimates.
    seed : int, default=0
        Seed of the reservoir sampling.

    Returns
    -------
    dict
        ``mean``, ``std`` (population, ddof=0), ``min``, ``max``, ``p01``, ``p99``: lists
        of ``C`` floats; ``n_pixels``: pixels per channel (int).

    Notes
    -----
    Mean and standard deviation are exact: each batch's per-channel mean and sum of
    squared deviations are computed in float64 and merged with the parallel update of
    Chan et al. (1979), which does not suffer the cancellation of ``E[x^2] - E[x]^2``.
    The 1st and 99th percentiles are estimated from a uniform random sample of
    ``reservoir_size`` pixel positions (all channels of a position together), drawn
    without replacement over the whole stream by keeping the positions with the smallest
    random keys. They are exact when the stream holds at most ``reservoir_size`` pixels;
    otherwise their standard error is about ``sqrt(p (1 - p) / reservoir_size)`` in
    quantile (e.g. +-0.03 percentile points for p = 1 % with the default size).
    """
    if (
        not isinstance(reservoir_size, numbers.Integral)
        or isinstance(reservoir_size, bool)
        or reservoir_size < 1
    ):
        raise ValueError(f"reservoir_size must be a positive integer; got {reservoir_size!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if isinstance(tiles, np.ndarray):
        tiles = [tiles]  # one batch
    rng = np.random.default_rng(int(seed))

    count = 0
    mean = m2 = lo = hi = None
    sample = np.empty((0, 0))
    keys = np.empty(0)
    for i, batch in enumerate(tiles):
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.dtype.kind not in "fiub":
            raise ValueError(
                f"tiles: batch {i} must be a real array of shape (n, C, s, s); got shape "
                f"{batch.shape} and dtype {batch.dtype}"
            )
        if mean is not None and batch.shape[1] != len(mean):
            raise ValueError(
                f"tiles: batch {i} has {batch.shape[1]} channels, earlier batches {len(mean)}"
            )
        if batch.size == 0:
            continue
        if batch.dtype.kind == "f" and not np.isfinite(batch).all():
            raise ValueError(f"tiles: batch {i} contains NaN or inf")
        n_channels = batch.shape[1]
        positions = (batch.shape[0],) + batch.shape[2:]  # pixel positions (n, s, s)
        n_new = int(np.prod(positions))

        # A loop over channels: a float64 copy of one channel at a time, not of the batch.
        b_mean = np.empty(n_channels)
        b_m2 = np.empty(n_channels)
        for c in range(n_channels):
            values = batch[:, c].astype(np.float64)
            b_mean[c] = values.mean()
            values -= b_mean[c]
            b_m2[c] = np.dot(values.ravel(), values.ravel())
        b_lo = batch.min(axis=(0, 2, 3)).astype(np.float64)
        b_hi = batch.max(axis=(0, 2, 3)).astype(np.float64)

        if mean is None:
            count, mean, m2, lo, hi = n_new, b_mean, b_m2, b_lo, b_hi
            sample = np.empty((0, n_channels), dtype=np.float64)
        else:
            total = count + n_new
            delta = b_mean - mean
            mean = mean + delta * (n_new / total)
            m2 = m2 + b_m2 + delta**2 * (count * n_new / total)
            count = total
            np.minimum(lo, b_lo, out=lo)
            np.maximum(hi, b_hi, out=hi)

        # Bottom-k sampling: a uniform sample without replacement of the whole stream is
        # the reservoir_size positions with the smallest i.i.d. uniform keys.
        new_keys = rng.random(n_new)
        if len(keys) == reservoir_size:
            # Only keys below the current largest kept key can enter.
            candidates = np.flatnonzero(new_keys < keys.max())
        else:
            candidates = np.arange(n_new)
        if len(candidates):
            keys = np.concatenate([keys, new_keys[candidates]])
            t, y, x = np.unravel_index(candidates, positions)
            # Gathering only the candidates avoids a channels-last copy of the batch.
            sample = np.concatenate([sample, batch[t, :, y, x].astype(np.float64)])
            if len(keys) > reservoir_size:
                keep = np.argpartition(keys, reservoir_size - 1)[:reservoir_size]
                keys, sample = keys[keep], sample[keep]

    if mean is None:
        raise ValueError("tiles must yield at least one non-empty batch; got none")
    p01, p99 = np.percentile(sample, [1, 99], axis=0)
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(m2 / count).tolist(),
        "min": lo.tolist(),
        "max": hi.tolist(),
        "p01": p01.tolist(),
        "p99": p99.tolist(),
        "n_pixels": int(count),
    }
