"""Rule embed_best_layer: UMAP and t-SNE maps of the best learned layer, coloured by class,
group, trajectory and per-cell local quality (its UMAP is the explorer page's when that page
shows the same layer and cells)."""

import json
import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.io import write_parquet
from workflow_scripts.maps import layer_maps, reusable_umap
from workflow_scripts.metrics.summary import RANKING_TITLES, ranking_metric, summary_row
from workflow_scripts.runner import run

log = logging.getLogger("embed_best_layer")


def main(smk):
    # Ranked from the metric files, as summarize_metrics ranks them (both run side by side).
    families, rows = dict(smk.params.families), []
    for path in smk.input.metrics:
        with open(path) as fh:
            result = json.load(fh)
        rows.append(summary_row(result, kind=families.get(result["model"], "baseline")))
    summary = pd.DataFrame(rows)
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    learned = summary[summary["kind"] != "baseline"]
    ranked = learned if len(learned) else summary
    metric = ranking_metric(ranked)
    best = ranked.sort_values(metric, ascending=False, kind="stable").iloc[0]
    path = next(p for p in smk.input.features if p.endswith(f"/features/{best.model}/{best.layer}.parquet"))
    table = pd.read_parquet(path).set_index("Metadata_cell").loc[cells].reset_index()
    umap = reusable_umap(list(smk.input.explorer), best.model, best.layer, cells)
    out = layer_maps(
        table,
        pixels,
        {"umap": smk.output.umap, "tsne": smk.output.tsne},
        title=f"{best.model}/{best.layer} ({RANKING_TITLES[metric]} {best[metric]:.3f})",
        label=smk.params.label,
        group=smk.params.group_by,
        seed=int(smk.params.seed),
        umap=umap,
    )
    out["model"], out["layer"] = best.model, best.layer
    write_parquet(smk.output.coords, out)
    log.info(
        "best learned layer %s/%s on %d cells (UMAP %s)",
        best.model,
        best.layer,
        len(table),
        "of its explorer page" if umap is not None else "computed",
    )


run(snakemake, main)  # noqa: F821
