"""Rule embed_best_layer: 2-D UMAP of the layer with the best group-held-out accuracy."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.embedding import embed_2d
from workflow_scripts.io import feature_columns, write_parquet
from workflow_scripts.metrics.sampling import stratified_subsample
from workflow_scripts.metrics.summary import RANKING_TITLES, ranking_metric
from workflow_scripts.plots import plot_embedding
from workflow_scripts.runner import run

log = logging.getLogger("embed_best_layer")


def main(smk):
    summary = pd.read_csv(smk.input.summary)
    metric = ranking_metric(summary)
    best = summary.sort_values(metric, ascending=False, kind="stable").iloc[0]
    path = next(p for p in smk.input.features if p.endswith(f"/features/{best.model}/{best.layer}.parquet"))
    table = pd.read_parquet(path)
    label, group = smk.params.label, smk.params.group_by
    index = stratified_subsample(table[label].astype(str).to_numpy(), int(smk.params.max_cells), int(smk.params.seed))
    table = table.iloc[index].reset_index(drop=True)
    coords = embed_2d(table[feature_columns(table)].to_numpy(np.float32), method="umap", seed=int(smk.params.seed))
    colour_by = {"class": table[label].astype(str).to_numpy(), "group": table[group].astype(str).to_numpy()}
    if "Metadata_trajectory" in table.columns:
        colour_by["trajectory"] = table["Metadata_trajectory"].to_numpy(dtype=float)
    plot_embedding(
        coords,
        colour_by,
        smk.output.plot,
        title=f"UMAP of {best.model}/{best.layer} ({RANKING_TITLES[metric]} {best[metric]:.3f})",
    )
    out = table[[c for c in table.columns if c.startswith("Metadata_")]].copy()
    out["UMAP_1"], out["UMAP_2"] = coords[:, 0], coords[:, 1]
    out["model"], out["layer"] = best.model, best.layer
    write_parquet(smk.output.coords, out)
    log.info("best layer %s/%s on %d cells", best.model, best.layer, len(table))


run(snakemake, main)  # noqa: F821
