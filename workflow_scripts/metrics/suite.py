"""Every metric of one feature table, the way the report compares them.

One function, :func:`evaluate`, so a layer of a trained model, a baseline and a test fixture
go through exactly the same code. Metrics that the data cannot support (one class, one group,
no continuous ground truth) are reported as skipped, with the reason, never as a number.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from workflow_scripts.metrics.classification import cv_splits, knn_accuracy, logreg_accuracy, mlp_accuracy
from workflow_scripts.metrics.neighbourhood import curve_auc, neighbourhood_curves, neighbourhood_sizes
from workflow_scripts.metrics.projection import principal_components
from workflow_scripts.metrics.retrieval import aggregate_profiles, mean_average_precision

log = logging.getLogger(__name__)

__all__ = ["evaluate", "pixel_components", "DEFAULTS"]

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


def pixel_components(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The principal components of the pixel space that the mutual-information critic reads
    (at most 50). They depend on the pixels alone: compute them once per dataset and pass them
    to :func:`evaluate` for every feature table."""
    return principal_components(pixels, min(50, pixels.shape[1], len(pixels) - 1), seed)


def _zscore(features: np.ndarray) -> np.ndarray:
    sd = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


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
    """All metrics of ``features`` (N, F) of the cells in ``table`` (same order).

    ``pixels`` (N, P) is the input space the neighbourhood metrics and mutual information
    compare against; ``pixels_pca``, if given, its :func:`pixel_components` (computed here
    otherwise). ``options`` overrides :data:`DEFAULTS`.
    """
    opts = {**DEFAULTS, **(options or {})}
    n = len(table)
    if features.shape[0] != n or pixels.shape[0] != n:
        raise ValueError(f"features ({features.shape[0]}), table ({n}) and pixels ({pixels.shape[0]}) differ in rows")
    labels = table[label].astype(str).to_numpy()
    groups = table[group_by].astype(str).to_numpy()
    n_splits = int(opts["n_splits"])
    result: dict = {"n_cells": n, "n_features": int(features.shape[1]), "skipped": {}}

    # Neighbourhood preservation: the fixed sizes of the summary and the curve over k, in
    # one pass over the distance rows (the extra sizes cost a few integer sums per chunk).
    ks = [k for k in opts["neighbors"] if k < n / 2]
    curve_ks = neighbourhood_sizes(n, count=int(opts["curve_sizes"]), cap=int(opts["max_k"]))
    result["trustworthiness"], result["continuity"] = {}, {}
    if ks or curve_ks:
        both = neighbourhood_curves(
            pixels, features, sorted(set(ks) | set(curve_ks)), precision=opts["distance_precision"]
        )
        for m in ("trustworthiness", "continuity"):
            result[m] = {str(k): both[m][k] for k in ks}
        if curve_ks:
            values = {m: [float(both[m][k]) for k in curve_ks] for m in ("trustworthiness", "continuity", "lcmc")}
            result["curves"] = {
                "ks": [int(k) for k in curve_ks],
                **values,
                "auc": {m: curve_auc(curve_ks, v) for m, v in values.items()},
            }

    # Classifier probes: group-held-out folds are the honest number; stratified for reference.
    kw = {"n_splits": n_splits, "seed": seed, "cv": str(opts["cv"])}
    result["logreg_grouped"] = _probe("grouped logreg", logreg_accuracy, features, labels, groups, **kw)
    # The grouped protocol actually used (folds, groups per class, classes left out), once
    # per table: every grouped probe shares it.
    result["protocol"] = result["logreg_grouped"].get("protocol") or {"skipped": result["logreg_grouped"].get("skipped")}
    result["logreg_stratified"] = _probe("stratified logreg", logreg_accuracy, features, labels, None, **kw)
    if opts["mlp"]:
        epochs = int(opts["mlp_epochs"])
        result["mlp_grouped"] = _probe("grouped MLP", mlp_accuracy, features, labels, groups, epochs=epochs, **kw)
        result["mlp_stratified"] = _probe("stratified MLP", mlp_accuracy, features, labels, None, epochs=epochs, **kw)
    if opts["knn"]:
        knn = _probe(
            "grouped kNN",
            knn_accuracy,
            features,
            labels,
            groups,
            ks=tuple(int(k) for k in opts["knn"]),
            standardize=True,
            **kw,
        )
        result["knn_grouped"] = {
            str(k): {key: v for key, v in res.items() if key in ("accuracy_mean", "accuracy_sd", "f1_macro_mean")}
            for k, res in knn.get("by_k", {}).items()
        } or {"skipped": knn.get("skipped")}

    # Retrieval of same-class cells and of same-class group profiles (cosine, z-scored features).
    z = _zscore(features)
    if len(np.unique(labels)) >= 2:
        cells_map = mean_average_precision(z, labels)
        result["retrieval"] = {"map": float(cells_map["map"]), "per_class": cells_map["per_class"]}
        frame = pd.DataFrame(z, columns=[f"f{i}" for i in range(z.shape[1])])
        frame["group"], frame["label"] = groups, labels
        profiles = aggregate_profiles(frame, ["group", "label"], [f"f{i}" for i in range(z.shape[1])])
        if profiles["label"].value_counts().max() >= 2:
            prof = mean_average_precision(profiles[[f"f{i}" for i in range(z.shape[1])]].to_numpy(), profiles["label"])
            result["profile_retrieval"] = {"map": float(prof["map"]), "n_profiles": int(len(profiles))}
            if int(opts.get("map_permutations") or 0) > 0:
                from workflow_scripts.metrics.retrieval import map_permutation_pvalues

                perm = map_permutation_pvalues(
                    profiles[[f"f{i}" for i in range(z.shape[1])]].to_numpy(),
                    profiles["label"].to_numpy(),
                    n_permutations=int(opts["map_permutations"]),
                    seed=seed,
                )
                result["profile_retrieval"]["pvalue"] = {str(k): float(v) for k, v in perm["pvalue"].items()}
        else:
            result["skipped"]["profile_retrieval"] = "no class has two group profiles"
    else:
        result["skipped"]["retrieval"] = "one class"

    # Mutual information between the pixels and the features (MINE-style critic).
    if opts["mi"]:
        from workflow_scripts.metrics.mutual_information import mutual_information

        mi = mutual_information(
            pixel_components(pixels, seed) if pixels_pca is None else pixels_pca,
            features,
            bound=opts["mi_bound"],
            epochs=int(opts["mi_epochs"]),
            batch_size=min(512, n),
            last=max(1, int(opts["mi_epochs"]) // 5),
            seed=seed,
        )
        result["mutual_information"] = {k: mi[k] for k in ("mi", "mi_sd", "cap", "bound", "epochs")}

    # Trajectory (backbone) and disentanglement, where ground truth exists.
    trajectory = opts.get("trajectory")
    if trajectory and trajectory in table.columns and table[trajectory].notna().all():
        from workflow_scripts.metrics.trajectory import backbone

        bb = backbone(features, table[trajectory].to_numpy(dtype=float), seed=seed)
        result["backbone"] = {
            k: float(bb[k])
            for k in (
                "tortuosity",
                "centroid_spearman",
                "centroid_kendall",
                "cell_spearman",
                "cell_kendall",
                "arc_length",
            )
            if k in bb
        }
    else:
        result["skipped"]["backbone"] = f"no continuous ground truth column {trajectory!r}"
    factor_cols = [c for c in opts.get("factors") or [] if c in table.columns and table[c].notna().all()]
    if factor_cols and features.shape[1] < 2:
        result["skipped"]["disentanglement"] = "MIG and SAP need at least 2 feature dimensions"
    elif factor_cols:
        from workflow_scripts.metrics.disentanglement import mig, sap

        factors, discrete = [], []
        for column in factor_cols:
            values = table[column]
            if pd.api.types.is_numeric_dtype(values):
                factors.append(values.to_numpy(dtype=float))
                discrete.append(None)
            else:
                factors.append(pd.factorize(values.astype(str))[0].astype(float))
                discrete.append(True)
        factors = np.stack(factors, axis=1)
        flags = [bool(d) if d is not None else None for d in discrete]
        flags = None if all(f is None for f in flags) else [f if f is not None else False for f in flags]
        result["disentanglement"] = {
            "factors": factor_cols,
            "mig": float(mig(features, factors, discrete=flags)["mig"]),
            "sap": float(sap(features, factors, discrete=flags, seed=seed)["sap"]),
        }
    else:
        result["skipped"]["disentanglement"] = "no ground-truth factor columns"
    return result
