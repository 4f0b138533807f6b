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

The local continuity meta-criterion (Chen & Buja 2009) counts the neighbours the two
spaces share, with ``N_k^X(i)`` the ``k`` nearest neighbours of ``i`` in the input space::

    Q_NX(k) = 1 / (N k) * sum_i |N_k^X(i) & N_k^Y(i)|,      LCMC(k) = Q_NX(k) - k / (N - 1)

``k / (N - 1)`` is the expected ``Q_NX(k)`` of a random embedding, so LCMC is 0 for a
random embedding and ``1 - k / (N - 1)`` for a perfect one. All of these are sums over
blocks of the co-ranking matrix (Lee & Verleysen 2009), here accumulated without ever
forming it: the rank in ``X`` of each of the ``k_max`` nearest neighbours in ``Y`` gives
trustworthiness and ``Q_NX``, the rank in ``Y`` of the ``k_max`` nearest neighbours in
``X`` gives continuity.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from workflow_scripts.validation import check_int, check_real, real_matrix

__all__ = [
    "trustworthiness",
    "continuity",
    "trustworthiness_continuity",
    "lcmc",
    "neighbourhood_sizes",
    "neighbourhood_curves",
    "curve_auc",
    "local_quality",
]

# Float64 upcast blocks of a non-float64 matrix hold about this many values (64 MB), so a
# float32 or uint16 pixel matrix is never copied whole to float64.
_UPCAST_BLOCK_VALUES = 1 << 23

# Rows per block of the row-wise sort / argpartition inside a chunk: their (rows, N)
# temporaries stay small next to the (chunk_size, N) distance rows.
_SUB_BLOCK_ROWS = 64


