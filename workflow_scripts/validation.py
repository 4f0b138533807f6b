"""Argument checks shared by the whole package.

Each check returns the value in the form the caller computes with, or raises a
``ValueError`` that names the argument, the value (or its shape or dtype) and what
was expected. Modules call these instead of writing their own.

Examples
--------
>>> check_int("seed", 3, 0)
3
>>> check_int("seed", True, 0)
Traceback (most recent call last):
...
ValueError: seed=True is invalid: expected an integer >= 0
>>> real_matrix([[1, 2], [3, 4]], "features").dtype
dtype('float64')
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_bool",
    "check_fraction",
    "check_int",
    "check_label_image",
    "check_real",
    "real_matrix",
]


def check_int(name: str, value, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer of at least ``minimum``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check. ``bool`` is refused (``True`` as a size or seed is
        always a mistake), and so are floats (they are not truncated).
    minimum : int
        Smallest accepted value.

    Returns
    -------
    int
        ``value`` as a Python integer.

    Raises
    ------
    ValueError
        If ``value`` is not an integer ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")
    return int(value)


def check_real(name: str, value, minimum: float = 0.0, *, strict: bool = False) -> float:
    """Return ``value`` as a ``float`` if it is a finite number above ``minimum``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check; ``bool`` is refused.
    minimum : float, optional
        Lower bound.
    strict : bool, optional
        Whether the bound is exclusive (``value > minimum``) rather than inclusive.

    Returns
    -------
    float
        ``value`` as a Python float.

    Raises
    ------
    ValueError
        If ``value`` is not a finite real number within the bound.

    Examples
    --------
    >>> check_real("sigma", 2)
    2.0
    """
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number {relation} {minimum}")
    return float(value)


def check_fraction(name: str, value) -> float:
    """Return ``value`` as a ``float`` if it is a number in ``[0, 1]``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check; ``bool`` is refused.

    Returns
    -------
    float
        ``value`` as a Python float.

    Raises
    ------
    ValueError
        If ``value`` is not a finite number in ``[0, 1]``.
    """
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: expected a number in [0, 1]")
    return float(value)


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is exactly ``True`` or ``False``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check. ``0``, ``1`` and ``"yes"`` are refused: a flag given
        as anything but a boolean is a mistake, not a truthy value.

    Returns
    -------
    bool
        ``value`` as a Python bool.

    Raises
    ------
    ValueError
        If ``value`` is not a ``bool`` or ``numpy.bool_``.
    """
    if type(value) not in (bool, np.bool_):
        raise ValueError(f"{name}={value!r} is invalid: expected True or False")
    return bool(value)


def check_label_image(name: str, labels) -> np.ndarray:
    """Return ``labels`` as an array if it is a 2-D non-negative integer label image.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    labels : array_like
        Label image: 0 is background, each positive value one object.

    Returns
    -------
    numpy.ndarray
        ``labels`` as an array (no copy when it already is one).

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, not of an integer (or bool) dtype, or holds a
        negative value.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} has shape {labels.shape} (ndim={labels.ndim}): expected a 2-D label image")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{name} has dtype {labels.dtype}: expected an integer label image")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has minimum {labels.min()}: expected non-negative labels (0 = background)")
    return labels


def real_matrix(A, name: str, *, min_rows: int = 1, vector_ok: bool = False, as_float: bool = True) -> np.ndarray:
    """Return ``A`` as a finite real matrix ``(N, F)``.

    Parameters
    ----------
    A : array_like
        The matrix to check.
    name : str
        Argument name used in the error message.
    min_rows : int, optional
        Smallest accepted number of rows ``N``.
    vector_ok : bool, optional
        Whether a 1-D array is accepted, as one column ``(N, 1)``.
    as_float : bool, optional
        Whether to return float64 (the default) or keep the input's dtype.

    Returns
    -------
    numpy.ndarray
        ``A`` with ``N >= min_rows`` rows and ``F >= 1`` columns.

    Raises
    ------
    ValueError
        Naming ``name`` and the shape or dtype found, if ``A`` is not 2-D, is too
        small, does not hold real numbers, or contains NaN or inf.

    Examples
    --------
    >>> real_matrix([1.0, 2.0], "x", vector_ok=True).shape
    (2, 1)
    >>> real_matrix([[1.0, float("nan")]], "x")
    Traceback (most recent call last):
    ...
    ValueError: x must contain only finite values; found NaN or inf
    """
    A = np.asarray(A)
    if vector_ok and A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2 or A.shape[0] < min_rows or A.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D array (N, F) with at least {min_rows} row(s) and 1 column; got shape {A.shape}"
        )
    if A.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers; got dtype {A.dtype}")
    if as_float:
        A = A.astype(np.float64, copy=False)
    # Row blocks: a whole-array isfinite on a large table would allocate an (N, F) mask.
    step = max(1, (1 << 24) // A.shape[1])
    for start in range(0, A.shape[0], step):
        if A.dtype.kind == "f" and not np.isfinite(A[start : start + step]).all():
            raise ValueError(f"{name} must contain only finite values; found NaN or inf")
    return A
