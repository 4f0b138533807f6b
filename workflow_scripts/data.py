"""Cell and tile arrays on disk, and the normalisations that turn them into model inputs.

Shards are ``.npy`` files of shape (N, C, H, W), opened memory-mapped: a batch reads only its
own rows, so datasets larger than RAM train without loading whole. A cell or tile table locates
each item by ``Metadata_shard`` (the shard's file stem) and ``Metadata_row``.

This module is shared by training and feature extraction and imports neither: the batch
streams that read items through a normaliser are in :mod:`workflow_scripts.training.streams`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow_scripts.tiles import channel_stats

#: ``normalize`` values: statistics of the training split, of each crop, or of each field.
NORMALIZATIONS: tuple[str, ...] = ("dataset", "cell", "field")
#: Percentiles of the robust range of ``cell`` and ``field`` (mapped to 0 and 1): the 1st is
#: the background, and the 99.5th keeps bright puncta (up to 0.5% of a crop's pixels) at or
#: just above 1 without letting one hot pixel set the scale.
ROBUST_RANGE: tuple[float, float] = (1.0, 99.5)
#: The columns of a cell or tile table that locate each item in its shard.
LOCATION_COLUMNS: tuple[str, str] = ("Metadata_shard", "Metadata_row")


class ShardedArrays:
    """Rows of several (N_i, C, H, W) ``.npy`` shards addressed by (shard name, row).

    Parameters
    ----------
    paths : dict
        Shard name -> path of its ``.npy`` file (opened memory-mapped).

    Raises
    ------
    ValueError
        If no path is given or the non-empty shards disagree on (C, H, W).
    """

    def __init__(self, paths: dict[str, str | os.PathLike]):
        if not paths:
            raise ValueError("paths: no shard files given")
        self.arrays = {name: np.load(path, mmap_mode="r") for name, path in paths.items()}
        shapes = {name: a.shape[1:] for name, a in self.arrays.items() if len(a)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"shards disagree on (C, H, W): {shapes}")
        self.item_shape = next(iter(shapes.values())) if shapes else None

    def gather(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Read items in the order asked, each shard in row order.

        Parameters
        ----------
        shards : ndarray of shape (n,)
            Shard name of each item.
        rows : ndarray of shape (n,)
            Row of each item in its shard.

        Returns
        -------
        ndarray of shape (n, C, H, W), float32
            The items.

        Raises
        ------
        IndexError
            If a row is past the end of its shard.
        """
        shards = np.asarray(shards)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.item_shape), dtype=np.float32)
        for name in np.unique(shards):
            where = np.flatnonzero(shards == name)
            order = np.argsort(rows[where], kind="stable")
            array = self.arrays[name]
            if len(array) and rows[where].max() >= len(array):
                raise IndexError(f"shard {name}: row {rows[where].max()} of {len(array)}")
            out[where[order]] = array[rows[where][order]]
        return out

    def iter_gather(self, shards: np.ndarray, rows: np.ndarray, batch_size: int = 512) -> Iterator[np.ndarray]:
        """Read items in consecutive batches of ``batch_size`` (the last one shorter).

        Parameters
        ----------
        shards : ndarray of shape (n,)
            Shard name of each item.
        rows : ndarray of shape (n,)
            Row of each item in its shard.
        batch_size : int, default=512
            Items per batch.

        Yields
        ------
        ndarray of shape (<= batch_size, C, H, W), float32
            The next items, as :meth:`gather` reads them.
        """
        for start in range(0, len(rows), batch_size):
            index = np.arange(start, min(start + batch_size, len(rows)))
            yield self.gather(shards[index], rows[index])


def open_shards(paths) -> ShardedArrays:
    """Open shard ``.npy`` files keyed by their stem (``results/x/cells/s0003.npy`` -> ``s0003``).

    Parameters
    ----------
    paths : iterable of str or path
        The shard files.

    Returns
    -------
    ShardedArrays
        The shards, memory-mapped.
    """
    return ShardedArrays({Path(p).stem: p for p in paths})


def item_locations(table) -> tuple[np.ndarray, np.ndarray]:
    """Shard name and row of each item of a cell or tile table.

    Parameters
    ----------
    table : DataFrame
        With the :data:`LOCATION_COLUMNS` ``Metadata_shard`` and ``Metadata_row``.

    Returns
    -------
    shards : ndarray of shape (N,)
        The shard of each item, in table order.
    rows : ndarray of shape (N,), int64
        Its row there.

    Raises
    ------
    ValueError
        If a location column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> shards, rows = item_locations(pd.DataFrame({"Metadata_shard": ["s0", "s1"], "Metadata_row": [4, 0]}))
    >>> shards.tolist(), rows.tolist()
    (['s0', 's1'], [4, 0])
    """
    for column in LOCATION_COLUMNS:
        if column not in table.columns:
            raise ValueError(f"table lacks column {column!r} that locates each item in its shard")
    return table["Metadata_shard"].to_numpy(), np.asarray(table["Metadata_row"].to_numpy(), dtype=np.int64)


