"""Neighbourhood preservation between an input space and an embedding, computed in row chunks.

``sklearn.manifold.trustworthiness`` builds the full ``(N, N)`` distance matrix and an
``(N, N)`` inverted rank index, which is 2 x 3.2 GB at N = 20,000. Here each chunk of rows
gets its distance rows in both spaces, so memory grows as ``O(N * chunk_size)``; the
penalty for every requested ``k`` is accumulated in the same pass.

Definitions (Venna & Kaski 2001), with ``r(i, j)`` the rank of ``j`` among the neighbours
of ``i`` in the input space (1 = nearest, self excluded) and ``N_k(i)`` the ``k`` nearest
neighbours of ``i`` in the embedding::

    T(k) = 1 - 2 / (N k (2N - 3k - 1)) * sum_i sum_{j in N_k(i)} max(0, r(i, j) - k)

and continuity is the same with the two spaces swapped: ``C(k) = T(k)`` of ``(Y, X)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["trustworthiness", "continuity", "trustworthiness_continuity"]

# Float64 upcast blocks of a non-float64 matrix hold about this many values (64 MB), so a
# float32 or uint16 pixel matrix is never copied whole to float64.
_UPCAST_BLOCK_VALUES = 1 << 23


def trustworthiness(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024
) -> dict[int, float]:
    """Trustworthiness of the embedding ``Y`` of ``X`` for several neighbourhood sizes.

    Equals ``sklearn.manifold.trustworthiness(X, Y, n_neighbors=k)`` (Euclidean) for each
    ``k``, but is computed in chunks of rows so memory is ``O(N * chunk_size)``, never
    ``O(N^2)``. High trustworthiness means the embedding does not invent neighbours that
    were far apart in the input space.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space (e.g. flattened pixels), any real dtype; distances are computed in
        float64 without copying ``X`` to float64 as a whole.
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples, in the same row order.
    ks : sequence of int
        Neighbourhood sizes, each ``1 <= k < N / 2`` (the bound sklearn enforces; beyond
        it the score is not confined to ``[0, 1]``).
    chunk_size : int, default=1024
        Rows per chunk. Peak extra memory is about ``4 * chunk_size * N * 8`` bytes
        (distance rows in both spaces, a sorted copy, argpartition indices).

    Returns
    -------
    dict of int to float
        ``{k: T(k)}`` for each distinct ``k`` in ``ks``, in ``[0, 1]``; 1 is perfect,
        about 0.5 is what a random embedding scores.

    Notes
    -----
    Neighbours and ranks come from squared Euclidean distances
    ``||a||^2 - 2 a.b + ||b||^2`` accumulated in float64 whatever the input dtype (sklearn
    keeps float32 distances for float32 input, so results can differ slightly there).
    Ties in input-space distance are ranked by sample index (as a stable argsort would);
    sklearn's unstable argsort orders exact ties arbitrarily, so on data with exactly tied
    distances (e.g. duplicate samples) the two can differ slightly. Without ties the
    results agree.
    """
    return _scores(X, Y, ks, chunk_size, want_trust=True, want_cont=False)["trustworthiness"]


def continuity(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024
) -> dict[int, float]:
    """Continuity of the embedding ``Y`` of ``X``: ``trustworthiness(Y, X, ks)``.

    High continuity means neighbours in the input space stay neighbours in the embedding
    (the embedding does not tear neighbourhoods apart). Parameters, return value and
    memory behaviour are those of :func:`trustworthiness`.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space.
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples.
    ks : sequence of int
        Neighbourhood sizes, each ``1 <= k < N / 2``.
    chunk_size : int, default=1024
        Rows per chunk.

    Returns
    -------
    dict of int to float
        ``{k: C(k)}`` for each distinct ``k`` in ``ks``.
    """
    return _scores(X, Y, ks, chunk_size, want_trust=False, want_cont=True)["continuity"]


def trustworthiness_continuity(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024
) -> dict[str, dict[int, float]]:
    """Trustworthiness and continuity in one pass over the data.

    Both scores need the same two sets of distance rows, so computing them together
    costs about half of calling :func:`trustworthiness` and :func:`continuity`
    separately (the input-space distances dominate when ``D`` is large).

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space.
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples.
    ks : sequence of int
        Neighbourhood sizes, each ``1 <= k < N / 2``.
    chunk_size : int, default=1024
        Rows per chunk.

    Returns
    -------
    dict
        ``{"trustworthiness": {k: T(k)}, "continuity": {k: C(k)}}``.
    """
    return _scores(X, Y, ks, chunk_size, want_trust=True, want_cont=True)


def _scores(X, Y, ks, chunk_size, *, want_trust: bool, want_cont: bool) -> dict:
    X, Y, ks = _validate(X, Y, ks, chunk_size)
    n = X.shape[0]
    kmax = max(ks)
    x_sq = _squared_norms(X)
    y_sq = _squared_norms(Y)
    ks_arr = np.asarray(ks)
    # Integer penalty sums per k: exact, no float accumulation error.
    pen_trust = np.zeros(len(ks), dtype=np.int64)
    pen_cont = np.zeros(len(ks), dtype=np.int64)

    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        d_y = _squared_distance_rows(Y, y_sq, rows)
        if want_trust:
            nbrs_y = _nearest(d_y, kmax)
        if not want_cont:
            del d_y  # free before the (larger-D) input-space rows are built
        d_x = _squared_distance_rows(X, x_sq, rows)
        if want_trust:
            pen_trust += _penalties(_ranks(d_x, nbrs_y), ks_arr)
        if want_cont:
            nbrs_x = _nearest(d_x, kmax)
            del d_x
            pen_cont += _penalties(_ranks(d_y, nbrs_x), ks_arr)

    out = {}
    if want_trust:
        out["trustworthiness"] = _normalise(pen_trust, ks, n)
    if want_cont:
        out["continuity"] = _normalise(pen_cont, ks, n)
    return out


def _validate(X, Y, ks, chunk_size):
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows; got X.shape={X.shape}, Y.shape={Y.shape}"
        )
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"X must have at least 3 rows (samples); got {n}")
    if isinstance(ks, (str, bytes)) or not isinstance(ks, (Sequence, np.ndarray)):
        raise ValueError(f"ks must be a sequence of int; got {ks!r}")
    if len(ks) == 0:
        raise ValueError("ks must contain at least one neighbourhood size; got []")
    for k in ks:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k < n / 2:
            raise ValueError(
                f"ks must hold integers with 1 <= k < N / 2 = {n / 2}; got k={k!r} in ks={ks!r}"
            )
    if (
        not isinstance(chunk_size, numbers.Integral)
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    # dict.fromkeys keeps first-seen order and drops duplicates.
    ks = tuple(dict.fromkeys(int(k) for k in ks))
    return X, Y, ks


def _as_matrix(A, name: str) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, features); got shape {A.shape}")
    if A.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got shape {A.shape}")
    if not (np.issubdtype(A.dtype, np.floating) or np.issubdtype(A.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers; got dtype {A.dtype}")
    if np.issubdtype(A.dtype, np.floating):
        # Row blocks: a whole-array isfinite would allocate an (N, D) boolean mask.
        step = max(1, _UPCAST_BLOCK_VALUES // A.shape[1])
        for start in range(0, A.shape[0], step):
            if not np.isfinite(A[start : start + step]).all():
                raise ValueError(f"{name} must contain only finite values; found NaN or inf")
    return A


def _row_blocks(A: np.ndarray):
    """Yield row blocks of ``A`` as float64, each about ``_UPCAST_BLOCK_VALUES`` values."""
    step = max(1, _UPCAST_BLOCK_VALUES // max(1, A.shape[1]))
    for start in range(0, A.shape[0], step):
        yield np.asarray(A[start : start + step], dtype=np.float64)


def _squared_norms(A: np.ndarray) -> np.ndarray:
    return np.concatenate([np.einsum("ij,ij->i", b, b) for b in _row_blocks(A)])


def _squared_distance_rows(A: np.ndarray, a_sq: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row-shifted squared Euclidean distances ``(len(rows), N)`` float64 from ``A[rows]``.

    Entry ``[i, j]`` is ``||a_j||^2 - 2 a_i.a_j``, i.e. the squared distance minus the
    constant ``||a_i||^2`` of its row. Only the order within a row is ever used (nearest
    neighbours, ranks), so the row constant and the clip at zero are skipped: two fewer
    passes over the largest array of the computation, and no rounding from adding and
    then cancelling ``||a_i||^2``. The sample's own entry is set to ``inf`` so it is never
    its own neighbour (as sklearn does with the diagonal).
    """
    # Scaling the (c, D) chunk by -2 is cheaper than scaling the (c, N) product.
    chunk = np.asarray(A[rows], dtype=np.float64) * -2.0
    if A.dtype == np.float64:
        dist = chunk @ A.T
    else:
        # Upcast the other side block by block instead of copying all of A to float64.
        dist = np.empty((len(rows), A.shape[0]), dtype=np.float64)
        start = 0
        for block in _row_blocks(A):
            np.matmul(chunk, block.T, out=dist[:, start : start + len(block)])
            start += len(block)
    dist += a_sq[None, :]
    dist[np.arange(len(rows)), rows] = np.inf
    return dist


