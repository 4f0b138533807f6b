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


#: Metrics that rank layers, best first: the first with a finite value for some layer is used
#: (a dataset with one class or one group has no accuracy, but still a trustworthiness).
RANKING_METRICS = ("logreg_accuracy_grouped", "logreg_accuracy_stratified", "trustworthiness")

RANKING_TITLES = {
    "logreg_accuracy_grouped": "logistic regression, groups held out",
    "logreg_accuracy_stratified": "logistic regression, stratified folds",
    "trustworthiness": "trustworthiness",
}


def ranking_metric(summary) -> str:
    """The column that ranks the layers of ``summary`` (see :data:`RANKING_METRICS`)."""
    for column in RANKING_METRICS:
        if column in summary and summary[column].astype(float).notna().any():
            return column
    raise ValueError(f"summary: none of {list(RANKING_METRICS)} has a finite value")
