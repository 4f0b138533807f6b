"""Same-class retrieval: mean average precision by cosine similarity, in the manner of copairs.

Each row (a cell, or a well profile from :func:`aggregate_profiles`) is a query. All other
rows are ranked by cosine similarity to it; the *positives* are the rows with the query's
label, the *negatives* those with another label. The query's average precision (AP) is the
mean, over its positives, of the precision of the ranked list cut at that positive::

    AP(q) = 1 / P * sum_{positives j} #{positives ranked at or above j} / #{rows ranked at or above j}

mAP averages AP over the queries (of one class, or of all). A random ranking scores about
the fraction of positives among the ranked rows; 1 means every positive outranks every
negative.

Like copairs (``pos_sameby=[label]``, ``pos_diffby=[group]``, ``neg_diffby=[label]``), pairs
that share a group (well, plate, ...) can be barred from being positives, so a class is not
retrieved through a shared batch; and the negatives can be restricted (e.g. to control
wells). Rows are processed in chunks of queries: memory ``O(N * chunk_size)``, never
``O(N^2)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

from workflow_scripts.io import feature_columns
from workflow_scripts.validation import check_int, real_matrix

__all__ = ["mean_average_precision", "aggregate_profiles", "group_profiles", "map_permutation_pvalues"]

# Rows per block of the ranking step inside a chunk: the sort and its cumulative sums hold
# about six (rows, N) arrays, kept small next to the (chunk_size, N) similarity rows.
_AP_BLOCK_ROWS = 128


def mean_average_precision(
    features: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    *,
    exclude_same: Sequence[Hashable] | np.ndarray | None = None,
    negative_filter: Sequence[bool] | np.ndarray | None = None,
    chunk_size: int = 2048,
) -> dict:
    """Mean average precision of retrieving same-label rows by cosine similarity.

    Parameters
    ----------
    features : ndarray of shape (N, F)
        Real, finite features; no row may be all zeros (its cosine similarity is undefined).
    labels : array-like of shape (N,)
        Class of each row (any hashable, sortable values). Positives of a query are the
        other rows with its label.
    exclude_same : array-like of shape (N,), optional
        A group per row (e.g. well or plate). A row sharing the query's group and label is
        not a positive and is left out of the ranking (copairs' ``pos_diffby``); rows
        sharing its group with another label stay negatives.
    negative_filter : array-like of bool, shape (N,), optional
        Rows allowed to be negatives (e.g. controls only); other rows with a different
        label are left out of the ranking.
    chunk_size : int, default=2048
        Queries per chunk. Peak extra memory is about ``chunk_size * N * 8`` bytes
        (similarity rows) plus ``128 * N * 40`` bytes (ranking).

    Returns
    -------
    dict
        ``map`` (float): mean AP over all queries that have positives; ``per_class``
        (dict label -> float): mean AP over the queries of each class (NaN if none has a
        positive); ``ap`` (ndarray (N,)): AP of each query, NaN where it has no positive;
        ``n_positives`` and ``n_negatives`` (ndarray (N,) int): sizes of each query's
        ranked list; ``positive_rate`` (float): mean over the scored queries of
        ``P / (P + negatives)``, about the mAP of random features.

    Notes
    -----
    Exact ties in similarity are scored as scikit-learn's ``average_precision_score``
    does (a tied block counts as one threshold), so each query's AP equals
    ``average_precision_score(is_positive, similarity)`` over its ranked rows. copairs
    breaks ties by sort order instead; without ties the two agree. Ties are exact equality
    of the float64 similarities (duplicate profiles); values equal only up to rounding are
    ordered as computed. A query with positives but no negative has AP 1.

    Examples
    --------
    For each "a" query the "b" row ranks above the other "a" row, so each scores AP 1/2; the
    "b" row has no positive:

    >>> result = mean_average_precision(np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), ["a", "a", "b"])
    >>> result["map"], result["per_class"]
    (0.5, {'a': 0.5, 'b': nan})
    """
    F = _unit_rows(features)
    n = F.shape[0]
    codes, classes = _codes(labels, n, "labels")
    groups = None if exclude_same is None else _codes(exclude_same, n, "exclude_same")[0]
    neg_ok = _bool_mask(negative_filter, n)
    check_int("chunk_size", chunk_size, 1)

    ap = np.empty(n, dtype=np.float64)
    n_pos = np.empty(n, dtype=np.int64)
    n_neg = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        sim = _similarity_rows(F, rows)
        for b in range(0, len(rows), _AP_BLOCK_ROWS):
            sub = rows[b : b + _AP_BLOCK_ROWS]
            pos, valid = _pairs(sub, codes, groups, neg_ok)
            ap[sub] = _average_precision(sim[b : b + _AP_BLOCK_ROWS], pos, valid)
            n_pos[sub] = np.count_nonzero(pos, axis=1)
            n_neg[sub] = np.count_nonzero(valid, axis=1) - n_pos[sub]
        del sim

    scored = n_pos > 0
    per_class = {}
    for c, label in enumerate(classes):
        members = scored & (codes == c)
        per_class[label] = float(ap[members].mean()) if members.any() else float("nan")
    return {
        "map": float(ap[scored].mean()) if scored.any() else float("nan"),
        "per_class": per_class,
        "ap": ap,
        "n_positives": n_pos,
        "n_negatives": n_neg,
        "positive_rate": float(np.mean(n_pos[scored] / (n_pos[scored] + n_neg[scored])))
        if scored.any()
        else float("nan"),
    }


def map_permutation_pvalues(
    features: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    n_permutations: int = 1000,
    seed: int = 0,
    *,
    exclude_same: Sequence[Hashable] | np.ndarray | None = None,
    negative_filter: Sequence[bool] | np.ndarray | None = None,
    chunk_size: int = 1024,
) -> dict:
    """Per-class mAP with a label-permutation p-value.

    The null distribution of a class's mAP comes from shuffling the labels over the rows
    (features, groups and the negative filter stay with their rows) and recomputing that
    class's mAP, ``n_permutations`` times::

        p(class) = (1 + #{permutations with mAP >= observed mAP}) / (1 + n_permutations)

    (the +1 counts the observed labelling as one of the permutations, so ``p > 0``).

    Parameters
    ----------
    features : ndarray of shape (N, F)
        Real, finite features, no all-zero row.
    labels : array-like of shape (N,)
        Class of each row.
    n_permutations : int, default=1000
        Number of label permutations, ``>= 1``; the smallest attainable p-value is
        ``1 / (1 + n_permutations)``.
    seed : int, default=0
        Seed of the permutations; results are deterministic for a fixed seed and do not
        depend on ``chunk_size``.
    exclude_same, negative_filter
        As in :func:`mean_average_precision`.
    chunk_size : int, default=1024
        Queries per chunk; memory ``O(N * chunk_size)``.

    Returns
    -------
    dict
        ``per_class`` (dict label -> float): observed mAP, equal to
        :func:`mean_average_precision`'s; ``pvalue`` (dict label -> float);
        ``null_mean`` (dict label -> float): mean mAP under permutation;
        ``n_permutations`` (int).

    Notes
    -----
    Similarities are sorted once per chunk and reused by every permutation, but each
    permutation still re-scores every query: time ``O(n_permutations * N^2)``. Meant for
    aggregated profiles (hundreds to a few thousand rows), as in copairs; for single cells
    aggregate first (:func:`aggregate_profiles`). A class whose observed mAP is NaN (no
    query with a positive) gets a NaN p-value.
    """
    F = _unit_rows(features)
    n = F.shape[0]
    codes, classes = _codes(labels, n, "labels")
    groups = None if exclude_same is None else _codes(exclude_same, n, "exclude_same")[0]
    neg_ok = _bool_mask(negative_filter, n)
    check_int("n_permutations", n_permutations, 1)
    check_int("seed", seed, 0)
    check_int("chunk_size", chunk_size, 1)
    n_classes = len(classes)
    codes = codes.astype(np.int32)

    # Sums and counts of scored APs per (labelling, class); labelling 0 is the observed one.
    ap_sum = np.zeros((n_permutations + 1, n_classes))
    ap_count = np.zeros((n_permutations + 1, n_classes), dtype=np.int64)
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        sim = _similarity_rows(F, rows)
        for b in range(0, len(rows), _AP_BLOCK_ROWS):
            sub = rows[b : b + _AP_BLOCK_ROWS]
            ranking = _Ranking(sim[b : b + _AP_BLOCK_ROWS], sub, groups, neg_ok)
            # The same permutations for every block of queries: one stream, restarted.
            rng = np.random.default_rng(seed)
            for p in range(n_permutations + 1):
                lab = codes if p == 0 else codes[rng.permutation(n)]
                ap = ranking.average_precision(lab)
                ok = ~np.isnan(ap)
                q_lab = lab[sub][ok]
                ap_sum[p] += np.bincount(q_lab, weights=ap[ok], minlength=n_classes)
                ap_count[p] += np.bincount(q_lab, minlength=n_classes)
        del sim

    with np.errstate(invalid="ignore", divide="ignore"):
        maps = ap_sum / ap_count  # NaN where a class had no scored query
    observed, null = maps[0], maps[1:]
    # A tolerance well below any real AP difference: a permutation that reproduces the
    # observed grouping must count as "at least as good" despite summation order.
    exceed = np.sum(null >= observed[None, :] - 1e-12, axis=0)
    pvalue = np.where(np.isnan(observed), np.nan, (1 + exceed) / (1 + n_permutations))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN class: NaN, no warning
        null_mean = np.nanmean(null, axis=0)
    return {
        "per_class": {label: float(observed[c]) for c, label in enumerate(classes)},
        "pvalue": {label: float(pvalue[c]) for c, label in enumerate(classes)},
        "null_mean": {label: float(null_mean[c]) for c, label in enumerate(classes)},
        "n_permutations": int(n_permutations),
    }


def aggregate_profiles(
    table: pd.DataFrame,
    by: str | Sequence[str],
    features: Sequence[str],
    how: str = "mean",
    *,
    count_column: str | None = None,
) -> pd.DataFrame:
    """Aggregate rows (cells) into profiles, one per combination of the ``by`` columns.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per cell with metadata and feature columns.
    by : str or sequence of str
        Grouping columns (e.g. ``["plate", "well"]``), carried into the result; each
        group's label columns should be constant within the group (include them in ``by``).
    features : sequence of str
        Numeric feature columns to aggregate; values must be finite.
    how : {"mean", "median"}, default="mean"
        Per-feature aggregation.
    count_column : str, optional
        If given, a column of that name with the number of rows in each group is added.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by the ``by`` columns: the ``by`` columns, then the
        aggregated ``features`` (float64), then ``count_column`` if requested; a fresh
        ``RangeIndex``.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame; got {type(table).__name__}")
    by = [by] if isinstance(by, str) else list(by)
    features = [features] if isinstance(features, str) else list(features)
    if not by:
        raise ValueError("by must name at least one grouping column; got []")
    if not features:
        raise ValueError("features must name at least one feature column; got []")
    if how not in ("mean", "median"):
        raise ValueError(f"how must be 'mean' or 'median'; got {how!r}")
    missing = [c for c in by + features if c not in table.columns]
    if missing:
        raise ValueError(f"columns not in table: {missing}")
    overlap = set(by) & set(features)
    if overlap:
        raise ValueError(f"columns cannot be both grouping (by) and features: {sorted(overlap)}")
    if count_column is not None and count_column in by + features:
        raise ValueError(f"count_column {count_column!r} clashes with a by or feature column")
    if len(table) == 0:
        raise ValueError("table has no rows")
    if table[by].isna().to_numpy().any():
        raise ValueError(f"grouping columns {by} contain missing values")
    values = table[features]
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(values[c]) or values[c].dtype == bool]
    if non_numeric:
        raise ValueError(f"feature columns must be numeric; got non-numeric {non_numeric}")
    if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
        raise ValueError("feature columns must contain only finite values; found NaN or inf")

    grouped = table[by + features].astype({c: np.float64 for c in features}).copy().groupby(by, sort=True)
    out = grouped[features].mean() if how == "mean" else grouped[features].median()
    if count_column is not None:
        out = pd.concat([out, grouped.size().rename(count_column)], axis=1)
    return out.reset_index()


