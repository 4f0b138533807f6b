"""Seeded, class-stratified subsampling of rows (to cap the cost of O(N^2) metrics)."""

from __future__ import annotations

import numbers

import numpy as np

from workflow_scripts.validation import check_int

__all__ = ["stratified_subsample"]


def stratified_subsample(labels: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_n`` rows with the class proportions preserved.

    Parameters
    ----------
    labels : ndarray of shape (N,)
        Class of each row; any sortable values (int, str, ...).
    max_n : int
        Maximum number of rows to keep, ``>=`` the number of classes (every class present
        keeps at least one row).
    seed : int
        Seed of ``numpy.random.default_rng``; the same labels and seed give the same rows.

    Returns
    -------
    ndarray of shape (min(N, max_n),), dtype intp
        Ascending row indices. All of ``range(N)`` when ``N <= max_n``.

    Notes
    -----
    Class quotas are ``max_n * n_c / N`` rounded by the largest-remainder method, so each
    class gets within one row of its exact share, except that a class whose share is
    below one row still gets one row (taken back from the most over-served classes).
    Hand-written rather than ``train_test_split(stratify=...)``, which refuses classes
    with a single member and does not guarantee every class a row.

    Examples
    --------
    >>> stratified_subsample(np.array(["a"] * 6 + ["b"] * 2), 4, seed=0)
    array([3, 4, 5, 6])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array; got shape {labels.shape}")
    check_int("max_n", max_n, 1)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    n = len(labels)
    if n <= max_n:
        return np.arange(n, dtype=np.intp)

    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if max_n < len(classes):
        raise ValueError(
            f"max_n must be at least the number of classes ({len(classes)}) so that every "
            f"class keeps a row; got max_n={max_n}"
        )
    quotas = _quotas(counts, int(max_n))

    rng = np.random.default_rng(int(seed))
    # Stable argsort groups rows by class, each class's rows in ascending order, so the
    # draw depends only on (labels, seed).
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    chosen = [rng.choice(rows, size=q, replace=False) for rows, q in zip(by_class, quotas)]
    return np.sort(np.concatenate(chosen)).astype(np.intp, copy=False)


def _quotas(counts: np.ndarray, max_n: int) -> np.ndarray:
    """Rows per class: largest-remainder apportionment of ``max_n``, at least 1 each.

    Requires ``len(counts) <= max_n < counts.sum()``.
    """
    share = counts * (max_n / counts.sum())
    quotas = np.maximum(np.floor(share), 1).astype(np.int64)
    # One row at a time, at most len(counts) steps: add to the most under-served class
    # (largest remainder) or, if the at-least-one rule overshot, take from the most
    # over-served class that can spare a row.
    while (excess_rows := int(quotas.sum()) - max_n) != 0:
        excess = quotas - share
        if excess_rows < 0:
            quotas[np.argmin(np.where(quotas < counts, excess, np.inf))] += 1
        else:
            quotas[np.argmax(np.where(quotas > 1, excess, -np.inf))] -= 1
    return quotas
