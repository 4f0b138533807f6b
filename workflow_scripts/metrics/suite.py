"""Every metric of one feature table, the way the report compares them.

One function, :func:`evaluate`, so a layer of a trained model, a baseline and a test fixture
go through exactly the same code. Metrics that the data cannot support (one class, one group,
no continuous ground truth) are reported as skipped, with the reason, never as a number.
:func:`evaluate_layer` is the metrics stage's entry: one feature table, read against the
dataset's pixel space and the ``metrics`` configuration.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from workflow_scripts.io import feature_columns
from workflow_scripts.metrics.classification import cv_splits, knn_accuracy, logreg_accuracy, mlp_accuracy
from workflow_scripts.metrics.disentanglement import mig, sap
from workflow_scripts.metrics.neighbourhood import curve_auc, neighbourhood_curves, neighbourhood_sizes
from workflow_scripts.metrics.projection import principal_components
from workflow_scripts.metrics.retrieval import aggregate_profiles, map_permutation_pvalues, mean_average_precision
from workflow_scripts.metrics.trajectory import backbone

log = logging.getLogger(__name__)

__all__ = ["evaluate", "evaluate_layer", "load_pixel_space", "pixel_components", "DEFAULTS"]

#: Defaults of the metric options (the schema holds the same).
DEFAULTS = {
    "neighbors": [5, 10, 20, 50],
    "curve_sizes": 20,
    "max_k": 500,
    "distance_precision": "float32",
    "n_splits": 5,
    "cv": "auto",
    "mlp": True,
    "mlp_epochs": 30,
    "knn": [5, 10],
    "mi": True,
    "mi_epochs": 50,
    "mi_bound": "infonce",
    "map_permutations": 0,
    "trajectory": "Metadata_trajectory",
    "factors": ["Metadata_class", "Metadata_trajectory", "Metadata_field_gain"],
}

#: Keys of the ``metrics`` configuration that select the data rather than tune a metric
#: (everything else is passed to :func:`evaluate` as ``options``).
_NOT_OPTIONS = ("label", "group_by", "summary_k", "max_cells", "pca_components")

#: The backbone summaries a metrics file keeps (the per-cell arrays are left out).
_BACKBONE_KEYS = ("tortuosity", "centroid_spearman", "centroid_kendall", "cell_spearman", "cell_kendall", "arc_length")


def pixel_components(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return the principal components of the pixel space that the MI critic reads (at most 50).

    They depend on the pixels alone: compute them once per dataset and pass them to
    :func:`evaluate` for every feature table.

    Parameters
    ----------
    pixels : numpy.ndarray
        Pixel matrix (N, P).
    seed : int, optional
        Seed of the randomised SVD.

    Returns
    -------
    numpy.ndarray
        The components (N, min(50, P, N - 1)).
    """
    return principal_components(pixels, min(50, pixels.shape[1], len(pixels) - 1), seed)


