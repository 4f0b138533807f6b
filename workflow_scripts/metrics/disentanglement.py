"""Disentanglement of latent codes with respect to known generative factors: MIG and SAP.

Both follow the disentanglement_lib reference implementations (Locatello et al. 2019):

* **MIG**, mutual information gap (Chen et al. 2018): each latent dimension is discretised
  into ``n_bins`` equal-width histogram bins; for each factor ``k`` the mutual information
  ``I(z_j; v_k)`` with every dimension ``j`` is computed, and the gap between the largest
  and the second largest, divided by the factor's entropy ``H(v_k)``, is averaged over
  factors. 1: each factor is captured by one dimension alone; 0: no dimension is
  privileged.
* **SAP**, separated attribute predictability (Kumar et al. 2018): a score per (dimension,
  factor) -- the ``R^2`` of a linear regression of a continuous factor on the single
  dimension, or the test accuracy of a linear classifier of a discrete factor from it --
  and the mean over factors of the difference between the two highest scores.

Factors may be discrete (class labels, used as they are for MI) or continuous (discretised
with the same histogram binning as the codes for MI, scored by ``R^2`` in SAP).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from workflow_scripts.validation import check_int, real_matrix

__all__ = ["histogram_discretize", "mig", "sap"]


def histogram_discretize(values: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Discretise each column into ``n_bins`` equal-width bins over its own range.

    The disentanglement_lib ``_histogram_discretize``: bin edges from ``np.histogram``,
    labels ``1 .. n_bins`` by ``np.digitize`` against the lower edges (the maximum falls in
    the last bin).

    Parameters
    ----------
    values : ndarray of shape (N, D) or (N,)
        Real, finite values.
    n_bins : int, default=20
        Number of bins per column, ``>= 2``.

    Returns
    -------
    ndarray of int64, same shape as ``values``
        Bin label of each value, in ``1 .. n_bins``.

    Examples
    --------
    >>> histogram_discretize(np.array([0.0, 0.1, 0.5, 1.0]), n_bins=2)
    array([1, 1, 2, 2])
    """
    one_d = np.ndim(values) == 1
    A = real_matrix(values, "values", min_rows=2, vector_ok=True)
    check_int("n_bins", n_bins, 2)
    out = np.empty(A.shape, dtype=np.int64)
    for j in range(A.shape[1]):
        edges = np.histogram(A[:, j], bins=n_bins)[1]
        out[:, j] = np.digitize(A[:, j], edges[:-1])
    return out[:, 0] if one_d else out