def trustworthiness(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024, precision: str = "float64"
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
        Rows per chunk. Peak extra memory is about ``chunk_size * N * 8`` bytes (one
        block of float64 distance rows; the two spaces' blocks never coexist) plus
        ``O(chunk_size * max(ks))`` for neighbour lists and ranks.
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).

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
    return _scores(X, Y, ks, chunk_size, precision, want_trust=True, want_cont=False)["trustworthiness"]


def continuity(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024, precision: str = "float64"
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
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).

    Returns
    -------
    dict of int to float
        ``{k: C(k)}`` for each distinct ``k`` in ``ks``.
    """
    return _scores(X, Y, ks, chunk_size, precision, want_trust=False, want_cont=True)["continuity"]


def trustworthiness_continuity(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], *, chunk_size: int = 1024, precision: str = "float64"
) -> dict[str, dict[int, float]]:
    """Trustworthiness and continuity in one pass over the data.

    Both scores need the same two sets of distance rows, so computing them together
    costs about half of calling :func:`trustworthiness` and :func:`continuity`
    separately (the input-space distances dominate when ``D`` is large). To hold only
    one block of distance rows at a time, the rows of the space with fewer columns (the
    cheaper ones) are computed twice per chunk.

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
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).

    Returns
    -------
    dict
        ``{"trustworthiness": {k: T(k)}, "continuity": {k: C(k)}}``.
    """
    return _scores(X, Y, ks, chunk_size, precision, want_trust=True, want_cont=True)


def lcmc(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], chunk_size: int = 1024, *, precision: str = "float64"
) -> dict[int, float]:
    """Local continuity meta-criterion (Chen & Buja 2009) of the embedding ``Y`` of ``X``.

    ``LCMC(k) = Q_NX(k) - k / (N - 1)`` with
    ``Q_NX(k) = 1 / (N k) * sum_i |N_k^X(i) & N_k^Y(i)|``, the mean fraction of each
    sample's ``k`` nearest neighbours that the two spaces share; ``k / (N - 1)`` is what a
    random embedding shares by chance. Computed in chunks of rows, memory
    ``O(N * chunk_size)``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space, any real dtype (distances in the ``precision`` arithmetic).
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples, in the same row order.
    ks : sequence of int
        Neighbourhood sizes, each ``1 <= k < N / 2`` (as for :func:`trustworthiness`).
    chunk_size : int, default=1024
        Rows per chunk.
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).

    Returns
    -------
    dict of int to float
        ``{k: LCMC(k)}`` for each distinct ``k`` in ``ks`` (first-seen order), in
        ``[-k / (N - 1), 1 - k / (N - 1)]``: about 0 for a random embedding,
        ``1 - k / (N - 1)`` for one that keeps every neighbourhood.

    Notes
    -----
    Neighbourhoods are sets of the ``k`` lowest ranks, ranks broken by sample index at
    exact distance ties (as for :func:`trustworthiness`). :func:`neighbourhood_curves`
    returns the same values together with ``Q_NX``, trustworthiness and continuity.
    """
    return _scores(X, Y, ks, chunk_size, precision, want_trust=False, want_cont=False, want_overlap=True)["lcmc"]


def neighbourhood_sizes(
    n: int, count: int = 20, lo: float = 0.01, hi: float = 0.20, cap: int | None = None
) -> list[int]:
    """Neighbourhood sizes ``k`` spread evenly from ``lo * n`` to ``hi * n``.

    The SEEDS reference evaluates its neighbourhood curves at 20 sizes from 1% to 20% of
    ``N``. Sizes are ``round(linspace(lo * n, hi * n, count))``, raised to at least 1,
    kept below ``n / 2`` (the bound of :func:`trustworthiness`) and at most ``cap``, then
    deduplicated and sorted, so fewer than ``count`` come back when ``n`` is small.

    Parameters
    ----------
    n : int
        Number of samples, ``>= 3`` (the smallest ``n`` that admits ``k = 1``).
    count : int, default=20
        Number of sizes requested, ``>= 1``.
    lo, hi : float, default=0.01, 0.20
        Fractions of ``n`` for the smallest and largest size, ``0 < lo <= hi``.
    cap : int, optional
        Largest admissible ``k`` (e.g. to bound the ``O(N * k)`` neighbour lists), ``>= 1``.

    Returns
    -------
    list of int
        Distinct sizes in increasing order, each ``1 <= k < n / 2`` and ``k <= cap``;
        never empty.

    Examples
    --------
    >>> neighbourhood_sizes(1000, count=5)
    [10, 58, 105, 152, 200]
    >>> neighbourhood_sizes(20)
    [1, 2, 3, 4]
    """
    check_int("n", n, 3)
    check_int("count", count, 1)
    check_real("lo", lo, 0.0, strict=True)
    check_real("hi", hi, 0.0, strict=True)
    if lo > hi:
        raise ValueError(f"lo must not exceed hi; got lo={lo!r}, hi={hi!r}")
    if cap is not None:
        check_int("cap", cap, 1)
    upper = (n - 1) // 2  # largest k with k < n / 2
    if cap is not None:
        upper = min(upper, int(cap))
    ks = np.rint(np.linspace(lo * n, hi * n, count)).astype(np.int64)
    ks = np.clip(ks, 1, upper)
    return [int(k) for k in np.unique(ks)]


def neighbourhood_curves(
    X: np.ndarray, Y: np.ndarray, ks: Sequence[int], chunk_size: int = 1024, *, precision: str = "float64"
) -> dict:
    """Trustworthiness, continuity, ``Q_NX`` and LCMC over several ``k`` in one chunked pass.

    All four are sums over blocks of the co-ranking matrix (Lee & Verleysen 2009); they
    share the distance rows, neighbour lists and ranks of each chunk, so this costs about
    as much as :func:`trustworthiness_continuity` alone. Memory ``O(N * chunk_size)``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space, any real dtype (distances in the ``precision`` arithmetic).
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples, in the same row order.
    ks : sequence of int
        Neighbourhood sizes, each ``1 <= k < N / 2``; see :func:`neighbourhood_sizes`.
    chunk_size : int, default=1024
        Rows per chunk.
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).

    Returns
    -------
    dict
        ``ks``: the distinct sizes, sorted; ``trustworthiness``, ``continuity``, ``q_nx``
        and ``lcmc``: ``{k: value}`` in that order (values equal those of
        :func:`trustworthiness`, :func:`continuity` and :func:`lcmc`); ``auc``: for each
        of the four metrics the area under its curve over ``k``, normalised by the range
        of ``k`` -- ``trapezoid(values, ks) / (k_max - k_min)``, the mean height of the
        piecewise-linear curve (in the metric's own units, ``[0, 1]`` for T, C and
        ``Q_NX``) -- or the single value when only one ``k`` is given.

    Notes
    -----
    The AUC weights each stretch of ``k`` by its length, so unevenly spaced sizes count
    by the range they cover, not by their number.
    """
    scores = _scores(X, Y, ks, chunk_size, precision, want_trust=True, want_cont=True, want_overlap=True)
    ks_sorted = sorted(scores["trustworthiness"])
    out: dict = {"ks": ks_sorted}
    for name in ("trustworthiness", "continuity", "q_nx", "lcmc"):
        out[name] = {k: scores[name][k] for k in ks_sorted}
    out["auc"] = {name: curve_auc(ks_sorted, [out[name][k] for k in ks_sorted]) for name in _CURVES}
    return out


_CURVES = ("trustworthiness", "continuity", "q_nx", "lcmc")


def curve_auc(ks: Sequence[int], values: Sequence[float]) -> float:
    """Return the area under a metric's curve over ``k``, normalised by the range of ``k``.

    That is the mean height of the piecewise-linear curve.

    Parameters
    ----------
    ks : sequence of int
        Neighbourhood sizes, increasing.
    values : sequence of float
        The metric at each size.

    Returns
    -------
    float
        ``trapezoid(values, ks) / (ks[-1] - ks[0])``; the single value when only one ``k``
        is given.

    Examples
    --------
    >>> curve_auc([1, 3, 5], [1.0, 0.5, 0.5])
    0.625
    >>> curve_auc([4], [0.8])
    0.8
    """
    if len(ks) == 1:
        return float(values[0])
    return float(np.trapezoid(values, ks) / (ks[-1] - ks[0]))


def local_quality(
    X: np.ndarray,
    Y: np.ndarray,
    k: int = 10,
    chunk_size: int = 1024,
    *,
    max_rank: int | None = None,
    max_rank_diff: int | None = None,
    precision: str = "float64",
) -> np.ndarray:
    """Per-sample neighbourhood agreement between the input space ``X`` and the embedding ``Y``.

    By default the score of sample ``i`` is the per-point ``Q_NX``: the fraction of its
    ``k`` nearest neighbours in ``Y`` that are also among its ``k`` nearest neighbours in
    ``X``, ``|N_k^X(i) & N_k^Y(i)| / k``. Its mean over samples is ``Q_NX(k)`` of
    :func:`neighbourhood_curves` (a random embedding scores about ``k / (N - 1)``).

    With ``max_rank`` the SEEDS reference variant is used instead (there ``max_rank=500``,
    ``max_rank_diff=300``, used to colour the 2-D map): among the pairs ``(i, j)`` with
    either rank ``<= max_rank`` (``rank_X(i, j)`` or ``rank_Y(i, j)``), the fraction that
    have both ranks ``<= max_rank`` and ``|rank_X(i, j) - rank_Y(i, j)| <= max_rank_diff``.
    ``k`` is then ignored. Without ``max_rank_diff`` the rank difference is not limited and
    the score is the Jaccard index of the two ``max_rank``-neighbourhoods.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Input space, any real dtype (distances in the ``precision`` arithmetic).
    Y : ndarray of shape (N, d)
        Embedding of the same ``N`` samples, in the same row order.
    k : int, default=10
        Neighbourhood size, ``1 <= k <= N - 1``.
    chunk_size : int, default=1024
        Rows per chunk; memory ``O(N * chunk_size)``.
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of the distance rows. ``"float32"`` about halves the time for a wide
        input space (the matrix product and row sorts dominate) at the cost of possible rank
        swaps between neighbours whose distances differ by less than float32 rounding
        (sklearn returns float32 distances for float32 input too). On the benchmark data
        T and C moved by 1e-10 to 1e-7 and Q_NX / LCMC by up to about 1e-4 (BENCHMARKS.md).
    max_rank : int, optional
        Rank limit of the reference variant, ``>= 1``; values ``>= N - 1`` mean every
        other sample (the limit is lowered to ``N - 1``).
    max_rank_diff : int, optional
        Largest admissible ``|rank_X - rank_Y|`` in the reference variant, ``>= 0``; only
        with ``max_rank``.

    Returns
    -------
    ndarray of shape (N,)
        Score of each sample in ``[0, 1]``; 1 means its neighbourhood is kept.

    Notes
    -----
    Ranks count from 1 (the nearest other sample) and break exact distance ties by sample
    index, as in :func:`trustworthiness`.
    """
    if max_rank_diff is not None and max_rank is None:
        raise ValueError("max_rank_diff needs max_rank (the reference variant); got max_rank=None")
    X = real_matrix(X, "X", as_float=False)  # as given: a float32 pixel matrix is never copied whole
    Y = real_matrix(Y, "Y", as_float=False)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows; got X.shape={X.shape}, Y.shape={Y.shape}")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"X must have at least 2 rows (samples); got {n}")
    check_int("chunk_size", chunk_size, 1)
    if max_rank is None:
        if not _is_int(k) or not 1 <= k <= n - 1:
            raise ValueError(f"k must be an integer with 1 <= k <= N - 1 = {n - 1}; got {k!r}")
        m = int(k)
    else:
        check_int("max_rank", max_rank, 1)
        if max_rank_diff is not None:
            check_int("max_rank_diff", max_rank_diff, 0)
        m = min(int(max_rank), n - 1)

    work = _work_dtype(precision)
    x_sq = _squared_norms(X, work)
    y_sq = _squared_norms(Y, work)
    scores = np.empty(n, dtype=np.float64)
    positions = np.arange(1, m + 1)  # rank in Y of the m-th nearest neighbour in Y
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        d_y = _squared_distance_rows(Y, y_sq, rows, work)
        nbrs_y = _nearest(d_y, m)
        del d_y
        d_x = _squared_distance_rows(X, x_sq, rows, work)
        ranks_x = _ranks(d_x, nbrs_y)
        del d_x
        both = ranks_x <= m
        n_both = np.count_nonzero(both, axis=1)
        if max_rank is None:
            scores[rows] = n_both / m
        else:
            agree = both if max_rank_diff is None else both & (np.abs(ranks_x - positions) <= max_rank_diff)
            # |union| = |N_m^X| + |N_m^Y| - |intersection| = 2m - n_both >= m >= 1.
            scores[rows] = np.count_nonzero(agree, axis=1) / (2 * m - n_both)
    return scores


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _scores(X, Y, ks, chunk_size, precision, *, want_trust: bool, want_cont: bool, want_overlap: bool = False) -> dict:
    X, Y, ks = _validate(X, Y, ks, chunk_size)
    work = _work_dtype(precision)
    n = X.shape[0]
    kmax = max(ks)
    spaces = {"x": (X, _squared_norms(X, work)), "y": (Y, _squared_norms(Y, work))}
    ks_arr = np.asarray(ks)
    # Neighbour lists wanted per space: trustworthiness and Q_NX rank the neighbours in Y
    # within X, continuity ranks the neighbours in X within Y.
    want_nbrs = {"y": want_trust or want_overlap, "x": want_cont}
    if want_nbrs["x"] and want_nbrs["y"]:
        # Both ranks need both blocks of distance rows. Rather than holding the two at once
        # (twice the memory), the space with fewer columns -- the cheaper rows, usually the
        # embedding -- is computed twice: neighbours first, ranks last.
        cheap, dear = ("y", "x") if Y.shape[1] <= X.shape[1] else ("x", "y")
        steps = (cheap, dear, cheap)
    else:
        steps = ("y", "x") if want_nbrs["y"] else ("x", "y")
    other = {"x": "y", "y": "x"}
    # Integer penalty and overlap sums per k: exact, no float accumulation error.
    pen_trust = np.zeros(len(ks), dtype=np.int64)
    pen_cont = np.zeros(len(ks), dtype=np.int64)
    overlap = np.zeros(len(ks), dtype=np.int64)

    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        nbrs: dict[str, np.ndarray] = {}
        visited: set[str] = set()
        for space in steps:
            A, a_sq = spaces[space]
            dist = _squared_distance_rows(A, a_sq, rows, work)
            if other[space] in nbrs:
                # Rank, within this space, of the other space's kmax nearest neighbours.
                ranks = _ranks(dist, nbrs.pop(other[space]))
                if space == "x":
                    if want_trust:
                        pen_trust += _penalties(ranks, ks_arr)
                    if want_overlap:
                        overlap += _overlaps(ranks, ks_arr)
                else:
                    pen_cont += _penalties(ranks, ks_arr)
                del ranks
            if want_nbrs[space] and space not in visited:  # a second visit only ranks
                nbrs[space] = _nearest(dist, kmax)
            visited.add(space)
            del dist

    out = {}
    if want_trust:
        out["trustworthiness"] = _normalise(pen_trust, ks, n)
    if want_cont:
        out["continuity"] = _normalise(pen_cont, ks, n)
    if want_overlap:
        out["q_nx"] = {k: float(o / (n * k)) for k, o in zip(ks, overlap)}
        # Q_NX - k/(N-1) in one expression: (o (N-1) - N k^2) / (N k (N-1)), exact integers on top.
        out["lcmc"] = {k: float((int(o) * (n - 1) - n * k * k) / (n * k * (n - 1))) for k, o in zip(ks, overlap)}
    return out


def _validate(X, Y, ks, chunk_size):
    X = real_matrix(X, "X", as_float=False)  # as given: a float32 pixel matrix is never copied whole
    Y = real_matrix(Y, "Y", as_float=False)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows; got X.shape={X.shape}, Y.shape={Y.shape}")
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"X must have at least 3 rows (samples); got {n}")
    if isinstance(ks, (str, bytes)) or not isinstance(ks, (Sequence, np.ndarray)):
        raise ValueError(f"ks must be a sequence of int; got {ks!r}")
    if len(ks) == 0:
        raise ValueError("ks must contain at least one neighbourhood size; got []")
    for k in ks:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k < n / 2:
            raise ValueError(f"ks must hold integers with 1 <= k < N / 2 = {n / 2}; got k={k!r} in ks={ks!r}")
    check_int("chunk_size", chunk_size, 1)
    # dict.fromkeys keeps first-seen order and drops duplicates.
    ks = tuple(dict.fromkeys(int(k) for k in ks))
    return X, Y, ks


def _work_dtype(precision: str) -> type:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(_PRECISIONS)}; got {precision!r}")
    return _PRECISIONS[precision]


_PRECISIONS = {"float64": np.float64, "float32": np.float32}


def _row_blocks(A: np.ndarray, dtype=np.float64):
    """Yield row blocks of ``A`` as ``dtype``, each about ``_UPCAST_BLOCK_VALUES`` values."""
    step = max(1, _UPCAST_BLOCK_VALUES // max(1, A.shape[1]))
    for start in range(0, A.shape[0], step):
        yield np.asarray(A[start : start + step], dtype=dtype)


def _squared_norms(A: np.ndarray, work=np.float64) -> np.ndarray:
    # Norms are always summed in float64 and then rounded to the working precision once.
    return np.concatenate([np.einsum("ij,ij->i", b, b) for b in _row_blocks(A)]).astype(work)


def _squared_distance_rows(A: np.ndarray, a_sq: np.ndarray, rows: np.ndarray, work=np.float64) -> np.ndarray:
    """Row-shifted squared Euclidean distances ``(len(rows), N)`` from ``A[rows]``, in ``work``.

    Entry ``[i, j]`` is ``||a_j||^2 - 2 a_i.a_j``, i.e. the squared distance minus the
    constant ``||a_i||^2`` of its row. Only the order within a row is ever used (nearest
    neighbours, ranks), so the row constant and the clip at zero are skipped: two fewer
    passes over the largest array of the computation, and no rounding from adding and
    then cancelling ``||a_i||^2``. The sample's own entry is set to ``inf`` so it is never
    its own neighbour (as sklearn does with the diagonal).

    ``work`` float32 (``precision="float32"``) halves the time of the matrix product -- most
    of the cost for a wide input space such as pixels -- and of the row sorts; the price is
    that neighbours whose distances differ by less than float32 rounding may swap ranks.
    """
    # Scaling the (c, D) chunk by -2 is cheaper than scaling the (c, N) product.
    chunk = np.asarray(A[rows], dtype=work) * work(-2.0)
    if A.dtype == work:
        dist = chunk @ A.T
    else:
        # Convert the other side block by block instead of copying all of A.
        dist = np.empty((len(rows), A.shape[0]), dtype=work)
        start = 0
        for block in _row_blocks(A, work):
            np.matmul(chunk, block.T, out=dist[:, start : start + len(block)])
            start += len(block)
    dist += a_sq[None, :]
    dist[np.arange(len(rows)), rows] = np.inf
    return dist


def _nearest(dist: np.ndarray, kmax: int) -> np.ndarray:
    """Return the indices ``(c, kmax)`` of each row's ``kmax`` smallest entries, nearest first.

    ``argpartition`` is O(N) per row; only the ``kmax`` survivors are sorted. Among equal
    distances the lower index comes first. Rows are processed in blocks of
    ``_SUB_BLOCK_ROWS`` so the ``(rows, N)`` int64 index temporary stays small.
    """
    c = dist.shape[0]
    out = np.empty((c, kmax), dtype=np.int64)
    for b in range(0, c, _SUB_BLOCK_ROWS):
        block = dist[b : b + _SUB_BLOCK_ROWS]
        part = np.sort(np.argpartition(block, kmax - 1, axis=1)[:, :kmax], axis=1)
        order = np.argsort(np.take_along_axis(block, part, axis=1), axis=1, kind="stable")
        out[b : b + _SUB_BLOCK_ROWS] = np.take_along_axis(part, order, axis=1)
    return out


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
    n = dist.shape[1]
    thresholds = np.take_along_axis(dist, nbrs, axis=1)
    # Searching the keys in increasing order lets numpy's binary search narrow its range from
    # one key to the next (about 1.5x faster than unsorted keys).
    key_order = np.argsort(thresholds, axis=1)
    sorted_keys = np.take_along_axis(thresholds, key_order, axis=1)
    less = np.empty((c, kmax), dtype=np.int64)  # entries strictly below each neighbour's
    for b in range(0, c, _SUB_BLOCK_ROWS):
        # Sorted copies of a block of rows only: a (chunk, N) copy would double the peak.
        sorted_dist = np.sort(dist[b : b + _SUB_BLOCK_ROWS], axis=1)
        # A per-row loop over cheap O(kmax log N) searches: np.searchsorted is 1-D only.
        for r in range(sorted_dist.shape[0]):
            less[b + r, key_order[b + r]] = np.searchsorted(sorted_dist[r], sorted_keys[b + r], side="left")
        # The neighbour's own value sits at sorted position ``less``; an equal value right
        # after it is an exact tie, broken by sample index as a stable argsort would.
        block_less = less[b : b + _SUB_BLOCK_ROWS]
        after = np.minimum(block_less + 1, n - 1)
        tied = (block_less + 1 < n) & (
            np.take_along_axis(sorted_dist, after, axis=1) == thresholds[b : b + _SUB_BLOCK_ROWS]
        )
        for r, m in zip(*np.nonzero(tied)):
            i = b + r
            less[i, m] += np.count_nonzero(dist[i, : nbrs[i, m]] == thresholds[i, m])
    return less + 1


def _penalties(ranks: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Sum over rows of ``max(0, r - k)`` over the first ``k`` neighbours, for each ``k``."""
    return np.array([np.maximum(ranks[:, :k] - k, 0).sum() for k in ks], dtype=np.int64)


def _overlaps(ranks: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Sum over rows of ``#{m < k : r_m <= k}``: shared members of the two k-neighbourhoods, per ``k``.

    ``ranks[i, m]`` is the rank in the other space of the ``m``-th nearest neighbour of row
    ``i``; the first ``k`` of them are ``N_k`` in this space, and a rank ``<= k`` puts the
    point in ``N_k`` of the other space too.
    """
    return np.array([np.count_nonzero(ranks[:, :k] <= k) for k in ks], dtype=np.int64)


def _normalise(penalties: np.ndarray, ks: tuple[int, ...], n: int) -> dict[int, float]:
    return {k: float(1.0 - p * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))) for k, p in zip(ks, penalties)}