def group_profiles(table: pd.DataFrame, by: str, how: str = "median", *, source="") -> pd.DataFrame:
    """Aggregate a feature table into one profile per ``by`` group, for pycytominer and copairs.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per cell: ``Metadata_*`` columns and feature columns.
    by : str
        The grouping column (``profiles.by``: well, field, treatment, ...).
    how : {"mean", "median"}, optional
        Per-feature aggregation (:func:`aggregate_profiles`).
    source : str or os.PathLike, optional
        Where the table was read from, named in error messages.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by ``by``: the ``Metadata_*`` columns first (``by``, the
        metadata constant within every group, such as class, plate or treatment, and
        ``Metadata_n_cells``), then the aggregated features.

    Raises
    ------
    ValueError
        If ``by`` is not a column of ``table``, or as :func:`aggregate_profiles`.
    """
    if by not in table.columns:
        raise ValueError(f"{source}: profiles.by column {by!r} is missing")
    # Keep the metadata that is constant within a group (class, plate, treatment, ...).
    meta = [c for c in table.columns if c.startswith("Metadata_") and c != by]
    constant = [c for c in meta if (table.groupby(by)[c].nunique(dropna=False) <= 1).all()]
    profiles = aggregate_profiles(table, [by], feature_columns(table), how=how, count_column="Metadata_n_cells")
    first = table.groupby(by, sort=True)[constant].first().reset_index()
    profiles = first.merge(profiles, on=by, how="right")
    meta_cols = [c for c in profiles.columns if c.startswith("Metadata_")]
    return profiles[meta_cols + [c for c in profiles.columns if c not in meta_cols]]