def evaluate(
    features: np.ndarray,
    table: pd.DataFrame,
    pixels: np.ndarray,
    *,
    label: str,
    group_by: str,
    seed: int = 0,
    options: dict | None = None,
    pixels_pca: np.ndarray | None = None,
) -> dict:
    """Compute all metrics of ``features`` (N, F) of the cells in ``table`` (same order).

    Parameters
    ----------
    features : numpy.ndarray
        Feature matrix (N, F), one row per cell of ``table``.
    table : pandas.DataFrame
        The cells' metadata: the ``label`` and ``group_by`` columns, and the trajectory and
        factor columns of ``options`` where the data has them.
    pixels : numpy.ndarray
        The input space (N, P) the neighbourhood metrics and mutual information compare
        against.
    label : str
        Column of the class each probe predicts.
    group_by : str
        Column of the group (plate, well, field) the grouped probes hold out whole.
    seed : int, optional
        Seed of every fold split, network and permutation.
    options : dict, optional
        Overrides of :data:`DEFAULTS`.
    pixels_pca : numpy.ndarray, optional
        :func:`pixel_components` of ``pixels`` (computed here otherwise).

    Returns
    -------
    dict
        One entry per metric family, and under ``skipped`` the reason of every family the
        data cannot support.

    Raises
    ------
    ValueError
        If ``features``, ``table`` and ``pixels`` differ in rows.
    """
    opts = {**DEFAULTS, **(options or {})}
    n = len(table)
    if features.shape[0] != n or pixels.shape[0] != n:
        raise ValueError(f"features ({features.shape[0]}), table ({n}) and pixels ({pixels.shape[0]}) differ in rows")
    labels = table[label].astype(str).to_numpy()
    groups = table[group_by].astype(str).to_numpy()
    probe_options = {"n_splits": int(opts["n_splits"]), "seed": seed, "cv": str(opts["cv"])}
    result: dict = {"n_cells": n, "n_features": int(features.shape[1]), "skipped": {}}
    result.update(_neighbourhood(features, pixels, opts))
    result.update(_probes(features, labels, groups, opts, probe_options))
    result.update(_retrieval(features, labels, groups, opts, seed, result["skipped"]))
    if opts["mi"]:
        result["mutual_information"] = _mutual_information(features, pixels, pixels_pca, opts, seed)
    result.update(_backbone(features, table, opts, seed, result["skipped"]))
    result.update(_disentanglement(features, table, opts, seed, result["skipped"]))
    return result


def load_pixel_space(path, seed: int) -> dict:
    """Read a dataset's pixel space (``pixel_space`` rule), with its principal components.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file: ``pixels``, ``cells``, ``n_total`` and ``pixels_pca``.
    seed : int
        Seed of :func:`pixel_components`, for a file written by an older ``pixel_space``
        job without ``pixels_pca``.

    Returns
    -------
    dict
        The file's arrays by name.
    """
    space = dict(np.load(path))
    if "pixels_pca" not in space:  # written by an older pixel_space job
        space["pixels_pca"] = pixel_components(space["pixels"], seed)
    return space


def evaluate_layer(
    table: pd.DataFrame, space: dict, cfg: dict, *, seed: int, dataset: str, model: str, layer: str, source=""
) -> dict:
    """Evaluate one feature table on the cells of the pixel space, as the metrics stage does.

    Parameters
    ----------
    table : pandas.DataFrame
        The feature table: ``Metadata_cell``, the ``label`` and ``group_by`` columns of
        ``cfg`` and the feature columns.
    space : dict
        The pixel space of :func:`load_pixel_space`; exactly its cells are evaluated, in its
        order.
    cfg : dict
        The ``metrics`` configuration: ``label``, ``group_by``, ``summary_k``, and the
        options of :func:`evaluate`.
    seed : int
        Seed of :func:`evaluate`.
    dataset, model, layer : str
        Names recorded in the result.
    source : str or os.PathLike, optional
        Where the table was read from, named in error messages.

    Returns
    -------
    dict
        The result of :func:`evaluate` with the names, ``n_cells_total``, ``label``,
        ``group_by`` and ``summary_k`` added.

    Raises
    ------
    ValueError
        If a configured column is missing, or the features hold NaN or inf.
    """
    for column in (cfg["label"], cfg["group_by"]):
        if column not in table.columns:
            raise ValueError(f"{source}: column {column!r} (from metrics config) is missing")
    # Evaluate exactly the cells of the pixel space, in its order.
    table = table.set_index("Metadata_cell").loc[space["cells"]].reset_index()
    features = table[feature_columns(table)].to_numpy(dtype=np.float64)
    if not np.isfinite(features).all():
        raise ValueError(f"{source}: features contain NaN or inf")
    options = {k: cfg[k] for k in cfg if k not in _NOT_OPTIONS}
    result = evaluate(
        features,
        table,
        space["pixels"],
        label=cfg["label"],
        group_by=cfg["group_by"],
        seed=seed,
        options=options,
        pixels_pca=space["pixels_pca"],
    )
    result.update(
        {
            "dataset": dataset,
            "model": model,
            "layer": layer,
            "n_cells_total": int(space["n_total"]),
            "label": cfg["label"],
            "group_by": cfg["group_by"],
            "summary_k": cfg["summary_k"],
        }
    )
    return result


