"""Pairs of cells from the same group for paired cell inpainting (PCI; Lu et al. 2019).

Item i of a ``PairedSource`` is a pair (A, B): A is the i-th pairable cell of the table and B
another cell of A's group (same protein / well / image: the group column is configurable). The
partner is drawn afresh every epoch from a generator seeded with (seed, epoch), so the partner
of (epoch, i) is a pure function of (seed, epoch, i) for a given table: a resumed training run
draws the same partners as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workflow_scripts.data import Normalizer, ShardedArrays, item_locations, per_cell_minmax
from workflow_scripts.training.device import ResidentPairedSource, resident_items
from workflow_scripts.training.streams import ShardedItems

__all__ = ["PairedSource"]


class PairedSource(ShardedItems):
    """Like a plain batch source, but ``batch(index)`` returns ``{"source": A, "target": B}``.

    A :class:`~workflow_scripts.training.streams.ResidentCapable` training source; its items
    are the pairable cells, and ``raw`` reads cells A unscaled.

    Parameters
    ----------
    arrays : ShardedArrays
        The crop shards.
    table : DataFrame
        Cell table with ``Metadata_shard``, ``Metadata_row`` and ``group_column``.
    group_column : str
        Column whose equal values define the groups partners are drawn from. Cells whose group
        has fewer than two cells (or is missing, NaN) cannot have a partner and are left out:
        ``mask`` marks the table rows kept, ``n_unpaired`` counts the others, and item i is the
        table row ``positions[i]`` (``table`` holds the kept rows in item order).
    seed : int
        Non-negative seed of the partner draws.
    per_cell_scaling : bool
        Scale each cell's channels to [0, 1] independently
        (:func:`~workflow_scripts.data.per_cell_minmax`), as the reference does.
    normalizer : Normalizer, optional
        Dataset-wide normalisation instead of the per-cell scaling (needs
        ``per_cell_scaling=False``). Neither: raw intensities.

    Raises
    ------
    ValueError
        If a column is missing, the seed is negative, both scalings are asked for, or no group
        has two cells.
    """

    def __init__(
        self,
        arrays: ShardedArrays,
        table: pd.DataFrame,
        group_column: str,
        *,
        seed: int = 0,
        per_cell_scaling: bool = True,
        normalizer: Normalizer | None = None,
    ):
        shards, rows = item_locations(table)
        _check_options(table, group_column, seed, per_cell_scaling, normalizer)
        self.arrays = arrays
        self.group_column = group_column
        self.seed = int(seed)
        self.per_cell_scaling = bool(per_cell_scaling)
        self.normalizer = normalizer
        self.epoch = 0

        codes, _ = pd.factorize(table[group_column], use_na_sentinel=True)
        self.mask, n_groups = _pairable(codes)
        self.n_unpaired = int((~self.mask).sum())
        if not self.mask.any():
            raise ValueError(
                f"no group of column {group_column!r} has two or more cells: no cell can be paired "
                f"({len(table)} cells, {n_groups} groups)"
            )
        self.positions = np.flatnonzero(self.mask)
        self.table = table.iloc[self.positions].reset_index(drop=True)
        self.shards = shards[self.positions]
        self.rows = rows[self.positions]
        self._index_groups(codes[self.positions])
        self._cache: tuple[int, np.ndarray] | None = None
        if getattr(normalizer, "needs_table", False):  # per-field ranges of the kept cells
            self.normalizer = normalizer.bind(self.table, arrays)

    def _index_groups(self, group: np.ndarray) -> None:
        """Index the groups of the kept items, the members of each contiguous in ``_members``."""
        _, self.group = np.unique(group, return_inverse=True)
        self.group_sizes = np.bincount(self.group)
        self._members = np.argsort(self.group, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(self.group_sizes)[:-1]])
        rank = np.empty(len(self.group), dtype=np.int64)
        rank[self._members] = np.arange(len(self.group)) - self._starts[self.group[self._members]]
        self._rank = rank

    @property
    def n_groups(self) -> int:
        """Return the number of groups with at least two cells (those pairs are drawn from)."""
        return len(self.group_sizes)

    def set_epoch(self, epoch: int) -> None:
        """Draw the partners of ``epoch`` from now on (the training loop calls this).

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """
        self.epoch = int(epoch)

    def partners(self, epoch: int | None = None) -> np.ndarray:
        """Return the item index of every item's partner in ``epoch``.

        Item i gets the member ``(rank_i + 1 + r) mod n_g`` of its group g (n_g members, i at
        rank_i), with r uniform in [0, n_g - 2] from a generator seeded by (seed, epoch): always
        another cell of the same group, each equally likely.

        Parameters
        ----------
        epoch : int, optional
            The epoch (default: the current one, :meth:`set_epoch`).

        Returns
        -------
        ndarray of shape (N,), int64
            The partner of each item.

        Raises
        ------
        ValueError
            If ``epoch`` is negative.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        n = self.group_sizes[self.group]
        shift = rng.integers(0, n - 1, endpoint=False) + 1
        partner = self._members[self._starts[self.group] + (self._rank + shift) % n]
        self._cache = (epoch, partner)
        return partner

    def _read(self, items: np.ndarray) -> np.ndarray:
        x = self.arrays.gather(self.shards[items], self.rows[items])
        if self.per_cell_scaling:
            return per_cell_minmax(x)
        if self.normalizer is not None:
            return self.normalizer(x, items).astype(np.float32, copy=False)
        return x

    def batch(self, index) -> dict[str, np.ndarray]:
        """Read the pairs at ``index`` in the current epoch.

        Parameters
        ----------
        index : array_like of int
            Item positions.

        Returns
        -------
        dict of ndarray
            ``{"source": A, "target": B}``: (n, C, H, W) float32 each, scaled as configured.
        """
        index = np.asarray(index, dtype=np.int64)
        return {"source": self._read(index), "target": self._read(self.partners()[index])}

    def resident(self, device: torch.device) -> ResidentPairedSource:
        """Hold the items, scaled as configured, as one tensor on ``device``.

        Parameters
        ----------
        device : torch.device
            Where the items are held.

        Returns
        -------
        ResidentPairedSource
            Still draws the partners per epoch here; its batches equal :meth:`batch`'s, bit
            for bit.
        """
        return ResidentPairedSource(self, resident_items(self._read, len(self), device))


def _check_options(table, group_column, seed, per_cell_scaling, normalizer) -> None:
    """Raise ValueError for a missing group column, a negative seed or two scalings."""
    if group_column not in table.columns:
        raise ValueError(
            f"group column {group_column!r} is not in the cell table (columns: {', '.join(map(str, table.columns))})"
        )
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if per_cell_scaling and normalizer is not None:
        raise ValueError("give a normalizer or per_cell_scaling=True, not both")


def _pairable(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Mark the items whose group (code >= 0) has two or more members; count the groups."""
    valid = codes >= 0
    sizes = np.bincount(codes[valid])
    size_of = np.zeros(len(codes), dtype=np.int64)
    size_of[valid] = sizes[codes[valid]]
    return size_of >= 2, len(sizes)
