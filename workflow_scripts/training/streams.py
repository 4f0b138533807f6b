"""Batch streams: the one interface the training loop reads, and the plain stream over a table.

Every batch stream (:class:`BatchSource` here, :class:`~workflow_scripts.training.pairs.PairedSource`,
:class:`~workflow_scripts.training.guided.GuidedSource` and their resident versions in
:mod:`~workflow_scripts.training.device`) implements :class:`TrainingSource`: ``len``,
``batch(index)`` and ``set_epoch(epoch)``. Those whose items a device can hold also implement
:class:`ResidentCapable`. Feature extraction reads the same streams (``batch`` only).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from workflow_scripts.data import Normalizer, ShardedArrays, item_locations

if TYPE_CHECKING:  # torch is imported only where a stream is held on a device
    import torch

    from workflow_scripts.training.device import DeviceSource, ResidentSource

__all__ = ["TrainingSource", "ResidentCapable", "as_training_source", "ShardedItems", "BatchSource", "source_for"]


@runtime_checkable
class TrainingSource(Protocol):
    """What the training loop reads: a stream of batches of ``len(source)`` items.

    ``batch(index)`` gives the items at ``index`` as an (n, C, H, W) array or tensor, or a dict
    of them (per-item values beside the images). ``set_epoch(epoch)`` is called before each
    epoch (validation: epoch 0); sources that draw (paired partners) draw as a function of it,
    so a resumed run draws what an uninterrupted one does, and the others ignore it. A source
    with only ``len`` and ``batch`` is adapted by :func:`as_training_source`. See
    :class:`ResidentCapable` for sources a device can hold.
    """

    def __len__(self) -> int:
        """Return the number of items."""
        ...

    def batch(self, index: np.ndarray) -> Any:
        """Return the items at positions ``index``."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Read the items of ``epoch`` from now on."""
        ...


@runtime_checkable
class ResidentCapable(TrainingSource, Protocol):
    """A :class:`TrainingSource` whose normalised items a device can hold.

    ``resident_nbytes()`` says how many bytes (None: it cannot), ``resident(device)`` builds
    the resident version (:class:`~workflow_scripts.training.device.DeviceSource`).
    """

    def resident_nbytes(self) -> int | None:
        """Return the bytes the resident items take (None: they cannot be held)."""
        ...

    def resident(self, device: torch.device) -> DeviceSource:
        """Return the resident version of the source on ``device``."""
        ...


class _EpochFree:
    """A source that draws nothing per epoch, completed with a ``set_epoch`` that does nothing."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, index):
        return self.source.batch(index)

    def set_epoch(self, epoch: int) -> None:
        pass


def as_training_source(source) -> TrainingSource:
    """Return ``source`` as a :class:`TrainingSource`.

    A source with ``len`` and ``batch`` but no ``set_epoch`` (one that draws nothing per
    epoch, e.g. a test double) is wrapped so that its ``set_epoch`` does nothing; a full
    :class:`TrainingSource` is returned as it is.

    Parameters
    ----------
    source : object
        ``len(source)`` items and ``source.batch(index)``.

    Returns
    -------
    TrainingSource
        ``source`` itself, or the wrapped source.

    Examples
    --------
    >>> class Items:
    ...     def __len__(self):
    ...         return 3
    ...
    ...     def batch(self, index):
    ...         return np.asarray(index) * 10
    >>> stream = as_training_source(Items())
    >>> stream.set_epoch(4)
    >>> len(stream), stream.batch([2, 0]).tolist(), as_training_source(stream) is stream
    (3, [20, 0], True)
    """
    return source if isinstance(source, TrainingSource) else _EpochFree(source)


class ShardedItems:
    """Items read from a sharded array by (shard, row): ``arrays``, ``shards`` and ``rows``.

    What :class:`BatchSource` and
    :class:`~workflow_scripts.training.pairs.PairedSource` share: reading items unscaled, and
    the size of all of them held as float32.
    """

    arrays: ShardedArrays
    shards: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.rows)

    def raw(self, index: np.ndarray) -> np.ndarray:
        """Read the items at ``index`` without scaling them.

        Parameters
        ----------
        index : array_like of int
            Item positions.

        Returns
        -------
        ndarray of shape (n, C, H, W), float32
            The raw items.
        """
        index = np.asarray(index, dtype=np.int64)
        return self.arrays.gather(self.shards[index], self.rows[index])

    def resident_nbytes(self) -> int:
        """Return the bytes of all scaled items (float32), as ``resident`` holds them."""
        return len(self) * int(np.prod(self.arrays.item_shape or (0,))) * 4


class BatchSource(ShardedItems):
    """Items of a sharded array selected by (shard, row), normalised on read.

    Parameters
    ----------
    arrays : ShardedArrays
        The shards.
    shards : array_like of shape (N,)
        Shard name of each item.
    rows : array_like of shape (N,)
        Row of each item in its shard.
    normalizer : Normalizer
        Called with the raw items of a batch and their positions.

    Raises
    ------
    ValueError
        If ``shards`` and ``rows`` differ in length.
    """

    def __init__(self, arrays: ShardedArrays, shards, rows, normalizer: Normalizer):
        self.arrays = arrays
        self.shards = np.asarray(shards)
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.shards) != len(self.rows):
            raise ValueError("shards and rows differ in length")
        self.normalizer = normalizer

    def batch(self, index: np.ndarray) -> np.ndarray:
        """Read and normalise the items at ``index``.

        Parameters
        ----------
        index : array_like of int
            Item positions.

        Returns
        -------
        ndarray of shape (n, C, H, W)
            The normalised items.
        """
        index = np.asarray(index)
        return self.normalizer(self.arrays.gather(self.shards[index], self.rows[index]), index)

    def set_epoch(self, epoch: int) -> None:
        """Draw nothing: the items are the same in every epoch.

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """

    def resident(self, device: torch.device) -> ResidentSource:
        """Hold all normalised items as one tensor on ``device``, computed once in chunks.

        Parameters
        ----------
        device : torch.device
            Where the items are held.

        Returns
        -------
        ResidentSource
            Its batches equal :meth:`batch`'s, bit for bit.
        """
        # Lazy: torch only where a stream is held on a device (feature extraction reads these
        # streams without it).
        from workflow_scripts.training.device import ResidentSource

        return ResidentSource.of(self, device)

    def iter_raw(self, batch_size: int = 512) -> Iterator[np.ndarray]:
        """Read all raw items in consecutive batches.

        Parameters
        ----------
        batch_size : int, default=512
            Items per batch.

        Yields
        ------
        ndarray of shape (<= batch_size, C, H, W), float32
            The next raw items.
        """
        return self.arrays.iter_gather(self.shards, self.rows, batch_size)


def source_for(table, arrays: ShardedArrays, normalizer: Normalizer) -> BatchSource:
    """Build the batch source over the rows of a cell or tile table.

    A per-field normaliser is bound to the table's fields here.

    Parameters
    ----------
    table : DataFrame
        The items (``Metadata_shard``, ``Metadata_row``); item i is its i-th row.
    arrays : ShardedArrays
        Their shards.
    normalizer : Normalizer or PerCellRobust or PerFieldRobust or PerCellMinMax
        Applied on read.

    Returns
    -------
    BatchSource
        The source.

    Raises
    ------
    ValueError
        If ``table`` lacks a location column.
    """
    shards, rows = item_locations(table)
    table = table.reset_index(drop=True)
    if getattr(normalizer, "needs_table", False):
        normalizer = normalizer.bind(table, arrays)
    return BatchSource(arrays, shards, rows, normalizer)
