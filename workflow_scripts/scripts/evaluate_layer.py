"""Rule evaluate_layer: metrics of one model layer's features."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.io import feature_columns, write_json
from workflow_scripts.metrics.classification import cv_splits, logreg_accuracy
from workflow_scripts.metrics.neighbourhood import trustworthiness_continuity
from workflow_scripts.runner import run

log = logging.getLogger("evaluate_layer")


def _classify(features, labels, groups, n_splits, seed):
    """Cross-validated accuracy, or NaN with the reason when the data cannot be split (one
    class, one group, a class of one cell: a single-image dataset still gets its other metrics)."""
    try:
        cv_splits(labels, groups, n_splits=n_splits, seed=seed)
    except ValueError as exc:
        kind = "grouped" if groups is not None else "stratified"
        log.warning("%s classification skipped: %s", kind, exc)
        return {"accuracy_mean": float("nan"), "accuracy_sd": float("nan"), "skipped": str(exc)}
    return logreg_accuracy(features, labels, groups=groups, n_splits=n_splits, seed=seed)


def main(smk):
    cfg = smk.params.metrics
    seed = int(smk.params.seed)
    table = pd.read_parquet(smk.input.features)
    space = np.load(smk.input.pixels)
    for column in (cfg["label"], cfg["group_by"]):
        if column not in table.columns:
            raise ValueError(f"{smk.input.features}: column {column!r} (from metrics config) is missing")
    # Evaluate exactly the cells of the pixel space, in its order.
    table = table.set_index("Metadata_cell").loc[space["cells"]].reset_index()
    features = table[feature_columns(table)].to_numpy(dtype=np.float64)
    if not np.isfinite(features).all():
        raise ValueError(f"{smk.input.features}: features contain NaN or inf")
    labels = table[cfg["label"]].astype(str).to_numpy()
    groups = table[cfg["group_by"]].astype(str).to_numpy()
    n = len(table)
    ks = [k for k in cfg["neighbors"] if k < n / 2]
    skipped = sorted(set(cfg["neighbors"]) - set(ks))
    if skipped:
        log.warning("neighbourhood sizes %s skipped: they need more than %d cells", skipped, 2 * max(skipped))
    neighbourhood = trustworthiness_continuity(space["pixels"], features, ks)
    grouped = _classify(features, labels, groups, cfg["n_splits"], seed)
    stratified = _classify(features, labels, None, cfg["n_splits"], seed)
    result = {
        "dataset": smk.wildcards.dataset,
        "model": smk.wildcards.model,
        "layer": smk.wildcards.layer,
        "n_cells": n,
        "n_cells_total": int(space["n_total"]),
        "n_features": int(features.shape[1]),
        "label": cfg["label"],
        "group_by": cfg["group_by"],
        "logreg_grouped": grouped,
        "logreg_stratified": stratified,
        "trustworthiness": {str(k): v for k, v in neighbourhood["trustworthiness"].items()},
        "continuity": {str(k): v for k, v in neighbourhood["continuity"].items()},
        "summary_k": cfg["summary_k"],
    }
    log.info(
        "%s/%s: grouped acc %.3f, stratified acc %.3f",
        smk.wildcards.model,
        smk.wildcards.layer,
        grouped["accuracy_mean"],
        stratified["accuracy_mean"],
    )
    write_json(smk.output[0], result)


run(snakemake, main)  # noqa: F821