def per_cell_minmax(x: np.ndarray) -> np.ndarray:
    """Scale each image channel to [0, 1] independently.

    ``(x - min) / (max - min)`` over the last two (H, W) axes; a constant channel becomes 0.

    Parameters
    ----------
    x : array_like of shape (..., H, W)
        Images.

    Returns
    -------
    ndarray, float32
        The scaled images, of x's shape.

    Raises
    ------
    ValueError
        If ``x`` has fewer than two axes.

    Examples
    --------
    >>> per_cell_minmax(np.array([[[2.0, 4.0], [6.0, 10.0]], [[3.0, 3.0], [3.0, 3.0]]])).tolist()
    [[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"per_cell_minmax needs (..., H, W) arrays, got shape {x.shape}")
    lo = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span, 1.0).astype(np.float32)
    return np.where(span > 0, (x - lo) / safe, 0.0).astype(np.float32)


@dataclass
class Normalizer:
    """Per-channel affine normalisation ``(x - offset) / scale``, optionally clipped to [0, 1].

    Gaussian models use z-scores (offset = mean, scale = std); Bernoulli models map the 1st..99th
    percentile range to [0, 1] and clip. Statistics always come from the training split.

    Parameters
    ----------
    offset : list of float
        Subtracted from each channel.
    scale : list of float
        Each channel is divided by it after the offset.
    clip : bool, default=False
        Clip the result to [0, 1].

    Examples
    --------
    >>> norm = Normalizer([1.0], [2.0])
    >>> norm(np.full((1, 1, 1, 2), 5.0, np.float32)).tolist()
    [[[[2.0, 2.0]]]]
    >>> norm.invert(np.full((1, 1, 1, 1), 2.0, np.float32)).tolist()
    [[[[5.0]]]]
    """

    offset: list[float]
    scale: list[float]
    clip: bool = False
    #: Figures show reconstructions mapped back to raw intensities only where an inverse exists.
    invertible = True

    @classmethod
    def identity(cls, channels: int) -> Normalizer:
        """Leave raw intensities unchanged.

        Parameters
        ----------
        channels : int
            Number of channels.

        Returns
        -------
        Normalizer
            Offset 0 and scale 1 for every channel.
        """
        return cls([0.0] * channels, [1.0] * channels)

    @classmethod
    def from_stats(cls, stats: dict, likelihood: str) -> Normalizer:
        """Build the normaliser of a likelihood from per-channel statistics.

        Parameters
        ----------
        stats : dict
            ``mean`` and ``std``, or ``p01`` and ``p99``: one value per channel
            (:func:`raw_channel_stats`).
        likelihood : str
            ``bernoulli``: the p01..p99 range mapped to [0, 1] and clipped; anything else:
            z-scores. A zero scale becomes 1.

        Returns
        -------
        Normalizer
            The normaliser.
        """
        if likelihood == "bernoulli":
            offset = np.asarray(stats["p01"], dtype=np.float64)
            scale = np.asarray(stats["p99"], dtype=np.float64) - offset
            clip = True
        else:
            offset = np.asarray(stats["mean"], dtype=np.float64)
            scale = np.asarray(stats["std"], dtype=np.float64)
            clip = False
        scale = np.where(scale > 0, scale, 1.0)
        return cls([float(v) for v in offset], [float(v) for v in scale], clip)

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Normalise (n, C, H, W) images (``index``, their table positions, is unused)."""
        off = np.asarray(self.offset, dtype=np.float32).reshape(1, -1, 1, 1)
        sc = np.asarray(self.scale, dtype=np.float32).reshape(1, -1, 1, 1)
        y = (x - off) / sc
        return np.clip(y, 0.0, 1.0) if self.clip else y

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Map normalised (n, C, H, W) images back to raw intensities.

        Parameters
        ----------
        y : ndarray of shape (n, C, H, W)
            Normalised images.

        Returns
        -------
        ndarray
            ``y * scale + offset`` per channel (clipped values stay clipped).
        """
        off = np.asarray(self.offset, dtype=np.float32).reshape(1, -1, 1, 1)
        sc = np.asarray(self.scale, dtype=np.float32).reshape(1, -1, 1, 1)
        return y * sc + off

    def to_record(self) -> dict:
        """Describe the normaliser for model.json (:func:`normalizer_from_record` reads it).

        Returns
        -------
        dict
            ``kind``, ``offset``, ``scale`` and ``clip``.
        """
        return {"kind": "affine", "offset": self.offset, "scale": self.scale, "clip": self.clip}


class _WithoutInverse:
    """A per-cell or per-field scaling: no global inverse, so ``invert`` returns its input."""

    invertible = False

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Return ``y`` unchanged (there is no inverse).

        Parameters
        ----------
        y : ndarray
            Scaled images.

        Returns
        -------
        ndarray
            ``y`` itself.
        """
        return y


