"""Principal components of an input space, in one place for every metric that reads them.

Torch-free, so the pixel-space job computes them once per dataset in the core environment.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

__all__ = ["principal_components"]


def principal_components(inputs: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """Return the first ``n_components`` principal components of ``inputs`` (N, D).

    Parameters
    ----------
    inputs : numpy.ndarray
        The input space (N, D).
    n_components : int
        Number of components.
    seed : int, optional
        Seed of the randomised SVD (deterministic for a seed on a given machine).

    Returns
    -------
    numpy.ndarray
        The projections (N, n_components).
    """
    return PCA(n_components=int(n_components), svd_solver="randomized", random_state=int(seed)).fit_transform(inputs)
