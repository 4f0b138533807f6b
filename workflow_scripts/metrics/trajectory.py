"""Backbone metric: how faithfully the features follow a continuous process (cell cycle, dose, time).

Given a true position ``t`` per cell, the cells are binned into quantile bins of ``t``; the
feature centroids of the bins, joined in bin order, form the *latent polyline* -- a
piecewise-linear approximation of the first principal curve through the data. Two kinds of
summary follow:

* its shape: arc length (sum of segment lengths) and *tortuosity*, arc length over the
  straight distance between the first and last centroid (1 for a straight backbone, larger
  when it zig-zags or curls back);
* its order: Spearman and Kendall correlations between the true position and the
  position along the polyline (cumulative arc length), per centroid and per cell.

Positions come from orthogonal projection onto the nearest segment of the polyline, the
first and last segments extended beyond their ends. By default (cross-fitting) a point's
own data are kept out of the polyline it is projected on: the cells are split into folds,
and each fold's cells, and each fold's per-bin centroids, are projected onto the polyline
of the other folds. Without this, a cell pulls its own bin's centroid towards itself and
projects near it, which in high dimension correlates the projections with ``t`` even for
features unrelated to ``t`` (Spearman about 0.3 at 256 features, 200 cells per bin); and a
centroid projected onto the polyline through itself sits at its own cumulative arc length,
which increases with the bin whatever the features.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse, stats

from workflow_scripts.validation import check_int, real_matrix

__all__ = ["backbone", "project_onto_polyline"]


def backbone(
    features: np.ndarray,
    t: np.ndarray,
    n_bins: int = 10,
    *,
    n_folds: int | None = 5,
    seed: int = 0,
    chunk_size: int = 4096,
) -> dict:
    """Backbone of the features along a continuous true position ``t``.

    Parameters
    ----------
    features : ndarray of shape (N, F)
        Real, finite features, one row per cell.
    t : ndarray of shape (N,)
        True position of each cell along the process (real, finite).
    n_bins : int, default=10
        Number of quantile bins of ``t``, ``>= 3``. Bins left empty by tied values of ``t``
        are dropped; at least 3 must remain.
    n_folds : int or None, default=5
        Cross-fitting of the per-cell positions: cells are split into ``n_folds`` folds
        (stratified by bin, shuffled with ``seed``) and each fold is projected onto the
        polyline of the centroids of the other folds (every bin then needs at least 2
        cells). ``None`` projects every cell onto the polyline of all cells (in-sample,
        biased upwards in high dimension; see the module notes).
    seed : int, default=0
        Seed of the fold assignment.
    chunk_size : int, default=4096
        Cells per projection chunk; memory ``O(chunk_size * n_bins)`` beyond the inputs.

    Returns
    -------
    dict
        ``n_bins`` (int, non-empty bins used), ``bin_edges`` (ndarray (n_bins + 1,)
        quantiles of ``t``), ``bin`` (ndarray (N,) int, bin of each cell, 0-based after
        dropping empty bins), ``bin_counts`` and ``bin_t`` (ndarray (B,): cells and mean
        ``t`` per bin), ``centroids`` (ndarray (B, F)), ``segment_lengths`` (ndarray
        (B - 1,)), ``arc_length``, ``chord_length`` (first to last centroid) and
        ``tortuosity`` (their ratio, ``>= 1``; ``inf`` if the chord is 0 and the arc is
        not) as floats, ``centroid_arclength`` (ndarray (B,), cumulative arc length at
        each centroid), ``centroid_position`` (ndarray (B,): the position of each bin's
        centroid projected onto a polyline it did not help build; see Notes),
        ``centroid_spearman`` and
        ``centroid_kendall`` (bin order vs ``centroid_position``), ``cell_position``
        (ndarray (N,)), ``cell_spearman`` and ``cell_kendall`` (``t`` vs
        ``cell_position``). Correlations are NaN when a side is constant.

    Notes
    -----
    All positions are in units of cumulative arc length along the polyline through all
    centroids: a projection onto a segment between the centroids of bins ``u`` and ``v``
    at fraction ``lambda`` sits at ``s_u + lambda (s_v - s_u)``, ``s`` the cumulative arc
    length at the centroids (linear beyond the ends). Polylines that leave a point out
    have other vertices, but this map puts all positions on one scale; rank correlations
    are unaffected by it.

    The position of a centroid along its own polyline would be its cumulative arc
    length, increasing with the bin by construction (a correlation of 1 whatever the
    features). With cross-fitting, a bin's position is instead the mean over folds of the
    projection of the fold's centroid of that bin onto the polyline of the other folds:
    under features unrelated to ``t`` it is as likely to land anywhere, so the
    correlation is centred on 0. With ``n_folds=None`` each centroid is projected onto the
    polyline through the *other* centroids (leave one out); that is slightly biased
    towards negative values under the null (about -0.13 at 10 bins: a left-out early
    centroid lands among later ones on average, and vice versa).
    Kendall's tau is tau-b (ties in ``t`` or positions allowed).
    """
    X = real_matrix(features, "features")
    t = _as_positions(t, X.shape[0])
    check_int("n_bins", n_bins, 3)
    if n_folds is not None:
        check_int("n_folds", n_folds, 2)
    check_int("seed", seed, 0)
    check_int("chunk_size", chunk_size, 1)

    edges, bins, counts, bin_t = _quantile_bins(t, n_bins)
    n_used = len(counts)
    centroids = _centroids(X, bins, n_used)
    shape = _polyline_shape(centroids)
    cum = shape["centroid_arclength"]
    if n_folds is None:
        cell_pos, centroid_pos = _in_sample_positions(X, centroids, cum, chunk_size)
    else:
        cell_pos, centroid_pos = _cross_fitted_positions(X, bins, counts, cum, n_folds, seed, chunk_size)
    c_rho, c_tau = _rank_correlations(np.arange(n_used, dtype=np.float64), centroid_pos)
    p_rho, p_tau = _rank_correlations(t, cell_pos)
    return {
        "n_bins": int(n_used),
        "bin_edges": edges,
        "bin": bins.astype(np.int64),
        "bin_counts": counts,
        "bin_t": bin_t,
        "centroids": centroids,
        "segment_lengths": shape["segment_lengths"],
        "arc_length": shape["arc_length"],
        "chord_length": shape["chord_length"],
        "tortuosity": shape["tortuosity"],
        "centroid_arclength": cum,
        "centroid_position": centroid_pos,
        "centroid_spearman": c_rho,
        "centroid_kendall": c_tau,
        "cell_position": cell_pos,
        "cell_spearman": p_rho,
        "cell_kendall": p_tau,
    }


def _quantile_bins(t: np.ndarray, n_bins: int):
    """Quantile bins of ``t``: ``(edges, bin of each cell, cells per bin, mean t per bin)``.

    Bins left empty by tied values are dropped (the bins are renumbered 0..B-1).
    """
    edges = np.quantile(t, np.linspace(0.0, 1.0, n_bins + 1))
    raw_bin = np.searchsorted(edges[1:-1], t, side="right")
    used, bins = np.unique(raw_bin, return_inverse=True)  # drop bins emptied by ties
    bins = bins.reshape(-1)
    n_used = len(used)
    if n_used < 3:
        raise ValueError(f"t must spread over at least 3 non-empty quantile bins; got {n_used} (too many tied values)")
    counts = np.bincount(bins, minlength=n_used)
    bin_t = np.bincount(bins, weights=t, minlength=n_used) / counts
    return edges, bins, counts, bin_t


def _polyline_shape(centroids: np.ndarray) -> dict:
    """Segment lengths, cumulative arc length, arc and chord length, and tortuosity."""
    seg_len = np.linalg.norm(np.diff(centroids, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    arc = float(cum[-1])
    chord = float(np.linalg.norm(centroids[-1] - centroids[0]))
    if chord > 0:
        # >= 1 by the triangle inequality; the clip only absorbs rounding on straight lines.
        tortuosity = max(arc / chord, 1.0)
    else:
        tortuosity = float("inf") if arc > 0 else float("nan")
    return {
        "segment_lengths": seg_len,
        "centroid_arclength": cum,
        "arc_length": arc,
        "chord_length": chord,
        "tortuosity": float(tortuosity),
    }


def _in_sample_positions(X, centroids, cum, chunk_size):
    """Cells onto the polyline through all centroids; each centroid onto the polyline of the others."""
    n_used = len(centroids)
    cell_pos = project_onto_polyline(X, centroids, cum, chunk_size=chunk_size)
    centroid_pos = np.empty(n_used)
    for b in range(n_used):
        others = np.delete(np.arange(n_used), b)
        centroid_pos[b] = project_onto_polyline(centroids[b : b + 1], centroids[others], cum[others])[0]
    return cell_pos, centroid_pos


def _cross_fitted_positions(X, bins, counts, cum, n_folds, seed, chunk_size):
    """Each fold's cells, and its per-bin centroids, onto the polyline of the other folds.

    A bin's position is the mean over folds of its fold centroid's projection.
    """
    if counts.min() < 2:
        raise ValueError(
            "cross-fitting (n_folds) needs at least 2 cells in every bin; "
            f"smallest bin has {counts.min()} (use fewer bins or n_folds=None)"
        )
    n_used = len(counts)
    folds = _stratified_folds(bins, n_folds, seed)
    cell_pos = np.empty(X.shape[0])
    pos_sum = np.zeros(n_used)
    pos_count = np.zeros(n_used, dtype=np.int64)
    for f in range(n_folds):
        held = folds == f
        if not held.any():
            continue
        # Every bin keeps a cell outside the fold: a fold takes at most ceil(count / n_folds) < count.
        train_centroids = _centroids(X[~held], bins[~held], n_used)
        cell_pos[held] = project_onto_polyline(X[held], train_centroids, cum, chunk_size=chunk_size)
        present = np.flatnonzero(np.bincount(bins[held], minlength=n_used))
        held_centroids = _centroids(X[held], bins[held], n_used)[present]
        pos_sum[present] += project_onto_polyline(held_centroids, train_centroids, cum)
        pos_count[present] += 1
    return cell_pos, pos_sum / pos_count


def project_onto_polyline(
    points: np.ndarray,
    vertices: np.ndarray,
    coords: np.ndarray | None = None,
    *,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Position of each point's orthogonal projection onto the nearest segment of a polyline.

    Parameters
    ----------
    points : ndarray of shape (M, F)
        Points to project.
    vertices : ndarray of shape (K, F)
        Polyline vertices in order, ``K >= 2``. The first and last segments are extended
        beyond their outer ends (to a line when ``K == 2``), so points before the start or
        past the end get positions below the first or above the last coordinate.
    coords : ndarray of shape (K,), optional
        Coordinate of each vertex along the curve (default: cumulative arc length from
        the first vertex). A projection at fraction ``lambda`` of the segment from vertex
        ``s`` to ``s + 1`` is at ``coords[s] + lambda * (coords[s + 1] - coords[s])``.
    chunk_size : int, default=4096
        Points per chunk; memory ``O(chunk_size * K)``.

    Returns
    -------
    ndarray of shape (M,)
        Position of each point. Among segments at exactly the same distance the first
        wins; a zero-length segment counts as its vertex.

    Examples
    --------
    >>> vertices = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    >>> project_onto_polyline(np.array([[0.5, 1.0], [2.0, 1.5], [-1.0, 0.0]]), vertices)
    array([ 2. ,  2.5, -1. ])
    """
    P = real_matrix(points, "points")
    V = real_matrix(vertices, "vertices")
    if V.shape[0] < 2:
        raise ValueError(f"vertices must hold at least 2 points; got {V.shape[0]}")
    if P.shape[1] != V.shape[1]:
        raise ValueError(f"points and vertices must have the same width; got {P.shape[1]} and {V.shape[1]}")
    a = V[:-1]
    d = np.diff(V, axis=0)
    len2 = np.einsum("ij,ij->i", d, d)
    if coords is None:
        coords = np.concatenate([[0.0], np.cumsum(np.sqrt(len2))])
    else:
        coords = np.asarray(coords, dtype=np.float64)
        if coords.shape != (V.shape[0],) or not np.isfinite(coords).all():
            raise ValueError(
                f"coords must be finite with one entry per vertex ({V.shape[0]},); got shape {coords.shape}"
            )
    check_int("chunk_size", chunk_size, 1)
    n_seg = len(a)
    lo = np.zeros(n_seg)
    hi = np.ones(n_seg)
    lo[0] = -np.inf
    hi[-1] = np.inf
    inv_len2 = np.divide(1.0, len2, out=np.zeros(n_seg), where=len2 > 0)
    # Centre on the vertex mean: smaller numbers, less cancellation in |x - a|^2 below.
    centre = V.mean(axis=0)
    a_c = a - centre
    a_sq = np.einsum("ij,ij->i", a_c, a_c)
    a_dot_d = np.einsum("ij,ij->i", a_c, d)
    out = np.empty(P.shape[0])
    for start in range(0, P.shape[0], chunk_size):
        x = P[start : start + chunk_size] - centre
        x_sq = np.einsum("ij,ij->i", x, x)
        along = x @ d.T - a_dot_d  # (x - a).d, (c, n_seg)
        lam = np.clip(along * inv_len2, lo, hi)
        # |x - a - lam d|^2 = |x - a|^2 - 2 lam (x - a).d + lam^2 |d|^2
        dist2 = (x_sq[:, None] - 2.0 * (x @ a_c.T) + a_sq) - 2.0 * lam * along + lam * lam * len2
        seg = np.argmin(dist2, axis=1)
        lam_best = lam[np.arange(len(seg)), seg]
        out[start : start + len(seg)] = coords[seg] + lam_best * (coords[seg + 1] - coords[seg])
    return out