class PerCellMinMax(_WithoutInverse):
    """Each cell's channels scaled to [0, 1] independently (paired cell inpainting).

    The reference's scaling (:func:`per_cell_minmax`); there is no global inverse, so
    ``invert`` returns its input.
    """

    kind = "per_cell_minmax"

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Scale (n, C, H, W) images (``index`` is unused)."""
        return per_cell_minmax(x)

    def to_record(self) -> dict:
        """Describe the normaliser for model.json.

        Returns
        -------
        dict
            ``{"kind": "per_cell_minmax"}``.
        """
        return {"kind": self.kind}


def _robust_scale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, clip: bool) -> np.ndarray:
    span = hi - lo
    y = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return np.clip(y, 0.0, 1.0) if clip else y


class PerCellRobust(_WithoutInverse):
    """``normalize: cell``: each crop's channels mapped from their own robust range to [0, 1].

    The range is the :data:`ROBUST_RANGE` percentiles over the crop's pixels; values are
    clipped for Bernoulli models. A cell's brightness then says nothing about its field's
    exposure or its expression level, only its pattern does. There is no global inverse:
    ``invert`` returns its input.

    Parameters
    ----------
    clip : bool, default=False
        Clip to [0, 1].
    percentiles : tuple of float, default=ROBUST_RANGE
        The percentiles mapped to 0 and 1.
    """

    kind = "per_cell_robust"

    def __init__(self, clip: bool = False, percentiles: tuple[float, float] = ROBUST_RANGE):
        self.clip = bool(clip)
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Scale (n, C, H, W) images (``index`` is unused)."""
        x = np.asarray(x, dtype=np.float32)
        lo, hi = np.percentile(x, self.percentiles, axis=(-2, -1), keepdims=True)
        return _robust_scale(x, lo, hi, self.clip)

    def to_record(self) -> dict:
        """Describe the normaliser for model.json.

        Returns
        -------
        dict
            ``kind``, ``percentiles`` and ``clip``.
        """
        return {"kind": self.kind, "percentiles": list(self.percentiles), "clip": self.clip}


