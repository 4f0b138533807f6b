"""Cut fields of view into overlapping square tiles, stitch them back, and stream channel statistics.

Fixes relative to the reference (LLF) tiling: ``overlap`` overlaps tiles instead of
shrinking them, the border remainder is covered by a last tile shifted to end at the
border instead of being dropped, stitching blends overlaps instead of overwriting, and
statistics are streamed with float64 accumulators instead of materialising float64
copies of the data. (Splitting by field rather than by tile, and computing statistics on
the training split only, are the callers' job; see ``split.py``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .validation import check_int

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

    Raises
    ------
    ValueError
        If a size is not a positive integer, ``overlap`` is out of range, or the tile is
        larger than the image.

    Examples
    --------
    >>> tile_origins(10, 6, 4, 1).tolist()
    [[0, 0], [0, 2], [3, 0], [3, 2], [6, 0], [6, 2]]
    """
    height, width, size = (check_int(name, v, 1) for name, v in (("height", height), ("width", width), ("size", size)))
    overlap = _check_overlap(overlap, size)
    if size > height or size > width:
        raise ValueError(
            f"size must not exceed the image; got size={size} for an image of {height} x {width} pixels"
        )
    ys = _axis_origins(height, size, overlap)
    xs = _axis_origins(width, size, overlap)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _check_overlap(overlap, size: int) -> int:
    """Return ``overlap`` as an ``int`` if it is an integer with ``0 <= overlap < size``."""
    overlap = check_int("overlap", overlap, 0)
    if overlap >= size:
        raise ValueError(f"overlap must be an integer with 0 <= overlap < size={size}; got {overlap!r}")
    return overlap


def _axis_origins(length: int, size: int, overlap: int) -> np.ndarray:
    """Return the tile starts along one axis: every stride, then one ending at the border."""
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

    Examples
    --------
    >>> image = np.arange(2 * 6 * 8).reshape(2, 6, 8)
    >>> tiles, origins = tile_image(image, 4, 0)
    >>> tiles.shape, origins.tolist()
    ((4, 2, 4, 4), [[0, 0], [0, 4], [2, 0], [2, 4]])
    >>> np.allclose(stitch_tiles(tiles, origins, 6, 8), image)
    True
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
    tiles, origins, height, width, overlap = _check_stitch(tiles, origins, height, width, overlap)
    _, n_channels, size, _ = tiles.shape
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
            f"origins must cover the whole {height} x {width} image; {n_missing} pixels are covered by no tile"
        )
    out /= weight
    return out


def _check_stitch(tiles, origins, height, width, overlap) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Check the arguments of :func:`stitch_tiles`; infer ``overlap`` when it is None."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[2] != tiles.shape[3]:
        raise ValueError(f"tiles must have shape (T, C, s, s); got shape {tiles.shape}")
    if tiles.dtype.kind not in "fiub":
        raise ValueError(f"tiles must hold real numbers; got dtype {tiles.dtype}")
    n_tiles, _, size, _ = tiles.shape
    origins = np.asarray(origins)
    if origins.shape != (n_tiles, 2) or origins.dtype.kind not in "iu":
        raise ValueError(
            f"origins must be an integer array of shape ({n_tiles}, 2); got shape "
            f"{origins.shape} and dtype {origins.dtype}"
        )
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    if n_tiles and (origins.min() < 0 or origins[:, 0].max() + size > height or origins[:, 1].max() + size > width):
        raise ValueError(
            f"origins must place every {size} x {size} tile inside the {height} x {width} "
            f"image; got corners spanning y {origins[:, 0].min()}..{origins[:, 0].max()}, "
            f"x {origins[:, 1].min()}..{origins[:, 1].max()}"
        )
    overlap = _infer_overlap(origins, size) if overlap is None else _check_overlap(overlap, size)
    return tiles, origins, height, width, overlap


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
    """Compute per-channel statistics streamed over batches of tiles.

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

    Raises
    ------
    ValueError
        If a batch is not a finite real ``(n, C, s, s)`` array, the batches differ in ``C``,
        none holds a pixel, or ``reservoir_size`` / ``seed`` is not a positive / non-negative
        integer.

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

    Examples
    --------
    >>> batch = np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2)
    >>> stats = channel_stats([batch, batch + 8])
    >>> stats["mean"], stats["min"], stats["max"], stats["n_pixels"]
    ([7.5], [0.0], [15.0], 16)
    """
    reservoir_size = check_int("reservoir_size", reservoir_size, 1)
    seed = check_int("seed", seed, 0)
    if isinstance(tiles, np.ndarray):
        tiles = [tiles]  # one batch
    rng = np.random.default_rng(seed)
    moments = reservoir = None
    for i, batch in enumerate(tiles):
        batch = _check_batch(batch, i, None if moments is None else len(moments.mean))
        if batch.size == 0:
            continue
        if moments is None:
            moments, reservoir = _Moments.of(batch), _Reservoir.empty(batch.shape[1], reservoir_size)
        else:
            moments.merge(_Moments.of(batch))
        reservoir.add(batch, rng)
    if moments is None:
        raise ValueError("tiles must yield at least one non-empty batch; got none")
    p01, p99 = np.percentile(reservoir.sample, [1, 99], axis=0)
    return {
        "mean": moments.mean.tolist(),
        "std": np.sqrt(moments.m2 / moments.count).tolist(),
        "min": moments.lo.tolist(),
        "max": moments.hi.tolist(),
        "p01": p01.tolist(),
        "p99": p99.tolist(),
        "n_pixels": int(moments.count),
    }


