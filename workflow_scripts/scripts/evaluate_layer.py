"""Rules evaluate_<model>: every metric of each layer's feature table (a model's layers or a
baseline's), one JSON per layer."""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
import torch

from workflow_scripts.io import feature_columns, write_json
from workflow_scripts.metrics.suite import evaluate, pixel_components
from workflow_scripts.runner import run

log = logging.getLogger("evaluate_layer")


def main(smk):
    cfg = dict(smk.params.metrics)
    # The MLP and MI critics are tiny: one torch thread is faster than two (measured).
    torch.set_num_threads(1)
    space = dict(np.load(smk.input.pixels))
    if "pixels_pca" not in space:  # written by an older pixel_space job
        space["pixels_pca"] = pixel_components(space["pixels"], int(smk.params.seed))
    for features_path, output in zip(smk.input.features, smk.output):
        evaluate_table(smk, cfg, space, features_path, output)


def evaluate_table(smk, cfg, space, features_path, output):
    model, layer = Path(output).parent.name, Path(output).stem
    table = pd.read_parquet(features_path)
    for column in (cfg["label"], cfg["group_by"]):
        if column not in table.columns:
            raise ValueError(f"{features_path}: column {column!r} (from metrics config) is missing")
    # Evaluate exactly the cells of the pixel space, in its order.
    table = table.set_index("Metadata_cell").loc[space["cells"]].reset_index()
    features = table[feature_columns(table)].to_numpy(dtype=np.float64)
    if not np.isfinite(features).all():
        raise ValueError(f"{features_path}: features contain NaN or inf")
    options = {k: cfg[k] for k in cfg if k not in ("label", "group_by", "summary_k", "max_cells", "pca_components")}
    result = evaluate(
        features,
        table,
        space["pixels"],
        label=cfg["label"],
        group_by=cfg["group_by"],
        seed=int(smk.params.seed),
        options=options,
        pixels_pca=space["pixels_pca"],
    )
    result.update(
        {
            "dataset": smk.wildcards.dataset,
            "model": model,
            "layer": layer,
            "n_cells_total": int(space["n_total"]),
            "label": cfg["label"],
            "group_by": cfg["group_by"],
            "summary_k": cfg["summary_k"],
        }
    )
    log.info(
        "%s/%s: grouped acc %.3f, stratified acc %.3f",
        model,
        layer,
        result["logreg_grouped"]["accuracy_mean"],
        result["logreg_stratified"]["accuracy_mean"],
    )
    write_json(output, result)


run(snakemake, main)  # noqa: F821
