"""Streaming access to the crop and tile shards for training and feature extraction.

Shards are ``.npy`` files of shape (N, C, H, W), opened memory-mapped: a batch reads only its
own rows, so datasets larger than RAM train without loading whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class ShardedArrays:
    """Rows of several (N_i, C, H, W) ``.npy`` shards addressed by (shard name, row).

    Parameters
    ----------
    paths : mapping of shard name -> path of its ``.npy`` file.
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
        """Rows in the order asked, as float32 (n, C, H, W); each shard read in row order."""
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


@dataclass
class Normalizer:
    """Per-channel affine normalisation ``(x - offset) / scale``, optionally clipped to [0, 1].

    Gaussian models use z-scores (offset = mean, scale = std); Bernoulli models map the 1st..99th
    percentile range to [0, 1] and clip. Statistics always come from the training split.
    """

    offset: list[float]
    scale: list[float]
    clip: bool = False
    #: Figures show reconstructions mapped back to raw intensities only where an inverse exists.
    invertible = True

    @classmethod
    def identity(cls, channels: int) -> Normalizer:
        """Raw intensities, unchanged."""
        return cls([0.0] * channels, [1.0] * channels)

    @classmethod
    def from_stats(cls, stats: dict, likelihood: str) -> Normalizer:
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
        off = np.asarray(self.offset, dtype=np.float32).reshape(1, -1, 1, 1)
        sc = np.asarray(self.scale, dtype=np.float32).reshape(1, -1, 1, 1)
        y = (x - off) / sc
        return np.clip(y, 0.0, 1.0) if self.clip else y

    def invert(self, y: np.ndarray) -> np.ndarray:
        off = np.asarray(self.offset, dtype=np.float32).reshape(1, -1, 1, 1)
        sc = np.asarray(self.scale, dtype=np.float32).reshape(1, -1, 1, 1)
        return y * sc + off

    def to_record(self) -> dict:
        return {"kind": "affine", "offset": self.offset, "scale": self.scale, "clip": self.clip}


class PerCellMinMax:
    """Each cell's channels scaled to [0, 1] independently (paired cell inpainting); there is
    no global inverse, so ``invert`` returns its input."""

    kind = "per_cell_minmax"
    invertible = False

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        from workflow_scripts.pairs import per_cell_minmax

        return per_cell_minmax(x)

    def invert(self, y: np.ndarray) -> np.ndarray:
        return y

    def to_record(self) -> dict:
        return {"kind": self.kind}


#: ``normalize`` values: statistics of the training split, of each crop, or of each field.
NORMALIZATIONS: tuple[str, ...] = ("dataset", "cell", "field")
#: Percentiles of the robust range of ``cell`` and ``field`` (mapped to 0 and 1): the 1st is
#: the background, and the 99.5th keeps bright puncta (up to 0.5% of a crop's pixels) at or
#: just above 1 without letting one hot pixel set the scale.
ROBUST_RANGE: tuple[float, float] = (1.0, 99.5)


def _robust_scale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, clip: bool) -> np.ndarray:
    span = hi - lo
    y = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return np.clip(y, 0.0, 1.0) if clip else y