def _check_batch(batch, i: int, n_channels: int | None) -> np.ndarray:
    """Return batch ``i`` as an array if it is a finite real ``(n, C, s, s)`` array of ``n_channels``."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.dtype.kind not in "fiub":
        raise ValueError(
            f"tiles: batch {i} must be a real array of shape (n, C, s, s); got shape "
            f"{batch.shape} and dtype {batch.dtype}"
        )
    if n_channels is not None and batch.shape[1] != n_channels:
        raise ValueError(f"tiles: batch {i} has {batch.shape[1]} channels, earlier batches {n_channels}")
    if batch.size and batch.dtype.kind == "f" and not np.isfinite(batch).all():
        raise ValueError(f"tiles: batch {i} contains NaN or inf")
    return batch


@dataclass
class _Moments:
    """Per-channel pixel count, mean, sum of squared deviations, minimum and maximum."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, batch: np.ndarray) -> _Moments:
        """Compute the moments of one non-empty ``(n, C, s, s)`` batch in float64."""
        n_channels = batch.shape[1]
        mean = np.empty(n_channels)
        m2 = np.empty(n_channels)
        # A loop over channels: a float64 copy of one channel at a time, not of the batch.
        for c in range(n_channels):
            values = batch[:, c].astype(np.float64)
            mean[c] = values.mean()
            values -= mean[c]
            m2[c] = np.dot(values.ravel(), values.ravel())
        lo = batch.min(axis=(0, 2, 3)).astype(np.float64)
        hi = batch.max(axis=(0, 2, 3)).astype(np.float64)
        return cls(batch.shape[0] * batch.shape[2] * batch.shape[3], mean, m2, lo, hi)

    def merge(self, other: _Moments) -> None:
        """Add ``other``'s pixels (Chan et al.'s parallel update of the mean and ``m2``)."""
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        np.minimum(self.lo, other.lo, out=self.lo)
        np.maximum(self.hi, other.hi, out=self.hi)


@dataclass
class _Reservoir:
    """A uniform sample without replacement of pixel positions (all channels), by bottom-k keys."""

    size: int
    keys: np.ndarray
    sample: np.ndarray

    @classmethod
    def empty(cls, n_channels: int, size: int) -> _Reservoir:
        """Start an empty reservoir of ``size`` positions of ``n_channels`` channels."""
        return cls(size, np.empty(0), np.empty((0, n_channels), dtype=np.float64))

    def add(self, batch: np.ndarray, rng: np.random.Generator) -> None:
        """Offer every pixel position of ``batch``, drawing one uniform key each from ``rng``.

        A uniform sample without replacement of the whole stream is the ``size`` positions with
        the smallest i.i.d. uniform keys.
        """
        positions = (batch.shape[0],) + batch.shape[2:]  # pixel positions (n, s, s)
        new_keys = rng.random(int(np.prod(positions)))
        if len(self.keys) == self.size:
            # Only keys below the current largest kept key can enter.
            candidates = np.flatnonzero(new_keys < self.keys.max())
        else:
            candidates = np.arange(len(new_keys))
        if len(candidates):
            self.keys = np.concatenate([self.keys, new_keys[candidates]])
            t, y, x = np.unravel_index(candidates, positions)
            # Gathering only the candidates avoids a channels-last copy of the batch.
            self.sample = np.concatenate([self.sample, batch[t, :, y, x].astype(np.float64)])
            if len(self.keys) > self.size:
                keep = np.argpartition(self.keys, self.size - 1)[: self.size]
                self.keys, self.sample = self.keys[keep], self.sample[keep]