class _Ranking:
    """One block of queries' rows sorted by similarity, re-scored for any labelling."""

    def __init__(self, sim: np.ndarray, rows: np.ndarray, groups: np.ndarray | None, neg_ok: np.ndarray | None):
        c, n = sim.shape
        s = sim.copy()
        s[np.arange(c), rows] = -np.inf  # the query itself: sorted last, never ranked
        self.order = np.argsort(-s, axis=1, kind="stable")
        s_sorted = np.take_along_axis(s, self.order, axis=1)
        self.rows = rows
        self.other_group = None if groups is None else groups[self.order] != groups[rows][:, None]
        self.neg_ok = None if neg_ok is None else neg_ok[self.order]
        self.end = _tie_block_ends(s_sorted)

    def average_precision(self, lab: np.ndarray) -> np.ndarray:
        """Return the AP of each query of the block under the labelling ``lab``.

        Parameters
        ----------
        lab : numpy.ndarray
            Class code of every row (N,).

        Returns
        -------
        numpy.ndarray
            AP per query; NaN where a query has no positive.
        """
        same = lab[self.order] == lab[self.rows][:, None]
        pos = same.copy()
        pos[:, -1] = False  # the query itself (its label matches, so it is no negative either)
        if self.other_group is not None:
            pos &= self.other_group
        neg = ~same
        if self.neg_ok is not None:
            neg &= self.neg_ok
        valid = pos | neg
        return _ap_sorted(pos, valid, self.end)