class PerFieldRobust(_WithoutInverse):
    """``normalize: field``: every crop mapped from its field's robust range to [0, 1].

    The range is the :data:`ROBUST_RANGE` percentiles of all crops of the field of view
    (``column``); this removes each field's exposure and background while keeping brightness
    differences between the cells of a field. A data-dependent transform: :meth:`bind` computes
    the range of every field of a table, and the bound normaliser is called with the table
    positions of a batch.

    Parameters
    ----------
    clip : bool, default=False
        Clip to [0, 1].
    percentiles : tuple of float, default=ROBUST_RANGE
        The percentiles mapped to 0 and 1.
    column : str, default="Metadata_image"
        The column naming each cell's field.
    """

    kind = "per_field_robust"
    needs_table = True

    def __init__(
        self,
        clip: bool = False,
        percentiles: tuple[float, float] = ROBUST_RANGE,
        column: str = "Metadata_image",
    ):
        self.clip = bool(clip)
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.column = column
        self.lo: np.ndarray | None = None  # (n items, C, 1, 1) once bound
        self.hi: np.ndarray | None = None

    def bind(self, table, arrays: ShardedArrays) -> PerFieldRobust:
        """Compute the range of each item's field from the table's own items.

        Parameters
        ----------
        table : DataFrame
            The items (``Metadata_shard``, ``Metadata_row`` and ``column``).
        arrays : ShardedArrays
            Their shards.

        Returns
        -------
        PerFieldRobust
            A bound copy, called with positions in ``table``.

        Raises
        ------
        ValueError
            If ``table`` lacks ``column``.
        """
        if self.column not in table.columns:
            raise ValueError(f"normalize: field needs column {self.column!r} (the field of each cell) in the table")
        bound = PerFieldRobust(self.clip, self.percentiles, self.column)
        channels = arrays.item_shape[0]
        bound.lo = np.zeros((len(table), channels, 1, 1), np.float32)
        bound.hi = np.ones((len(table), channels, 1, 1), np.float32)
        shards, rows = table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy()
        for where in table.groupby(self.column, sort=False, dropna=False).indices.values():
            crops = arrays.gather(shards[where], rows[where])
            lo, hi = np.percentile(crops, self.percentiles, axis=(0, 2, 3))
            bound.lo[where], bound.hi[where] = lo[:, None, None], hi[:, None, None]
        return bound

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Scale (n, C, H, W) images at table positions ``index`` (needs :meth:`bind` first)."""
        if self.lo is None or index is None:
            raise RuntimeError("normalize: field: call bind(table, arrays) and pass the batch's table positions")
        index = np.asarray(index)
        return _robust_scale(np.asarray(x, dtype=np.float32), self.lo[index], self.hi[index], self.clip)

    def to_record(self) -> dict:
        """Describe the normaliser for model.json.

        Returns
        -------
        dict
            ``kind``, ``percentiles``, ``clip`` and ``column``.
        """
        return {"kind": self.kind, "percentiles": list(self.percentiles), "clip": self.clip, "column": self.column}


def make_normalizer(kind: str, table, arrays: ShardedArrays, *, likelihood: str = "gaussian", stats=None):
    """Build the normaliser of a ``normalize`` value for the items of ``table``.

    ``dataset`` fits per-channel statistics on ``table`` (the training split) or takes
    ``stats``; ``cell`` and ``field`` need nothing fitted. Bernoulli models get values clipped
    to [0, 1].

    Parameters
    ----------
    kind : str
        One of :data:`NORMALIZATIONS`.
    table : DataFrame
        The training items.
    arrays : ShardedArrays
        Their shards.
    likelihood : str, default="gaussian"
        The model's likelihood (``bernoulli`` clips).
    stats : dict, optional
        Precomputed statistics for ``dataset`` (:func:`raw_channel_stats`).

    Returns
    -------
    Normalizer or PerCellRobust or PerFieldRobust
        The normaliser.

    Raises
    ------
    ValueError
        If ``kind`` is not a normalisation.
    """
    if kind == "dataset":
        return Normalizer.from_stats(stats if stats is not None else raw_channel_stats(table, arrays), likelihood)
    if kind == "cell":
        return PerCellRobust(clip=likelihood == "bernoulli")
    if kind == "field":
        return PerFieldRobust(clip=likelihood == "bernoulli")
    raise ValueError(f"normalize: {kind!r} is not one of {NORMALIZATIONS}")


def normalizer_from_record(record: dict):
    """Rebuild the normaliser a model was trained with from its model.json entry.

    Parameters
    ----------
    record : dict
        What the normaliser's ``to_record`` wrote.

    Returns
    -------
    Normalizer or PerCellMinMax or PerCellRobust or PerFieldRobust
        The normaliser (a per-field one unbound).

    Examples
    --------
    >>> normalizer_from_record({"kind": "affine", "offset": [1.0], "scale": [2.0]})
    Normalizer(offset=[1.0], scale=[2.0], clip=False)
    """
    kind = record.get("kind")
    if kind == PerCellMinMax.kind:
        return PerCellMinMax()
    if kind == PerCellRobust.kind:
        return PerCellRobust(record.get("clip", False), tuple(record.get("percentiles", ROBUST_RANGE)))
    if kind == PerFieldRobust.kind:
        return PerFieldRobust(
            record.get("clip", False),
            tuple(record.get("percentiles", ROBUST_RANGE)),
            record.get("column", "Metadata_image"),
        )
    return Normalizer(record["offset"], record["scale"], record.get("clip", False))


def pixel_matrix(source, downsample: int = 1, batch_size: int = 512, items: range | None = None) -> np.ndarray:
    """Flatten the (normalised) pixels of every item, optionally block-mean downsampled.

    Parameters
    ----------
    source : object
        Any batch source: ``len(source)`` items and ``source.batch(index)``, (n, C, H, W)
        arrays (:class:`workflow_scripts.training.streams.BatchSource`).
    downsample : int, default=1
        Block size of the mean downsampling (1: none); edge rows and columns that do not
        fill a block are dropped.
    batch_size : int, default=512
        Items read per batch.
    items : range, optional
        The items to take (default: all).

    Returns
    -------
    ndarray of shape (N, D), float32
        One row per item.
    """
    parts = []
    items = range(len(source)) if items is None else items
    for start in range(items.start, items.stop, batch_size):
        x = source.batch(np.arange(start, min(start + batch_size, items.stop)))
        if downsample > 1:
            n, c, h, w = x.shape
            f = downsample
            x = x[:, :, : h - h % f, : w - w % f].reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))
        parts.append(x.reshape(len(x), -1))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def raw_channel_stats(table, arrays: ShardedArrays) -> dict:
    """Compute per-channel statistics of the raw pixels of the items of ``table``.

    Streamed 512 items at a time (:func:`workflow_scripts.tiles.channel_stats`).

    Parameters
    ----------
    table : DataFrame
        The items (``Metadata_shard``, ``Metadata_row``).
    arrays : ShardedArrays
        Their shards.

    Returns
    -------
    dict
        ``mean``, ``std``, ``min``, ``max``, ``p01``, ``p99`` (one value per channel) and
        ``n_pixels``.
    """
    shards, rows = item_locations(table)
    return channel_stats(arrays.iter_gather(shards, rows))
