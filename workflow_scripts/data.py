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

    def __call__(self, x: np.ndarray) -> np.ndarray:
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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from workflow_scripts.pairs import per_cell_minmax

        return per_cell_minmax(x)

    def invert(self, y: np.ndarray) -> np.ndarray:
        return y

    def to_record(self) -> dict:
        return {"kind": self.kind}


def normalizer_from_record(record: dict):
    """Rebuild the normaliser a model was trained with from its model.json entry."""
    if record.get("kind") == PerCellMinMax.kind:
        return PerCellMinMax()
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
        return self.normalizer(self.arrays.gather(self.shards[index], self.rows[index]))

    def raw(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index)
        return self.arrays.gather(self.shards[index], self.rows[index])

    def iter_raw(self, batch_size: int = 512):
        for start in range(0, len(self), batch_size):
            yield self.raw(np.arange(start, min(start + batch_size, len(self))))


def open_shards(paths) -> ShardedArrays:
    """Open shard ``.npy`` files keyed by their stem (``results/x/cells/s0003.npy`` -> ``s0003``)."""
    from pathlib import Path

    return ShardedArrays({Path(p).stem: p for p in paths})


def source_for(table, arrays: ShardedArrays, normalizer: Normalizer) -> BatchSource:
    """Batch source over the rows of a cell or tile table (``Metadata_shard``, ``Metadata_row``)."""
    for column in ("Metadata_shard", "Metadata_row"):
        if column not in table.columns:
            raise ValueError(f"table lacks column {column!r} that locates each item in its shard")
    return BatchSource(arrays, table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy(), normalizer)


def pixel_matrix(source: BatchSource, downsample: int = 1, batch_size: int = 512) -> np.ndarray:
    """Flattened (normalised) pixels of every item, optionally block-mean downsampled: (N, D)."""
    parts = []
    for start in range(0, len(source), batch_size):
        x = source.batch(np.arange(start, min(start + batch_size, len(source))))
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

    channels = arrays.item_shape[0]
    identity = Normalizer([0.0] * channels, [1.0] * channels)
    return channel_stats(source_for(table, arrays, identity).iter_raw())