def _pairs(rows, codes, groups, neg_ok):
    """Positive and ranked (positive or negative) masks ``(len(rows), N)`` of a block of queries."""
    same = codes[None, :] == codes[rows][:, None]
    pos = same.copy()
    pos[np.arange(len(rows)), rows] = False
    if groups is not None:
        pos &= groups[None, :] != groups[rows][:, None]
    neg = ~same
    if neg_ok is not None:
        neg &= neg_ok[None, :]
    return pos, pos | neg


def _average_precision(sim: np.ndarray, pos: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """AP per row of ``sim`` over the ``valid`` columns, ``pos`` marking positives; NaN without positives.

    AP is the mean over positives ``j`` of ``#{positives >= s_j} / #{ranked >= s_j}``, which
    is scikit-learn's step-wise AP with tied scores as one threshold. Both counts come from
    binary searches in sorted values: a value sort is several times faster than the
    argsort a cumulative-sum formulation would need.
    """
    c, n = sim.shape
    sorted_valid = np.sort(np.where(valid, sim, -np.inf), axis=1)  # unranked columns first, as -inf
    sorted_pos = np.sort(np.where(pos, sim, -np.inf), axis=1)  # the P positives last
    n_pos = np.count_nonzero(pos, axis=1)
    ap = np.full(c, np.nan)
    for r in np.flatnonzero(n_pos):
        keys = sorted_pos[r, n - n_pos[r] :]  # the positives' similarities, ascending
        ranked_ge = n - np.searchsorted(sorted_valid[r], keys, side="left")
        pos_ge = n_pos[r] - np.searchsorted(keys, keys, side="left")
        ap[r] = np.mean(pos_ge / ranked_ge)
    return ap


def _tie_block_ends(s_sorted: np.ndarray) -> np.ndarray | None:
    """Index of the last entry of each entry's block of equal values (rows sorted), or None without ties."""
    c, n = s_sorted.shape
    is_end = np.ones((c, n), dtype=bool)
    np.not_equal(s_sorted[:, 1:], s_sorted[:, :-1], out=is_end[:, :-1])
    # Ties among the unranked (-inf) tail do not matter: nothing there is scored.
    is_end[:, :-1] |= np.isneginf(s_sorted[:, :-1])
    if is_end.all():
        return None
    idx = np.where(is_end, np.arange(n, dtype=np.int64)[None, :], n)
    # The next block end at or after each position: a running minimum from the right.
    return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]