def mig(
    codes: np.ndarray,
    factors: np.ndarray,
    *,
    n_bins: int = 20,
    discrete: bool | Sequence[bool] | None = None,
) -> dict:
    """Mutual information gap of latent ``codes`` with respect to ground-truth ``factors``.

    Parameters
    ----------
    codes : ndarray of shape (N, D)
        Latent codes (e.g. posterior means), ``D >= 2``; real and finite.
    factors : ndarray of shape (N, K) or (N,)
        Ground-truth factors of variation, real and finite.
    n_bins : int, default=20
        Histogram bins per code dimension and per continuous factor (disentanglement_lib
        uses 20).
    discrete : bool or sequence of bool, optional
        Which factors are discrete (their distinct values are the classes). Default: a
        factor is discrete if all its values are integers and it has at most ``n_bins``
        distinct values.

    Returns
    -------
    dict
        ``mig`` (float): mean gap over factors with non-zero entropy (NaN if none);
        ``per_factor`` (ndarray (K,)): normalised gap per factor, NaN for a constant
        factor; ``mutual_information`` (ndarray (D, K), nats); ``entropy`` (ndarray (K,),
        nats); ``discrete`` (ndarray (K,) bool): the factor types used.

    Notes
    -----
    Mutual information is ``sklearn.metrics.mutual_info_score`` on the discretised
    values (plug-in estimate, natural log), which is biased upwards by about
    ``(bins_z - 1)(bins_v - 1) / (2 N)``: with few samples, unrelated dimensions do not
    score exactly 0.
    """
    Z, V = _codes_and_factors(codes, factors, n_bins)
    is_discrete = _factor_types(V, discrete, n_bins)
    z_disc = histogram_discretize(Z, n_bins)
    v_disc = _discrete_factors(V, is_discrete, n_bins)
    K = V.shape[1]
    mi = np.stack([_columns_mutual_information(z_disc, v_disc[:, k]) for k in range(K)], axis=1)
    entropy = np.array([mutual_info_score(v_disc[:, k], v_disc[:, k]) for k in range(K)])
    top = np.sort(mi, axis=0)[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_factor = np.where(entropy > 0, (top[0] - top[1]) / entropy, np.nan)
    valid = ~np.isnan(per_factor)
    return {
        "mig": float(per_factor[valid].mean()) if valid.any() else float("nan"),
        "per_factor": per_factor,
        "mutual_information": mi,
        "entropy": entropy,
        "discrete": is_discrete,
    }


def sap(
    codes: np.ndarray,
    factors: np.ndarray,
    *,
    discrete: bool | Sequence[bool] | None = None,
    n_bins: int = 20,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> dict:
    """Separated attribute predictability of latent ``codes`` with respect to ``factors``.

    Parameters
    ----------
    codes : ndarray of shape (N, D)
        Latent codes, ``D >= 2``; real and finite.
    factors : ndarray of shape (N, K) or (N,)
        Ground-truth factors, real and finite.
    discrete : bool or sequence of bool, optional
        Which factors are discrete; default as in :func:`mig` (integer-valued with at most
        ``n_bins`` distinct values).
    n_bins : int, default=20
        Only used by the default rule for ``discrete``.
    test_fraction : float, default=0.5
        Fraction of samples held out to score the classifiers of discrete factors, in
        ``(0, 1)``. Continuous factors use all samples (as disentanglement_lib does).
    seed : int, default=0
        Seed of the train/test split.

    Returns
    -------
    dict
        ``sap`` (float): mean over factors of the gap between the two best dimensions
        (NaN-factors skipped); ``per_factor`` (ndarray (K,)); ``scores`` (ndarray (D, K)):
        ``R^2`` (continuous factors) or test accuracy (discrete factors) of each dimension
        alone; ``discrete`` (ndarray (K,) bool).

    Notes
    -----
    ``R^2`` of a one-variable linear regression is the squared Pearson correlation
    ``cov(z, v)^2 / (var(z) var(v))``, set to 0 for a dimension with variance
    ``<= 1e-12`` (disentanglement_lib's rule) and NaN for a constant factor. The
    classifier is disentanglement_lib's ``LinearSVC(C=0.01, class_weight="balanced")`` on
    the single dimension; convergence warnings are silenced (the fit is 1-D). If the
    training part of a discrete factor holds one class, that class is predicted.
    """
    Z, V = _codes_and_factors(codes, factors, n_bins)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    check_int("seed", seed, 0)
    is_discrete = _factor_types(V, discrete, n_bins)
    scores = np.empty((Z.shape[1], V.shape[1]))
    cont = np.flatnonzero(~is_discrete)
    if len(cont):
        scores[:, cont] = _r_squared(Z, V[:, cont])
    disc = np.flatnonzero(is_discrete)
    if len(disc):
        scores[:, disc] = _held_out_accuracies(Z, V[:, disc], test_fraction, seed)
    # A NaN column (constant factor) sorts last; its gap is then discarded.
    top = np.sort(scores, axis=0)[::-1]
    per_factor = np.where(np.isnan(scores).any(axis=0), np.nan, top[0] - top[1])
    valid = ~np.isnan(per_factor)
    return {
        "sap": float(per_factor[valid].mean()) if valid.any() else float("nan"),
        "per_factor": per_factor,
        "scores": scores,
        "discrete": is_discrete,
    }


def _r_squared(Z: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``R^2`` (D, K) of a one-variable linear regression of each factor on each dimension.

    The squared Pearson correlation; 0 for a dimension with variance ``<= 1e-12``, NaN for a
    constant factor.
    """
    n = Z.shape[0]
    zc = Z - Z.mean(axis=0)
    vc = V - V.mean(axis=0)
    cov = zc.T @ vc / (n - 1)
    var_z = np.einsum("ij,ij->j", zc, zc) / (n - 1)
    var_v = np.einsum("ij,ij->j", vc, vc) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = cov**2 / (var_z[:, None] * var_v[None, :])
    r2[var_z <= 1e-12, :] = 0.0
    r2[:, var_v == 0] = np.nan
    return r2


def _held_out_accuracies(Z: np.ndarray, V: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Test accuracy (D, K) of a linear classifier of each discrete factor from each dimension.

    One seeded train/test split serves every factor; a constant factor scores NaN.
    """
    n, D = Z.shape
    n_test = int(round(test_fraction * n))
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_fraction={test_fraction} leaves no train or no test sample out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    scores = np.empty((D, V.shape[1]))
    for k in range(V.shape[1]):
        y = V[:, k]
        if np.unique(y).size < 2:
            scores[:, k] = np.nan  # a constant factor: nothing to predict
            continue
        for j in range(D):
            scores[j, k] = _svc_accuracy(Z[train, j], y[train], Z[test, j], y[test])
    return scores


def _svc_accuracy(z_train, y_train, z_test, y_test) -> float:
    classes = np.unique(y_train)
    if classes.size < 2:
        return float(np.mean(y_test == classes[0]))
    clf = LinearSVC(C=0.01, class_weight="balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z_train[:, None], y_train)
    return float(np.mean(clf.predict(z_test[:, None]) == y_test))


def _factor_types(V: np.ndarray, discrete, n_bins: int) -> np.ndarray:
    K = V.shape[1]
    if discrete is None:
        return np.array(
            [bool(np.all(V[:, k] == np.round(V[:, k])) and np.unique(V[:, k]).size <= n_bins) for k in range(K)]
        )
    if isinstance(discrete, (bool, np.bool_)):
        return np.full(K, bool(discrete))
    flags = np.asarray(discrete)
    if flags.dtype != bool or flags.shape != (K,):
        raise ValueError(f"discrete must be a bool or {K} bools (one per factor); got {discrete!r}")
    return flags.copy()


def _columns_mutual_information(z_disc: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``mutual_info_score(v, z_disc[:, j])`` for every column j at once (nats).

    Written out because the metric calls it for every (code dimension, factor) pair, and
    sklearn's per-call input checks and sparse contingency table cost ~0.3 ms each: MIG of a
    256-dimensional table over 3 factors took 0.3 s, this takes a few ms. One ``bincount``
    builds all D contingency tables; the sum is sklearn's plug-in formula, term by term
    (tests compare the two).
    """
    n, d = z_disc.shape
    _, z_codes = np.unique(z_disc, return_inverse=True)  # 0..B-1 over all columns
    z_codes = z_codes.reshape(n, d)
    _, v_codes = np.unique(v, return_inverse=True)
    n_z, n_v = int(z_codes.max()) + 1, int(v_codes.max()) + 1
    cells = (np.arange(d)[None, :] * n_z + z_codes) * n_v + v_codes.reshape(-1)[:, None]
    counts = np.bincount(cells.ravel(), minlength=d * n_z * n_v).reshape(d, n_z, n_v).astype(np.float64)
    pi = counts.sum(axis=2, keepdims=True)  # (D, B, 1) bin counts of each column
    pj = counts.sum(axis=1, keepdims=True)  # (D, 1, V) class counts (the same for every column)
    nonzero = counts > 0
    safe = np.where(nonzero, counts, 1.0)
    p = counts / n
    terms = p * (np.log(safe) - np.log(n)) + p * (np.log(n) + np.log(n) - np.log(pi * pj + ~nonzero))
    terms = np.where(nonzero & (np.abs(terms) >= np.finfo(np.float64).eps), terms, 0.0)
    mi = np.clip(terms.sum(axis=(1, 2)), 0.0, None)
    # As sklearn: a labelling with one value has zero entropy, hence zero MI (exactly).
    single = (np.count_nonzero(pi[:, :, 0], axis=1) == 1) | (n_v == 1)
    return np.where(single, 0.0, mi)


def _discrete_factors(V: np.ndarray, is_discrete: np.ndarray, n_bins: int) -> np.ndarray:
    out = np.empty(V.shape, dtype=np.int64)
    for k in range(V.shape[1]):
        if is_discrete[k]:
            out[:, k] = np.unique(V[:, k], return_inverse=True)[1].reshape(-1)
        else:
            out[:, k] = histogram_discretize(V[:, k], n_bins)
    return out


def _codes_and_factors(codes, factors, n_bins) -> tuple[np.ndarray, np.ndarray]:
    """Check the codes (N, D >= 2) and factors (N, K) of :func:`mig` and :func:`sap`."""
    Z = real_matrix(codes, "codes", min_rows=2)
    V = real_matrix(factors, "factors", min_rows=2, vector_ok=True)
    if V.shape[0] != Z.shape[0]:
        raise ValueError(f"codes and factors must have the same number of rows; got {Z.shape[0]} and {V.shape[0]}")
    check_int("n_bins", n_bins, 2)
    if Z.shape[1] < 2:
        raise ValueError(f"codes must have at least 2 dimensions for a gap between the top two; got {Z.shape[1]}")
    return Z, V
