"""Rule embed_handcrafted: UMAP and t-SNE maps of the hand-crafted baseline, drawn as those of
the best learned layer are. Its own job, needing no trained model and no metric file, so it runs
while models train or are evaluated: the score in its title is the grouped logistic regression
the evaluation computes (the same function on the same cells, folds and seed: the same number,
in under a second with the Newton-CG solver)."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.io import feature_columns
from workflow_scripts.maps import layer_maps
from workflow_scripts.metrics.classification import logreg_accuracy
from workflow_scripts.metrics.summary import RANKING_TITLES
from workflow_scripts.runner import run

log = logging.getLogger("embed_handcrafted")


def _title(table, smk) -> str:
    metrics = smk.params.metrics
    features = table[feature_columns(table)].to_numpy(np.float64)
    labels = table[smk.params.label].astype(str).to_numpy()
    groups = table[smk.params.group_by].astype(str).to_numpy()
    common = {"n_splits": int(metrics["n_splits"]), "seed": int(smk.params.seed), "cv": str(metrics.get("cv", "auto"))}
    for key, kw in (("logreg_accuracy_grouped", {"groups": groups}), ("logreg_accuracy_stratified", {})):
        try:
            score = logreg_accuracy(features, labels, **kw, **common)["accuracy_mean"]
        except ValueError as exc:  # one class, one group: the evaluation reports it skipped too
            log.info("%s not available for the title: %s", key, exc)
            continue
        return f"hand-crafted features ({RANKING_TITLES[key]} {score:.3f})"
    return "hand-crafted features"


def main(smk):
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    table = pd.read_parquet(smk.input.features).set_index("Metadata_cell").loc[cells].reset_index()
    title = _title(table, smk)
    layer_maps(
        table,
        pixels,
        {"umap": smk.output.umap, "tsne": smk.output.tsne},
        title=title,
        label=smk.params.label,
        group=smk.params.group_by,
        seed=int(smk.params.seed),
    )
    log.info("%s on %d cells", title, len(table))


run(snakemake, main)  # noqa: F821