def _nearest(dist: np.ndarray, kmax: int) -> np.ndarray:
    """Indices ``(c, kmax)`` of each row's ``kmax`` smallest entries, nearest first.

    ``argpartition`` is O(N) per row; only the ``kmax`` survivors are sorted. Among equal
    distances the lower index comes first.
    """
    part = np.sort(np.argpartition(dist, kmax - 1, axis=1)[:, :kmax], axis=1)
    order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _ranks(dist: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Rank ``(c, kmax)`` int64 of each ``nbrs[i, m]`` among row ``i`` of ``dist`` (1 = nearest).

    The rank equals the position (from 1) of ``nbrs[i, m]`` in a stable argsort of
    ``dist[i]``. Sorting the values and binary-searching the ``kmax`` neighbour distances
    gives the same numbers as argsort plus an inverse index at about a third of the cost
    (numpy's value sort is SIMD-vectorised, argsort and the scatter are not). Rows where a
    neighbour's distance occurs more than once (exact ties) get the index tie-break
    explicitly.
    """
    c, kmax = nbrs.shape
    thresholds = np.take_along_axis(dist, nbrs, axis=1)
    sorted_dist = np.sort(dist, axis=1)
    ranks = np.empty((c, kmax), dtype=np.int64)
    # A per-row loop over cheap O(kmax log N) searches: np.searchsorted is 1-D only.
    for i in range(c):
        less = np.searchsorted(sorted_dist[i], thresholds[i], side="left")
        ranks[i] = less + 1
        n_equal = np.searchsorted(sorted_dist[i], thresholds[i], side="right") - less
        for m in np.flatnonzero(n_equal > 1):
            j = nbrs[i, m]
            ranks[i, m] += np.count_nonzero(dist[i, :j] == thresholds[i, m])
    return ranks


def _penalties(ranks: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Sum over rows of ``max(0, r - k)`` over the first ``k`` neighbours, for each ``k``."""
    return np.array([np.maximum(ranks[:, :k] - k, 0).sum() for k in ks], dtype=np.int64)


def _normalise(penalties: np.ndarray, ks: tuple[int, ...], n: int) -> dict[int, float]:
    return {
        k: float(1.0 - p * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))))
        for k, p in zip(ks, penalties)
    }
