"""Rule explorer: the interactive explorer page of one model layer (workflow_scripts.explorer)."""

import logging

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
    table = pd.read_parquet(smk.input.features)
    label, group = smk.params.label, smk.params.group_by
    for column in ("Metadata_cell", "Metadata_shard", "Metadata_row", label, group):
        if column not in table.columns:
            raise ValueError(f"{smk.input.features}: column {column!r} is missing")
    if len(table) > smk.params.max_cells:
        keep = stratified_subsample(table[label].astype(str).to_numpy(), int(smk.params.max_cells), int(smk.params.seed))
        log.info("%d of %d cells shown (explorer.max_cells, seeded and stratified by %s)", len(keep), len(table), label)
        table = table.iloc[np.sort(keep)].reset_index(drop=True)
    features = table[feature_columns(table)].to_numpy(np.float32)
    coords = embed_2d(features, method="umap", seed=int(smk.params.seed))
    # How faithfully the map keeps each cell's feature-space neighbours (1 = all 10 kept).
    k = int(min(10, len(table) - 1))
    table["local_quality"] = local_quality(features.astype(np.float64), coords, k=k)
    arrays = open_shards(smk.input.arrays)
    crops = arrays.gather(table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy())
    thumbs = thumbnails(crops, list(smk.params.roles))
    title = f"{smk.wildcards.dataset}: {smk.wildcards.model} / {smk.wildcards.layer}"
    build_explorer(coords, table, thumbs, smk.output.page, title=title, label=label, group=group)
    frame = pd.DataFrame({"Metadata_cell": table["Metadata_cell"], "UMAP_1": coords[:, 0], "UMAP_2": coords[:, 1]})
    write_parquet(smk.output.coords, frame)
    log.info("%d cells, %.1f MB", len(table), sum(map(len, thumbs)) / 1e6)


run(snakemake, main)  # noqa: F821
