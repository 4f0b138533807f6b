"""Map figures of one feature table: UMAP and t-SNE of its cells, coloured by class, group,
trajectory (where the data has one) and per-cell local quality, as the report shows them for
the best learned layer and for the hand-crafted baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.embedding import embed_2d
from workflow_scripts.io import feature_columns
from workflow_scripts.metrics.neighbourhood import local_quality
from workflow_scripts.plots import plot_embedding

__all__ = ["layer_maps", "reusable_umap"]


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

    ``pixels`` (N, P) are the same cells' pixels, in the same order: each cell's local quality
    is the share of its 10 nearest neighbours in pixel space kept in feature space. ``umap``
    (N, 2), if given, is a UMAP of this table already computed (the explorer page's), used
    instead of computing it again. Returns the cells' ``Metadata_*`` columns with
    ``local_quality`` and both maps' coordinates (``UMAP_1`` ... ``TSNE_2``).
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
    """The UMAP of ``model``/``layer`` from its explorer page's coordinates (one of ``paths``,
    ``.../explorer/<model>/<layer>.coords.parquet``), in the order of ``cells``; None when no
    page was built for that layer or it shows other cells (a subsample)."""
    suffix = f"/explorer/{model}/{layer}.coords.parquet"
    path = next((p for p in paths if str(p).endswith(suffix)), None)
    if path is None:
        return None
    coords = pd.read_parquet(path).set_index("Metadata_cell")
    if len(coords) != len(cells) or not coords.index.isin(cells).all():
        return None
    return coords.loc[cells, ["UMAP_1", "UMAP_2"]].to_numpy()
