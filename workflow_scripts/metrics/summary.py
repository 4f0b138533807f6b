"""The metric summary table: one row per (model, layer).

Each layer's metrics JSON (:func:`workflow_scripts.metrics.suite.evaluate_layer`) becomes a
flat row (:func:`summary_row`); :func:`summary_table` stacks them, :func:`best_per_metric`
and :func:`ranking_metric` read the table back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

#: Columns of results/<dataset>/metrics/summary.csv, in order (``knn<k>_accuracy_grouped``
#: columns follow ``mlp_f1_grouped``, one per ``metrics.knn`` value).
SUMMARY_COLUMNS = [
    "model",
    "layer",
    "kind",
    "normalize",
    "n_cells",
    "n_features",
    "logreg_accuracy_grouped",
    "logreg_accuracy_grouped_sd",
    "logreg_f1_grouped",
    "logreg_accuracy_stratified",
    "logreg_accuracy_stratified_sd",
    "mlp_accuracy_grouped",
    "mlp_accuracy_grouped_sd",
    "mlp_f1_grouped",
    "mlp_accuracy_stratified",
    "map",
    "profile_map",
    "mutual_information",
    "trustworthiness",
    "continuity",
    "trustworthiness_auc",
    "continuity_auc",
    "lcmc_auc",
    "backbone_spearman",
    "backbone_tortuosity",
    "mig",
    "sap",
]

#: Higher is better for every metric column except these (lower is better).
LOWER_IS_BETTER = {"backbone_tortuosity", "plate_map"}


def _get(result: dict, *path, default=math.nan):
    value = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return default if value is None else value


def summary_row(result: dict, kind: str = "", normalize: str = "") -> dict:
    """Flatten one layer's metrics JSON into a summary row.

    Neighbourhood metrics are taken at ``summary_k``; metrics a layer has no value for
    (skipped) are NaN.

    Parameters
    ----------
    result : dict
        One layer's metrics, as written by the metrics stage.
    kind : str, optional
        The model family (``"baseline"`` for a baseline).
    normalize : str, optional
        The intensity normalisation the features were computed with (empty where none
        applies).

    Returns
    -------
    dict
        The :data:`SUMMARY_COLUMNS`, in order, with one ``knn<k>_accuracy_grouped`` column
        per kNN size after ``mlp_f1_grouped``.
    """
    k = str(result["summary_k"])
    row = {
        "model": result["model"],
        "layer": result["layer"],
        "kind": kind,
        "normalize": normalize,
        "n_cells": result["n_cells"],
        "n_features": result["n_features"],
        "logreg_accuracy_grouped": _get(result, "logreg_grouped", "accuracy_mean"),
        "logreg_accuracy_grouped_sd": _get(result, "logreg_grouped", "accuracy_sd"),
        "logreg_f1_grouped": _get(result, "logreg_grouped", "f1_macro_mean"),
        "logreg_accuracy_stratified": _get(result, "logreg_stratified", "accuracy_mean"),
        "logreg_accuracy_stratified_sd": _get(result, "logreg_stratified", "accuracy_sd"),
        "mlp_accuracy_grouped": _get(result, "mlp_grouped", "accuracy_mean"),
        "mlp_accuracy_grouped_sd": _get(result, "mlp_grouped", "accuracy_sd"),
        "mlp_f1_grouped": _get(result, "mlp_grouped", "f1_macro_mean"),
        "mlp_accuracy_stratified": _get(result, "mlp_stratified", "accuracy_mean"),
        "map": _get(result, "retrieval", "map"),
        "profile_map": _get(result, "profile_retrieval", "map"),
        "mutual_information": _get(result, "mutual_information", "mi"),
        "trustworthiness": _get(result, "trustworthiness", k),
        "continuity": _get(result, "continuity", k),
        "trustworthiness_auc": _get(result, "curves", "auc", "trustworthiness"),
        "continuity_auc": _get(result, "curves", "auc", "continuity"),
        "lcmc_auc": _get(result, "curves", "auc", "lcmc"),
        "backbone_spearman": _get(result, "backbone", "cell_spearman"),
        "backbone_tortuosity": _get(result, "backbone", "tortuosity"),
        "mig": _get(result, "disentanglement", "mig"),
        "sap": _get(result, "disentanglement", "sap"),
    }
    out = {c: row[c] for c in SUMMARY_COLUMNS}
    knn = result.get("knn_grouped") or {}
    at = SUMMARY_COLUMNS.index("mlp_f1_grouped") + 1
    items = list(out.items())
    extra = [(f"knn{kk}_accuracy_grouped", _get(knn, kk, "accuracy_mean")) for kk in knn if kk != "skipped"]
    return dict(items[:at] + extra + items[at:])


def summary_table(results: Iterable[dict], families: dict, normalize: dict) -> pd.DataFrame:
    """Stack the summary rows of several layers' metrics into the summary table.

    Parameters
    ----------
    results : iterable of dict
        Each layer's metrics, in the order of the table's rows.
    families : dict
        Model name to family (the ``kind`` column); a model not listed is a baseline.
    normalize : dict
        Model name to intensity normalisation (empty where not listed).

    Returns
    -------
    pandas.DataFrame
        One :func:`summary_row` per result.
    """
    rows = []
    for result in results:
        model = result["model"]
        rows.append(summary_row(result, kind=families.get(model, "baseline"), normalize=normalize.get(model, "")))
    return pd.DataFrame(rows)


def metric_columns(summary) -> list[str]:
    """Return the metric columns of a summary table (everything but identifiers and counts).

    Parameters
    ----------
    summary : pandas.DataFrame
        A summary table.

    Returns
    -------
    list of str
        Its columns less the identifiers, the counts, the ``*_sd`` columns and the
        ``*_chance`` levels.

    Examples
    --------
    >>> table = pd.DataFrame(columns=["model", "layer", "n_cells", "map", "map_sd", "mig"])
    >>> metric_columns(table)
    ['map', 'mig']
    """
    return [
        c
        for c in summary.columns
        if c not in ("model", "layer", "kind", "normalize", "n_cells", "n_features")
        and not c.endswith(("_sd", "_chance"))
    ]


def best_per_metric(summary) -> dict[str, tuple[str, str]]:
    """Find, for each metric column with a value, the (model, layer) that scores best.

    Parameters
    ----------
    summary : pandas.DataFrame
        A summary table.

    Returns
    -------
    dict
        Metric column to ``(model, layer)``; lowest wins for :data:`LOWER_IS_BETTER`,
        highest otherwise, the first row on ties.

    Examples
    --------
    >>> table = pd.DataFrame({"model": ["ae", "vae"], "layer": ["z", "mu"], "map": [0.4, 0.6],
    ...                       "backbone_tortuosity": [1.2, 1.5], "mig": [float("nan")] * 2})
    >>> best_per_metric(table)
    {'map': ('vae', 'mu'), 'backbone_tortuosity': ('ae', 'z')}
    """
    best = {}
    for column in metric_columns(summary):
        values = summary[column].astype(float)
        if values.notna().any():
            i = values.idxmin() if column in LOWER_IS_BETTER else values.idxmax()
            best[column] = (summary.at[i, "model"], summary.at[i, "layer"])
    return best


#: Metrics that rank layers, best first: the first with a finite value for some layer is used
#: (a dataset with one class or one group has no accuracy, but still a trustworthiness).
RANKING_METRICS = ("logreg_accuracy_grouped", "logreg_accuracy_stratified", "trustworthiness")

RANKING_TITLES = {
    "logreg_accuracy_grouped": "logistic regression, groups held out",
    "logreg_accuracy_stratified": "logistic regression, stratified folds",
    "trustworthiness": "trustworthiness",
}


def ranking_metric(summary) -> str:
    """Return the column that ranks the layers of ``summary`` (see :data:`RANKING_METRICS`).

    Parameters
    ----------
    summary : pandas.DataFrame
        A summary table.

    Returns
    -------
    str
        The first of :data:`RANKING_METRICS` with a finite value.

    Raises
    ------
    ValueError
        If none of them has one.

    Examples
    --------
    >>> ranking_metric(pd.DataFrame({"logreg_accuracy_grouped": [float("nan")], "trustworthiness": [0.9]}))
    'trustworthiness'
    """
    for column in RANKING_METRICS:
        if column in summary and summary[column].astype(float).notna().any():
            return column
    raise ValueError(f"summary: none of {list(RANKING_METRICS)} has a finite value")


def best_layer(summary: pd.DataFrame, metric: str) -> pd.Series:
    """Return the row of ``summary`` with the highest ``metric`` (the first of ties).

    Parameters
    ----------
    summary : pandas.DataFrame
        A summary table, or part of one.
    metric : str
        The ranking column (:func:`ranking_metric`).

    Returns
    -------
    pandas.Series
        The best row (``model``, ``layer`` and the metrics).

    Examples
    --------
    >>> table = pd.DataFrame({"model": ["a", "b", "c"], "layer": ["x", "y", "z"], "score": [0.5, 0.7, 0.7]})
    >>> best_layer(table, "score").model
    'b'
    """
    return summary.sort_values(metric, ascending=False, kind="stable").iloc[0]
