"""Map figures of one feature table: UMAP and t-SNE of its cells.

The cells are coloured by class, group, trajectory (where the data has one) and per-cell local
quality, as the report shows them for the best learned layer and for the hand-crafted baseline.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from workflow_scripts.embedding import embed_2d
from workflow_scripts.figures import plot_embedding
from workflow_scripts.io import feature_columns
from workflow_scripts.metrics.classification import logreg_accuracy
from workflow_scripts.metrics.neighbourhood import local_quality
from workflow_scripts.metrics.summary import RANKING_TITLES, best_layer, ranking_metric, summary_table

__all__ = ["best_learned_layer", "cells_table", "handcrafted_title", "layer_maps", "reusable_umap"]

log = logging.getLogger(__name__)


def layer_maps(
    table: pd.DataFrame,
    pixels: np.ndarray,
    outputs: dict[str, str],
    *,
    title: str,
    label: str,
    group: str,
    seed: int,
    umap: np.ndarray | None = None,
) -> pd.DataFrame:
    """Draw ``outputs["umap"]`` and ``outputs["tsne"]`` for the cells of ``table``.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per cell: ``Metadata_*`` columns (``label`` and ``group`` among them,
        ``Metadata_trajectory`` optional) and the feature columns.
    pixels : numpy.ndarray, shape (N, P)
        The same cells' pixels, in the same order: each cell's local quality is the share of
        its 10 nearest neighbours in pixel space kept in feature space.
    outputs : dict of str to str
        Output image file of each map, under the keys ``umap`` and ``tsne``.
    title : str
        What is mapped, e.g. the model and layer; each figure's title is the method's name
        followed by it.
    label, group : str
        Class and group columns, each a colouring.
    seed : int
        Seed of the embeddings.
    umap : numpy.ndarray, shape (N, 2), optional
        A UMAP of this table already computed (the explorer page's), used instead of
        computing it again.

    Returns
    -------
    pandas.DataFrame
        The cells' ``Metadata_*`` columns with ``local_quality`` and both maps' coordinates
        (``UMAP_1`` ... ``TSNE_2``).
    """
    features = table[feature_columns(table)].to_numpy(np.float32)
    quality = local_quality(pixels, features.astype(np.float64), k=10)
    colour_by = {"class": table[label].astype(str).to_numpy(), "group": table[group].astype(str).to_numpy()}
    if "Metadata_trajectory" in table.columns:
        colour_by["trajectory"] = table["Metadata_trajectory"].to_numpy(dtype=float)
    colour_by["local quality"] = quality
    out = table[[c for c in table.columns if c.startswith("Metadata_")]].copy()
    out["local_quality"] = quality
    for method in ("umap", "tsne"):
        coords = umap if method == "umap" and umap is not None else embed_2d(features, method=method, seed=seed)
        plot_embedding(coords, colour_by, outputs[method], title=f"{method.upper()} of {title}")
        out[f"{method.upper()}_1"], out[f"{method.upper()}_2"] = coords[:, 0], coords[:, 1]
    return out


def reusable_umap(paths: list[str], model: str, layer: str, cells: np.ndarray) -> np.ndarray | None:
    """Return the UMAP of ``model``/``layer`` from its explorer page's coordinates.

    Parameters
    ----------
    paths : list of str
        Coordinate files of the explorer pages, ``.../explorer/<model>/<layer>.coords.parquet``.
    model, layer : str
        The layer wanted.
    cells : numpy.ndarray
        ``Metadata_cell`` of the cells to map, in the order wanted.

    Returns
    -------
    numpy.ndarray, shape (N, 2), or None
        The page's ``UMAP_1`` and ``UMAP_2`` in the order of ``cells``; None when no page was
        built for that layer or it shows other cells (a subsample).
    """
    suffix = f"/explorer/{model}/{layer}.coords.parquet"
    path = next((p for p in paths if str(p).endswith(suffix)), None)
    if path is None:
        return None
    coords = pd.read_parquet(path).set_index("Metadata_cell")
    if len(coords) != len(cells) or not coords.index.isin(cells).all():
        return None
    return coords.loc[cells, ["UMAP_1", "UMAP_2"]].to_numpy()


def cells_table(path, cells: np.ndarray) -> pd.DataFrame:
    """Read a feature table and keep the rows of ``cells``, in that order.

    Parameters
    ----------
    path : str or os.PathLike
        A feature table (Parquet, with ``Metadata_cell``).
    cells : numpy.ndarray
        Cell ids, e.g. those of the pixel space the metrics used.

    Returns
    -------
    pandas.DataFrame
        One row per cell of ``cells``.
    """
    return pd.read_parquet(path).set_index("Metadata_cell").loc[cells].reset_index()


def best_learned_layer(results: list[dict], families: dict) -> tuple[str, str, str, float]:
    """Rank the layers as the summary does and return the best learned one.

    Parameters
    ----------
    results : list of dict
        Each layer's metrics (the ``metrics/<model>/<layer>.json`` files).
    families : dict
        Model name to family; models not listed are baselines, ranked only when no learned
        layer exists.

    Returns
    -------
    tuple
        ``(model, layer, metric, score)``: the ranking column and the best layer's value.
    """
    summary = summary_table(results, families, {})
    learned = summary[summary["kind"] != "baseline"]
    ranked = learned if len(learned) else summary
    metric = ranking_metric(ranked)
    best = best_layer(ranked, metric)
    return best.model, best.layer, metric, float(best[metric])


def handcrafted_title(table: pd.DataFrame, *, label: str, group: str, metrics: dict, seed: int) -> str:
    """Return the hand-crafted maps' title with the score the evaluation reports.

    The score is the grouped logistic regression (else the stratified one) the evaluation
    computes: the same function on the same cells, folds and seed give the same number, in
    under a second with the Newton-CG solver, so the maps need no metric file.

    Parameters
    ----------
    table : pandas.DataFrame
        The hand-crafted features of the metric cells.
    label, group : str
        The class and group columns.
    metrics : dict
        The ``metrics`` configuration section (``n_splits``, ``cv``).
    seed : int
        The evaluation's seed.

    Returns
    -------
    str
        The title, without a score when neither probe applies (one class, one group).
    """
    features = table[feature_columns(table)].to_numpy(np.float64)
    labels = table[label].astype(str).to_numpy()
    groups = table[group].astype(str).to_numpy()
    common = {"n_splits": int(metrics["n_splits"]), "seed": int(seed), "cv": str(metrics.get("cv", "auto"))}
    for key, kw in (("logreg_accuracy_grouped", {"groups": groups}), ("logreg_accuracy_stratified", {})):
        try:
            score = logreg_accuracy(features, labels, **kw, **common)["accuracy_mean"]
        except ValueError as exc:  # one class, one group: the evaluation reports it skipped too
            log.info("%s not available for the title: %s", key, exc)
            continue
        return f"hand-crafted features ({RANKING_TITLES[key]} {score:.3f})"
    return "hand-crafted features"