def _centroids(X: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    onehot = sparse.csr_matrix((np.ones(len(bins)), (bins, np.arange(len(bins)))), shape=(n_bins, len(bins)))
    counts = np.bincount(bins, minlength=n_bins)
    return np.asarray(onehot @ X) / np.maximum(counts, 1)[:, None]  # an empty bin (unused) stays 0


def _stratified_folds(bins: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each cell: within every bin, a shuffled round robin over the folds."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(bins), dtype=np.int64)
    offset = 0
    for b in range(bins.max() + 1):
        members = np.flatnonzero(bins == b)
        # Rotate the starting fold per bin so small bins do not all fill fold 0 first.
        folds[rng.permutation(members)] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)
    return folds


def _rank_correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rho = stats.spearmanr(x, y).statistic
        tau = stats.kendalltau(x, y).statistic
    return float(rho), float(tau)


def _as_positions(t, n: int) -> np.ndarray:
    t = np.asarray(t)
    if t.shape != (n,):
        raise ValueError(f"t must be 1-D with one entry per row of features ({n},); got shape {t.shape}")
    if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)) or t.dtype == bool:
        raise ValueError(f"t must hold real numbers; got dtype {t.dtype}")
    t = t.astype(np.float64)
    if not np.isfinite(t).all():
        raise ValueError("t must contain only finite values; found NaN or inf")
    return t
