"""The metric summary table: one row per (model, layer)."""

from __future__ import annotations

import math

#: Columns of results/<dataset>/metrics/summary.csv, in order.
SUMMARY_COLUMNS = [
    "model",
    "layer",
    "n_cells",
    "n_features",
    "logreg_accuracy_grouped",
    "logreg_accuracy_grouped_sd",
    "logreg_accuracy_stratified",
    "logreg_accuracy_stratified_sd",
    "trustworthiness",
    "continuity",
]


def summary_row(result: dict) -> dict:
    """Flatten one layer's metrics JSON into a summary row (neighbourhood metrics at summary_k)."""
    k = str(result["summary_k"])
    row = {
        "model": result["model"],
        "layer": result["layer"],
        "n_cells": result["n_cells"],
        "n_features": result["n_features"],
        "logreg_accuracy_grouped": result["logreg_grouped"]["accuracy_mean"],
        "logreg_accuracy_grouped_sd": result["logreg_grouped"]["accuracy_sd"],
        "logreg_accuracy_stratified": result["logreg_stratified"]["accuracy_mean"],
        "logreg_accuracy_stratified_sd": result["logreg_stratified"]["accuracy_sd"],
        "trustworthiness": result["trustworthiness"].get(k, math.nan),
        "continuity": result["continuity"].get(k, math.nan),
    }
    return {c: row[c] for c in SUMMARY_COLUMNS}