class PerCellRobust:
    """``normalize: cell``: each crop's channels mapped from their own robust range (the
    :data:`ROBUST_RANGE` percentiles over the crop's pixels) to [0, 1]; clipped for Bernoulli
    models. A cell's brightness then says nothing about its field's exposure or its expression
    level, only its pattern does. There is no global inverse: ``invert`` returns its input."""

    kind = "per_cell_robust"
    invertible = False

    def __init__(self, clip: bool = False, percentiles: tuple[float, float] = ROBUST_RANGE):
        self.clip = bool(clip)
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))

    def __call__(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        lo, hi = np.percentile(x, self.percentiles, axis=(-2, -1), keepdims=True)
        return _robust_scale(x, lo, hi, self.clip)

    def invert(self, y: np.ndarray) -> np.ndarray:
        return y

    def to_record(self) -> dict:
        return {"kind": self.kind, "percentiles": list(self.percentiles), "clip": self.clip}


class PerFieldRobust:
    """``normalize: field``: every crop's channels mapped from the robust range (the
    :data:`ROBUST_RANGE` percentiles) of all crops of its field of view (``column``) to [0, 1];
    removes each field's exposure and background while keeping brightness differences between
    the cells of a field. A data-dependent transform: :meth:`bind` computes the range of every
    field of a table, and the bound normaliser is called with the table positions of a batch.
    """

    kind = "per_field_robust"
    needs_table = True
    invertible = False

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
        """A copy holding the range of each item's field, from the table's own items."""
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
        if self.lo is None or index is None:
            raise RuntimeError("normalize: field: call bind(table, arrays) and pass the batch's table positions")
        index = np.asarray(index)
        return _robust_scale(np.asarray(x, dtype=np.float32), self.lo[index], self.hi[index], self.clip)

    def invert(self, y: np.ndarray) -> np.ndarray:
        return y

    def to_record(self) -> dict:
        return {"kind": self.kind, "percentiles": list(self.percentiles), "clip": self.clip, "column": self.column}


def make_normalizer(kind: str, table, arrays: ShardedArrays, *, likelihood: str = "gaussian", stats=None):
    """The normaliser of a ``normalize`` value for items of ``table`` (the training split):
    ``dataset`` fits per-channel statistics there (or takes ``stats``), ``cell`` and ``field``
    need nothing fitted. Bernoulli models get values clipped to [0, 1]."""
    if kind == "dataset":
        return Normalizer.from_stats(stats if stats is not None else raw_channel_stats(table, arrays), likelihood)
    if kind == "cell":
        return PerCellRobust(clip=likelihood == "bernoulli")
    if kind == "field":
        return PerFieldRobust(clip=likelihood == "bernoulli")
    raise ValueError(f"normalize: {kind!r} is not one of {NORMALIZATIONS}")


def normalizer_from_record(record: dict):
    """Rebuild the normaliser a model was trained with from its model.json entry."""
    kind = record.get("kind")
    if kind == PerCellMinMax.kind:
        return PerCellMinMax()
    if kind == PerCellRobust.kind:
        return PerCellRobust(record.get("clip", False), tuple(record.get("percentiles", ROBUST_RANGE)))
    if kind == PerFieldRobust.kind:
        return PerFieldRobust(
            record.get("clip", False), tuple(record.get("percentiles", ROBUST_RANGE)), record.get("column", "Metadata_image")
        )
    return Normalizer(record["offset"], record["scale"], record.get("clip", False))


class BatchSource:
    """Items of a sharded array selected by (shard, row), normalised on read."""

    def __init__(self, arrays: ShardedArrays, shards, rows, normalizer: Normalizer):
        self.arrays = arrays
        self.shards = np.asarray(shards)
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.shards) != len(self.rows):
            raise ValueError("shards and rows differ in length")
        self.normalizer = normalizer

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index)
        return self.normalizer(self.arrays.gather(self.shards[index], self.rows[index]), index)

    def raw(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index)
        return self.arrays.gather(self.shards[index], self.rows[index])

    def resident_nbytes(self) -> int:
        """Bytes of all normalised items (float32), as :meth:`resident` holds them."""
        return len(self) * int(np.prod(self.arrays.item_shape or (0,))) * 4

    def resident(self, device):
        """All normalised items as one tensor on ``device`` (``torch.device``), computed once in
        chunks: a ``device_data.ResidentSource`` whose batches equal :meth:`batch`'s, bit for bit.
        """
        from workflow_scripts.device_data import ResidentSource

        return ResidentSource.of(self, device)

    def iter_raw(self, batch_size: int = 512):
        for start in range(0, len(self), batch_size):
            yield self.raw(np.arange(start, min(start + batch_size, len(self))))


def open_shards(paths) -> ShardedArrays:
    """Open shard ``.npy`` files keyed by their stem (``results/x/cells/s0003.npy`` -> ``s0003``)."""
    from pathlib import Path

    return ShardedArrays({Path(p).stem: p for p in paths})


def source_for(table, arrays: ShardedArrays, normalizer: Normalizer) -> BatchSource:
    """Batch source over the rows of a cell or tile table (``Metadata_shard``, ``Metadata_row``);
    a per-field normaliser is bound to the table's fields here."""
    for column in ("Metadata_shard", "Metadata_row"):
        if column not in table.columns:
            raise ValueError(f"table lacks column {column!r} that locates each item in its shard")
    table = table.reset_index(drop=True)
    if getattr(normalizer, "needs_table", False):
        normalizer = normalizer.bind(table, arrays)
    return BatchSource(arrays, table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy(), normalizer)


def pixel_matrix(
    source: BatchSource, downsample: int = 1, batch_size: int = 512, items: range | None = None
) -> np.ndarray:
    """Flattened (normalised) pixels of every item (or of ``items``), optionally block-mean
    downsampled: (N, D)."""
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
    """Per-channel statistics (mean, std, min, max, p01, p99) of the raw pixels of the items of
    ``table``, streamed shard batch by shard batch (``tiles.channel_stats``)."""
    from workflow_scripts.tiles import channel_stats

    return channel_stats(source_for(table, arrays, Normalizer.identity(arrays.item_shape[0])).iter_raw())