def _nan(reason: str) -> dict:
    return {"accuracy_mean": math.nan, "accuracy_sd": math.nan, "skipped": reason}


def _probe(name, fn, features, labels, groups, **kw):
    """Run a classifier probe, or report why it cannot run on these labels/groups."""
    try:
        cv_splits(labels, groups, n_splits=kw["n_splits"], seed=kw["seed"], cv=kw.get("cv", "auto"))
    except ValueError as exc:
        log.warning("%s skipped: %s", name, exc)
        return _nan(str(exc))
    return fn(features, labels, groups=groups, **kw)


def _zscore(features: np.ndarray) -> np.ndarray:
    sd = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _neighbourhood(features, pixels, opts) -> dict:
    """Trustworthiness and continuity at the summary sizes, and the curves over k.

    The fixed sizes of the summary and the curve over k come from one pass over the distance
    rows (the extra sizes cost a few integer sums per chunk).
    """
    n = len(features)
    ks = [k for k in opts["neighbors"] if k < n / 2]
    curve_ks = neighbourhood_sizes(n, count=int(opts["curve_sizes"]), cap=int(opts["max_k"]))
    out: dict = {"trustworthiness": {}, "continuity": {}}
    if not (ks or curve_ks):
        return out
    both = neighbourhood_curves(pixels, features, sorted(set(ks) | set(curve_ks)), precision=opts["distance_precision"])
    for m in ("trustworthiness", "continuity"):
        out[m] = {str(k): both[m][k] for k in ks}
    if curve_ks:
        values = {m: [float(both[m][k]) for k in curve_ks] for m in ("trustworthiness", "continuity", "lcmc")}
        out["curves"] = {
            "ks": [int(k) for k in curve_ks],
            **values,
            "auc": {m: curve_auc(curve_ks, v) for m, v in values.items()},
        }
    return out


def _probes(features, labels, groups, opts, kw) -> dict:
    """Run the classifier probes: group-held-out folds are the honest number; stratified for reference."""
    out = {"logreg_grouped": _probe("grouped logreg", logreg_accuracy, features, labels, groups, **kw)}
    # The grouped protocol actually used (folds, groups per class, classes left out), once
    # per table: every grouped probe shares it.
    out["protocol"] = out["logreg_grouped"].get("protocol") or {"skipped": out["logreg_grouped"].get("skipped")}
    out["logreg_stratified"] = _probe("stratified logreg", logreg_accuracy, features, labels, None, **kw)
    if opts["mlp"]:
        epochs = int(opts["mlp_epochs"])
        out["mlp_grouped"] = _probe("grouped MLP", mlp_accuracy, features, labels, groups, epochs=epochs, **kw)
        out["mlp_stratified"] = _probe("stratified MLP", mlp_accuracy, features, labels, None, epochs=epochs, **kw)
    if opts["knn"]:
        ks = tuple(int(k) for k in opts["knn"])
        knn = _probe("grouped kNN", knn_accuracy, features, labels, groups, ks=ks, standardize=True, **kw)
        out["knn_grouped"] = {
            str(k): {key: v for key, v in res.items() if key in ("accuracy_mean", "accuracy_sd", "f1_macro_mean")}
            for k, res in knn.get("by_k", {}).items()
        } or {"skipped": knn.get("skipped")}
    return out


