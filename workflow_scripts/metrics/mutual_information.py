"""Mutual information between the inputs (pixels) and the learned features, MINE-style.

A thin metric-facing wrapper of :func:`workflow_scripts.models.critic.estimate_mi` (the
separable critic and the InfoNCE / NWJ / interpolated bounds live there and are shared with
the InfoMax VAE): it names the arguments as the metrics stage uses them, optionally reduces
the pixels by PCA, and summarises the training curve as in VAEM (mean of the last 50 of ~300
epochs, batch 512).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from workflow_scripts.metrics.projection import principal_components
from workflow_scripts.models.critic import BOUNDS, estimate_mi
from workflow_scripts.validation import check_fraction, check_int, check_real, real_matrix

__all__ = ["bound_cap", "mutual_information"]


def mutual_information(
    inputs: np.ndarray,
    features: np.ndarray,
    *,
    bound: str = "infonce",
    alpha: float = 0.5,
    epochs: int = 300,
    batch_size: int = 512,
    seed: int = 0,
    lr: float = 5e-3,
    last: int = 50,
    hidden: int = 64,
    critic_dim: int = 32,
    layers: int = 2,
    input_pca: int | None = None,
) -> dict:
    """Estimate a lower bound of I(inputs; features) in nats with a trained critic.

    Parameters
    ----------
    inputs : ndarray of shape (N, D_in)
        Real, finite input representation of each cell, e.g. flattened (downsampled) pixels
        (:func:`workflow_scripts.data.pixel_matrix`) or their principal components.
    features : ndarray of shape (N, D)
        Real, finite features of the same cells, same row order. A 1-D array is one feature.
    bound : {"infonce", "nwj", "interpolated"}
        Variational bound maximised by the critic and reported (Poole et al. 2019).
    alpha : float in [0, 1]
        Interpolation weight of the ``"interpolated"`` bound (1: InfoNCE, 0: NWJ-like TUBA).
    epochs : int
        Passes over the cells; each takes one Adam step per batch (the last incomplete batch
        is dropped). The learning rate decays along a cosine to ``lr / 10``.
    batch_size : int
        Pairs per batch (the bound's N); lowered to N if there are fewer cells.
    seed : int
        Seed of the critic's weights and the batch order; the global torch RNG is untouched.
    lr : float
        Adam learning rate.
    last : int
        Number of final epochs averaged into the estimate (``<= epochs``).
    hidden, critic_dim, layers : int
        Width, output size and depth of the two MLPs of the separable critic
        f(x, z) = g(x) . h(z) (:class:`~workflow_scripts.models.critic.SeparableCritic`).
    input_pca : int, optional
        If given, ``inputs`` are first reduced to that many principal components (randomised
        SVD seeded with ``seed``), for pixel inputs with thousands of dimensions. Each column
        is then standardised by ``estimate_mi`` (MI is invariant to that).

    Returns
    -------
    dict
        ``mi`` (mean of the per-epoch bound over the last ``last`` epochs, nats), ``mi_sd``
        (their sample SD, ddof=1; 0 for ``last == 1``), ``history`` (per-epoch bound, the
        mean over the epoch's batches before each step), ``cap`` (the most the bound can
        report for this batch size, nats; ``inf`` for NWJ and for the interpolated bound with
        ``alpha == 0``), ``bound``, ``alpha``, ``batch_size`` (used), ``n_cells``, ``last``,
        ``epochs`` and ``input_dim`` (after PCA).

    Notes
    -----
    The estimates are lower bounds and their biases differ: InfoNCE can never exceed
    log(batch_size) (6.24 nats for 512), so a larger true MI is reported as about
    log(batch_size) and comparisons between feature sets saturate there; NWJ is unbounded but
    its variance grows like e^I / batch_size; the interpolated bound lies between them and is
    capped at log((batch_size - 1) / alpha). For a fair comparison use the same bound, batch
    size, epochs and seed for every feature set.

    Raises
    ------
    ValueError
        On mismatched or non-finite arrays, an unknown bound, or invalid numbers.
    """
    inputs, features = _check_pair(inputs, features)
    _check_options(bound, alpha, epochs, batch_size, seed, lr, last, hidden, critic_dim, layers)
    if input_pca is not None:
        check_int("input_pca", input_pca, 1)
        if input_pca > min(inputs.shape):
            raise ValueError(f"input_pca ({input_pca}) must not exceed min(N, D_in) = {min(inputs.shape)}")
        inputs = principal_components(inputs, int(input_pca), int(seed))

    result = estimate_mi(
        inputs,
        features,
        bound=bound,
        alpha=float(alpha),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        seed=int(seed),
        hidden=int(hidden),
        critic_dim=int(critic_dim),
        layers=int(layers),
    )
    history = [float(v) for v in result["history"]]
    tail = np.asarray(history[-int(last) :])
    batch = int(result["batch_size"])
    return {
        "mi": float(tail.mean()),
        "mi_sd": float(tail.std(ddof=1)) if len(tail) > 1 else 0.0,
        "history": history,
        "cap": bound_cap(bound, batch, alpha),
        "bound": bound,
        "alpha": float(alpha),
        "batch_size": batch,
        "n_cells": int(len(inputs)),
        "last": int(last),
        "epochs": int(epochs),
        "input_dim": int(inputs.shape[1]),
    }


def bound_cap(bound: str, batch_size: int, alpha: float = 0.5) -> float:
    """Return the most a bound can report for a batch size, in nats.

    Parameters
    ----------
    bound : {"infonce", "nwj", "interpolated"}
        The variational bound.
    batch_size : int
        Pairs per batch (the bound's N).
    alpha : float, optional
        Interpolation weight of the ``"interpolated"`` bound.

    Returns
    -------
    float
        ``log(batch_size)`` for InfoNCE, ``log((batch_size - 1) / alpha)`` for the
        interpolated bound with ``alpha > 0``, ``inf`` otherwise (NWJ is unbounded).

    Examples
    --------
    >>> round(bound_cap("infonce", 512), 2)
    6.24
    >>> bound_cap("nwj", 512)
    inf
    """
    if bound == "infonce":
        return math.log(batch_size)
    if bound == "interpolated" and alpha > 0:
        return math.log((batch_size - 1) / alpha)
    return math.inf


def _check_pair(inputs, features) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices (a vector is one column), checked to describe the same >= 2 cells."""
    inputs = real_matrix(inputs, "inputs", vector_ok=True, as_float=False)
    features = real_matrix(features, "features", vector_ok=True, as_float=False)
    if len(inputs) != len(features):
        raise ValueError(
            f"inputs and features must describe the same cells; got {len(inputs)} and {len(features)} rows"
        )
    if len(inputs) < 2:
        raise ValueError(f"inputs: need at least 2 cells to form pairs; got {len(inputs)}")
    return inputs, features


def _check_options(bound, alpha, epochs, batch_size, seed, lr, last, hidden, critic_dim, layers) -> None:
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}")
    for name, value, lowest in (
        ("epochs", epochs, 1),
        ("batch_size", batch_size, 2),
        ("last", last, 1),
        ("hidden", hidden, 1),
        ("critic_dim", critic_dim, 1),
        ("layers", layers, 1),
    ):
        check_int(name, value, lowest)
    if last > epochs:
        raise ValueError(f"last ({last}) must not exceed epochs ({epochs})")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    check_real("lr", lr, 0.0, strict=True)
    check_fraction("alpha", alpha)
