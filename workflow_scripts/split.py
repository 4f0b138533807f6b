"""Train/validation split by whole groups (e.g. fields of view, wells, plates).

Splitting by cell or by tile puts neighbouring, near-duplicate crops on both sides and
inflates validation scores; a group is therefore never split.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["split_by_group"]


def split_by_group(groups: Sequence, val_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Assign whole groups to training or validation.

    Parameters
    ----------
    groups : sequence of shape (N,)
        Group name of each row (str or int). Names are compared as strings.
    val_fraction : float, default=0.2
        Fraction of the *groups* (not rows) that go to validation, in ``(0, 1)``. The
        number of validation groups is ``round(val_fraction * n_groups)``, clipped so
        both sides get at least one group.
    seed : int, default=0
        Seed mixed into the group hashes.

    Returns
    -------
    ndarray of shape (N,), dtype bool
        True for validation rows, False for training rows.

    Notes
    -----
    Each group name is hashed together with the seed (SHA-256) and the groups with the
    smallest hashes go to validation. The split therefore depends only on the seed and
    the set of group names, not on row order or on the process (unlike Python's
    ``hash``), and adding a group later moves at most one existing group across the
    boundary instead of reshuffling everything.

    Raises
    ------
    ValueError
        If ``groups`` is not 1-D or has fewer than two distinct groups, or
        ``val_fraction`` is not in ``(0, 1)``.

    Examples
    --------
    Two of four groups validate, whole, whatever the row order:

    >>> split_by_group(["a", "a", "b", "c", "c", "d"], 0.5, seed=0).tolist()
    [False, False, False, True, True, True]
    >>> split_by_group(["d", "c", "a", "b"], 0.5, seed=0).tolist()
    [True, True, False, False]
    """
    if isinstance(groups, (str, bytes)):
        raise ValueError(f"groups must be a sequence of group names, not a string; got {groups!r}")
    names = np.asarray(groups)
    if names.ndim != 1:
        raise ValueError(f"groups must be 1-D (one name per row); got shape {names.shape}")
    if (
        not isinstance(val_fraction, numbers.Real)
        or isinstance(val_fraction, bool)
        or not 0.0 < val_fraction < 1.0
    ):
        raise ValueError(f"val_fraction must be a number in (0, 1); got {val_fraction!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")

    # Strings, so that mixed or object-typed names sort and hash consistently.
    unique, row_group = np.unique(names.astype(str), return_inverse=True)
    n_groups = len(unique)
    if n_groups < 2:
        raise ValueError(
            f"groups must contain at least 2 distinct groups to split; got {unique.tolist()!r}"
        )
    n_val = min(max(int(np.floor(val_fraction * n_groups + 0.5)), 1), n_groups - 1)

    keys = [hashlib.sha256(f"{int(seed)}\0{name}".encode()).digest() for name in unique]
    # Ties between digests are practically impossible; the name breaks them anyway.
    order = sorted(range(n_groups), key=lambda g: (keys[g], unique[g]))
    is_val_group = np.zeros(n_groups, dtype=bool)
    is_val_group[order[:n_val]] = True
    return is_val_group[row_group]