def _retrieval(features, labels, groups, opts, seed, skipped) -> dict:
    """Score retrieval of same-class cells and of same-class group profiles (cosine, z-scored features)."""
    if len(np.unique(labels)) < 2:
        skipped["retrieval"] = "one class"
        return {}
    z = _zscore(features)
    cells_map = mean_average_precision(z, labels)
    out = {"retrieval": {"map": float(cells_map["map"]), "per_class": cells_map["per_class"]}}
    columns = [f"f{i}" for i in range(z.shape[1])]
    frame = pd.DataFrame(z, columns=columns)
    frame["group"], frame["label"] = groups, labels
    profiles = aggregate_profiles(frame, ["group", "label"], columns)
    if profiles["label"].value_counts().max() < 2:
        skipped["profile_retrieval"] = "no class has two group profiles"
        return out
    prof = mean_average_precision(profiles[columns].to_numpy(), profiles["label"])
    out["profile_retrieval"] = {"map": float(prof["map"]), "n_profiles": int(len(profiles))}
    if int(opts.get("map_permutations") or 0) > 0:
        perm = map_permutation_pvalues(
            profiles[columns].to_numpy(),
            profiles["label"].to_numpy(),
            n_permutations=int(opts["map_permutations"]),
            seed=seed,
        )
        out["profile_retrieval"]["pvalue"] = {str(k): float(v) for k, v in perm["pvalue"].items()}
    return out


def _mutual_information(features, pixels, pixels_pca, opts, seed) -> dict:
    """Mutual information between the pixels and the features (MINE-style critic)."""
    # Lazy: the critic needs torch, and this module is imported by torch-free jobs (pixel_space).
    from workflow_scripts.metrics.mutual_information import mutual_information

    mi = mutual_information(
        pixel_components(pixels, seed) if pixels_pca is None else pixels_pca,
        features,
        bound=opts["mi_bound"],
        epochs=int(opts["mi_epochs"]),
        batch_size=min(512, len(features)),
        last=max(1, int(opts["mi_epochs"]) // 5),
        seed=seed,
    )
    return {k: mi[k] for k in ("mi", "mi_sd", "cap", "bound", "epochs")}


def _backbone(features, table, opts, seed, skipped) -> dict:
    """Summarise the trajectory backbone, where a continuous ground truth exists."""
    trajectory = opts.get("trajectory")
    if not (trajectory and trajectory in table.columns and table[trajectory].notna().all()):
        skipped["backbone"] = f"no continuous ground truth column {trajectory!r}"
        return {}
    bb = backbone(features, table[trajectory].to_numpy(dtype=float), seed=seed)
    return {"backbone": {k: float(bb[k]) for k in _BACKBONE_KEYS if k in bb}}


def _disentanglement(features, table, opts, seed, skipped) -> dict:
    """MIG and SAP against the ground-truth factor columns the table has."""
    factor_cols = [c for c in opts.get("factors") or [] if c in table.columns and table[c].notna().all()]
    if not factor_cols:
        skipped["disentanglement"] = "no ground-truth factor columns"
        return {}
    if features.shape[1] < 2:
        skipped["disentanglement"] = "MIG and SAP need at least 2 feature dimensions"
        return {}
    factors, flags = _factor_matrix(table, factor_cols)
    return {
        "disentanglement": {
            "factors": factor_cols,
            "mig": float(mig(features, factors, discrete=flags)["mig"]),
            "sap": float(sap(features, factors, discrete=flags, seed=seed)["sap"]),
        }
    }


def _factor_matrix(table, columns) -> tuple[np.ndarray, list[bool] | None]:
    """Factors (N, K): numeric columns as they are, others as category codes (discrete).

    The flags are None when every factor is numeric (MIG and SAP then decide), else one per
    factor: True for a categorical one, False for a numeric one.
    """
    factors, discrete = [], []
    for column in columns:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values):
            factors.append(values.to_numpy(dtype=float))
            discrete.append(None)
        else:
            factors.append(pd.factorize(values.astype(str))[0].astype(float))
            discrete.append(True)
    flags = [bool(d) if d is not None else None for d in discrete]
    flags = None if all(f is None for f in flags) else [f if f is not None else False for f in flags]
    return np.stack(factors, axis=1), flags
