"""Rule embed_best_layer: UMAP and t-SNE maps of the best learned layer and of the
hand-crafted baseline, coloured by class, group, trajectory and per-cell local quality."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.embedding import embed_2d
from workflow_scripts.io import feature_columns, write_parquet
from workflow_scripts.metrics.neighbourhood import local_quality
from workflow_scripts.metrics.summary import RANKING_TITLES, ranking_metric
from workflow_scripts.plots import plot_embedding
from workflow_scripts.runner import run

log = logging.getLogger("embed_best_layer")


def _table(paths, model, layer, cells):
    path = next(p for p in paths if p.endswith(f"/features/{model}/{layer}.parquet"))
    return pd.read_parquet(path).set_index("Metadata_cell").loc[cells].reset_index()


def _maps(table, pixels, smk, stem, title, outputs):
    features = table[feature_columns(table)].to_numpy(np.float32)
    quality = local_quality(pixels, features.astype(np.float64), k=10)
    label, group = smk.params.label, smk.params.group_by
    colour_by = {"class": table[label].astype(str).to_numpy(), "group": table[group].astype(str).to_numpy()}
    if "Metadata_trajectory" in table.columns:
        colour_by["trajectory"] = table["Metadata_trajectory"].to_numpy(dtype=float)
    colour_by["local quality"] = quality
    out = table[[c for c in table.columns if c.startswith("Metadata_")]].copy()
    out["local_quality"] = quality
    for method in ("umap", "tsne"):
        coords = embed_2d(features, method=method, seed=int(smk.params.seed))
        plot_embedding(coords, colour_by, outputs[f"{stem}_{method}"], title=f"{method.upper()} of {title}")
        out[f"{method.upper()}_1"], out[f"{method.upper()}_2"] = coords[:, 0], coords[:, 1]
    return out


def main(smk):
    summary = pd.read_csv(smk.input.summary)
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    learned = summary[summary["kind"] != "baseline"]
    ranked = learned if len(learned) else summary
    metric = ranking_metric(ranked)
    best = ranked.sort_values(metric, ascending=False, kind="stable").iloc[0]
    outputs = dict(smk.output.items())
    table = _table(smk.input.features, best.model, best.layer, cells)
    title = f"{best.model}/{best.layer} ({RANKING_TITLES[metric]} {best[metric]:.3f})"
    out = _maps(table, pixels, smk, "best", title, outputs)
    out["model"], out["layer"] = best.model, best.layer
    write_parquet(smk.output.coords, out)
    log.info("best learned layer %s/%s on %d cells", best.model, best.layer, len(table))
    if "handcrafted_umap" in outputs:
        hand = _table(smk.input.features, "handcrafted", "all", cells)
        row = summary[(summary["model"] == "handcrafted")].iloc[0]
        _maps(hand, pixels, smk, "handcrafted", f"hand-crafted features ({RANKING_TITLES[metric]} {row[metric]:.3f})", outputs)


run(snakemake, main)  # noqa: F821
