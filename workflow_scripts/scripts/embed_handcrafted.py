"""Rule embed_handcrafted: UMAP and t-SNE maps of the hand-crafted baseline, drawn as those of
the best learned layer are (its own job: it needs no trained model and runs early)."""

import json
import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.maps import layer_maps
from workflow_scripts.metrics.summary import RANKING_TITLES, ranking_metric, summary_row
from workflow_scripts.runner import run

log = logging.getLogger("embed_handcrafted")


def main(smk):
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    with open(smk.input.metrics) as fh:
        row = pd.DataFrame([summary_row(json.load(fh))])
    metric = ranking_metric(row)
    table = pd.read_parquet(smk.input.features).set_index("Metadata_cell").loc[cells].reset_index()
    layer_maps(
        table,
        pixels,
        {"umap": smk.output.umap, "tsne": smk.output.tsne},
        title=f"hand-crafted features ({RANKING_TITLES[metric]} {row[metric].iloc[0]:.3f})",
        label=smk.params.label,
        group=smk.params.group_by,
        seed=int(smk.params.seed),
    )
    log.info("hand-crafted features on %d cells", len(table))


run(snakemake, main)  # noqa: F821