def _ap_sorted(pos: np.ndarray, valid: np.ndarray, end: np.ndarray | None) -> np.ndarray:
    """AP per row from masks already in ranking order; tied blocks share their end's precision."""
    c = pos.shape[0]
    # int32 running sums along rows are an order of magnitude faster than int64 ones in numpy.
    tp = np.cumsum(pos, axis=1, dtype=np.int32)
    seen = np.cumsum(valid, axis=1, dtype=np.int32)
    n_pos = tp[:, -1].astype(np.int64)
    if end is not None:
        tp = np.take_along_axis(tp, end, axis=1)
        seen = np.take_along_axis(seen, end, axis=1)
    # Precision at each positive only (boolean selection is row-major, so rows stay grouped).
    precision = tp[pos] / seen[pos]
    sums = np.bincount(np.repeat(np.arange(c), n_pos), weights=precision, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / np.where(n_pos > 0, n_pos, np.nan)


def _similarity_rows(F: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine similarities ``(len(rows), N)`` of unit rows ``F[rows]`` to all rows.

    A single row is computed as part of a two-row product: numpy sends a one-row product to
    BLAS gemv, whose summation order can differ from gemm's by an ulp, which would split
    exactly tied similarities (duplicate profiles) differently depending on ``chunk_size``.
    """
    if len(rows) == 1:
        return (F[np.repeat(rows, 2)] @ F.T)[:1]
    return F[rows] @ F.T


def _unit_rows(features) -> np.ndarray:
    F = real_matrix(features, "features", min_rows=2)
    norms = np.linalg.norm(F, axis=1)
    if (norms == 0).any():
        raise ValueError(
            f"features has {int(np.sum(norms == 0))} all-zero row(s): cosine similarity is undefined for them"
        )
    return F / norms[:, None]


def _codes(values, n: int, name: str) -> tuple[np.ndarray, list]:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one entry per row ({n}); got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    try:
        uniques, codes = np.unique(arr, return_inverse=True)
    except TypeError as err:
        raise ValueError(f"{name} must hold mutually comparable values: {err}") from err
    return codes.reshape(-1).astype(np.int64), [u.item() if isinstance(u, np.generic) else u for u in uniques]


def _bool_mask(mask, n: int) -> np.ndarray | None:
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype != bool or arr.shape != (n,):
        raise ValueError(
            f"negative_filter must be a boolean array of shape ({n},); got dtype {arr.dtype}, shape {arr.shape}"
        )
    return arr
