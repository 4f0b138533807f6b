"""Input checks shared by the metric modules."""

from __future__ import annotations

import numpy as np


def real_matrix(A, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``A`` as a finite float64 matrix (N, F) with N >= ``min_rows`` and F >= 1, or a
    ValueError naming ``name``, the shape or dtype found, and what was expected."""
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] < min_rows or A.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D array (N, F) with at least {min_rows} row(s) and 1 column; got shape {A.shape}"
        )
    if not (np.issubdtype(A.dtype, np.floating) or np.issubdtype(A.dtype, np.integer)) or A.dtype == bool:
        raise ValueError(f"{name} must hold real numbers; got dtype {A.dtype}")
    A = A.astype(np.float64, copy=False)
    if not np.isfinite(A).all():
        raise ValueError(f"{name} must contain only finite values; found NaN or inf")
    return A
