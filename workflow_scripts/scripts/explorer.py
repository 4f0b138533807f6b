"""Rule explorer: the interactive explorer pages of a dataset, one per model layer in
``explorer.layers`` (workflow_scripts.explorer), with each page's UMAP coordinates."""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.data import open_shards
from workflow_scripts.embedding import embed_2d
from workflow_scripts.explorer import build_explorer, thumbnails
from workflow_scripts.io import feature_columns, write_parquet
from workflow_scripts.metrics.neighbourhood import local_quality
from workflow_scripts.metrics.sampling import stratified_subsample
from workflow_scripts.runner import run

log = logging.getLogger("explorer")


def main(smk):
    # One job builds every page of a dataset: umap-learn and its compiled kernels load once.
    arrays = open_shards(smk.input.arrays)
    for features, page, coords in zip(smk.input.features, smk.output.pages, smk.output.coords):
        build_page(smk, arrays, features, page, coords)


def build_page(smk, arrays, features_path, page, coords_path):
    model, layer = Path(page).parent.name, Path(page).stem
    table = pd.read_parquet(features_path)
    label, group = smk.params.label, smk.params.group_by
    for column in ("Metadata_cell", "Metadata_shard", "Metadata_row", label, group):
        if column not in table.columns:
            raise ValueError(f"{features_path}: column {column!r} is missing")
    if len(table) > smk.params.max_cells:
        keep = stratified_subsample(table[label].astype(str).to_numpy(), int(smk.params.max_cells), int(smk.params.seed))
        log.info("%d of %d cells shown (explorer.max_cells, seeded and stratified by %s)", len(keep), len(table), label)
        table = table.iloc[np.sort(keep)].reset_index(drop=True)
    features = table[feature_columns(table)].to_numpy(np.float32)
    coords = embed_2d(features, method="umap", seed=int(smk.params.seed))
    # How faithfully the map keeps each cell's feature-space neighbours (1 = all 10 kept).
    k = int(min(10, len(table) - 1))
    table["local_quality"] = local_quality(features.astype(np.float64), coords, k=k)
    crops = arrays.gather(table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy())
    thumbs = thumbnails(crops, list(smk.params.roles))
    title = f"{smk.wildcards.dataset}: {model} / {layer}"
    build_explorer(coords, table, thumbs, page, title=title, label=label, group=group)
    frame = pd.DataFrame({"Metadata_cell": table["Metadata_cell"], "UMAP_1": coords[:, 0], "UMAP_2": coords[:, 1]})
    write_parquet(coords_path, frame)
    log.info("%s/%s: %d cells, %.1f MB", model, layer, len(table), sum(map(len, thumbs)) / 1e6)


run(snakemake, main)  # noqa: F821
