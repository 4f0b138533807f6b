"""Two-dimensional embeddings of per-cell feature tables, for maps in the report.

The embedding is for looking at, not for measuring: quantitative neighbourhood metrics are
computed on the features themselves (``workflow_scripts/metrics``).
"""

from __future__ import annotations

import numpy as np

from workflow_scripts.validation import check_fraction, check_int, check_real, real_matrix

#: Methods :func:`embed_2d` understands.
METHODS = ("umap", "tsne", "pca")

# t-SNE's cost grows with the input dimension; reducing to 50 principal components first is
# the usual practice (van der Maaten's and scikit-learn's advice) and changes little.
_TSNE_MAX_DIM = 50

# Below this many points UMAP's spectral initialisation fails (eigsh needs k < N) or is
# meaningless, so the layout starts from random positions instead (still seeded).
_UMAP_MIN_SPECTRAL = 16


def standardise(features: np.ndarray) -> np.ndarray:
    """Scale every column to zero mean and unit variance, dropping constant columns.

    Parameters
    ----------
    features : numpy.ndarray, shape (N, D), real dtype
        One row per cell. Must be finite.

    Returns
    -------
    numpy.ndarray, shape (N, D'), float64
        The ``D' <= D`` columns whose values are not all equal, standardised. ``D'`` is 0 when
        every column is constant.

    Raises
    ------
    ValueError
        If ``features`` is not a 2-D finite real array.

    Examples
    --------
    >>> standardise(np.array([[1.0, 5.0], [3.0, 5.0]]))
    array([[-1.],
           [ 1.]])
    """
    x = _as_feature_matrix(features)
    # Constant columns carry no information and would divide by zero.
    keep = np.ptp(x, axis=0) > 0
    x = x[:, keep]
    if x.shape[1] == 0:
        return x
    x = x - x.mean(axis=0)
    return x / x.std(axis=0)


def embed_2d(
    features: np.ndarray,
    *,
    method: str = "umap",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
) -> np.ndarray:
    """Embed per-cell features in two dimensions.

    The features are standardised first (:func:`standardise`) so that no feature dominates
    the distances because of its units.

    Parameters
    ----------
    features : numpy.ndarray, shape (N, D), real dtype
        One row per cell, finite values, ``N >= 3``.
    method : {"umap", "tsne", "pca"}
        ``"umap"``: umap-learn with ``random_state=seed`` (single-threaded, hence
        reproducible); ``n_neighbors`` is capped at ``N - 1``. ``"tsne"``: scikit-learn
        t-SNE with PCA initialisation and ``random_state=seed``, inputs with more than 50
        dimensions reduced to 50 principal components first, ``perplexity`` capped at
        ``(N - 1) / 3`` for small N. ``"pca"``: the first two principal components.
    seed : int
        Random seed (non-negative). A fixed seed gives the same coordinates on every run
        on the same machine and library versions.
    n_neighbors : int
        UMAP neighbourhood size, ``>= 2``. Ignored by the other methods.
    min_dist : float
        UMAP minimum distance between embedded points, in ``[0, 1]``. Ignored by the other
        methods.
    perplexity : float
        t-SNE perplexity, ``> 0``. Ignored by the other methods.

    Returns
    -------
    numpy.ndarray, shape (N, 2), float32
        Embedding coordinates. When fewer than two non-constant feature columns remain, no
        neighbour-graph layout can add anything: the single informative column (standardised)
        becomes the first coordinate and the second is 0 (both are 0 when no column varies).

    Raises
    ------
    ValueError
        If ``features`` is not a finite 2-D real array with at least 3 rows, or a parameter
        is out of range.
    """
    x = _as_feature_matrix(features, min_rows=3)
    n = x.shape[0]
    if method not in METHODS:
        raise ValueError(f"method: got {method!r}, expected one of {METHODS}")
    seed = check_int("seed", seed, 0)
    n_neighbors = check_int("n_neighbors", n_neighbors, 2)
    min_dist = check_fraction("min_dist", min_dist)
    perplexity = check_real("perplexity", perplexity, 0.0, strict=True)

    z = standardise(x)
    if z.shape[1] < 2:
        out = np.zeros((n, 2), dtype=np.float32)
        if z.shape[1] == 1:
            out[:, 0] = z[:, 0]
        return out

    if method == "pca":
        coords = _pca(z, 2, seed)
    elif method == "umap":
        coords = _umap(z, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    else:
        coords = _tsne(z, seed=seed, perplexity=perplexity)
    return np.ascontiguousarray(coords, dtype=np.float32)


def _as_feature_matrix(features, min_rows: int = 1) -> np.ndarray:
    """Return a feature matrix as float64 (:func:`~workflow_scripts.validation.real_matrix`).

    Booleans count as 0 and 1, and a matrix without columns gets a message of its own.
    """
    x = np.asarray(features)
    if x.ndim == 2 and x.shape[1] == 0:
        raise ValueError(f"features: got shape {x.shape}, expected at least one column")
    if x.dtype == bool:
        x = x.astype(np.float64)
    return real_matrix(x, "features", min_rows=min_rows)


def _pca(z: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """First principal components of standardised data, with scikit-learn's sign convention."""
    from sklearn.decomposition import PCA

    # "full" SVD is exact and deterministic; the randomized solver would depend on the seed.
    n_components = min(n_components, z.shape[0], z.shape[1])
    return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit_transform(z)


def _import_umap():
    """umap-learn, with numba's on-disk cache switched on for all its compiled kernels.

    umap-learn and pynndescent mark only some of their numba functions ``cache=True``; the
    others are compiled afresh in every process, about 15 s per Snakemake job that draws a
    map. Turning the cache on for the rest (numba's own ``Dispatcher.enable_caching``, before
    their first compilation) lets every later job load the machine code instead: measured on
    2,158 cells, the first UMAP of a process took 20.8 s before and 7.4 s once the cache was
    filled. Numba keys the cache by source file, signature and CPU and writes it atomically,
    next to the package or, where that is read-only, in the user's cache folder
    (``NUMBA_CACHE_DIR`` overrides).
    """
    import sys
    import warnings

    import numba
    import umap  # noqa: F401  (imports umap.umap_, layouts, utils, spectral and pynndescent)
    from numba.core.caching import NullCache

    for name in [m for m in sys.modules if m.split(".")[0] in ("umap", "pynndescent")]:
        for value in list(vars(sys.modules[name]).values()):
            if isinstance(value, numba.core.dispatcher.Dispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
    # A kernel numba cannot cache (a closure, say) is compiled as before, with a warning.
    warnings.filterwarnings("ignore", category=numba.NumbaWarning, message=".*[Cc]annot cache.*")
    return sys.modules["umap"]


def _umap(z: np.ndarray, *, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    # Imported here: umap-learn pulls in numba, which costs seconds at import.
    umap = _import_umap()

    n = z.shape[0]
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=min_dist,
        random_state=seed,
        # random_state forces single-threaded optimisation anyway; saying so avoids a warning.
        n_jobs=1,
        init="spectral" if n >= _UMAP_MIN_SPECTRAL else "random",
    )
    return reducer.fit_transform(z)


def _tsne(z: np.ndarray, *, seed: int, perplexity: float) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = z.shape[0]
    if z.shape[1] > _TSNE_MAX_DIM:
        z = _pca(z, _TSNE_MAX_DIM, seed)
    # scikit-learn requires perplexity < N; about (N - 1) / 3 keeps 3 * perplexity neighbours
    # available, the rule of thumb its Barnes-Hut approximation relies on.
    perplexity = min(perplexity, max((n - 1) / 3.0, 1.0))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    return tsne.fit_transform(z)
