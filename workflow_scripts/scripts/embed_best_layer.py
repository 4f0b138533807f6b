"""Rule embed_best_layer: UMAP and t-SNE maps of the best learned layer.

The cells are coloured by class, group, trajectory and per-cell local quality (its UMAP is the
explorer page's when that page shows the same layer and cells).
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np

from workflow_scripts.io import write_parquet
from workflow_scripts.maps import best_learned_layer, cells_table, layer_maps, reusable_umap
from workflow_scripts.metrics.report import read_results
from workflow_scripts.metrics.summary import RANKING_TITLES
from workflow_scripts.runner import run

log = logging.getLogger("embed_best_layer")


def main(smk):
    """Rank the layers, then map the best learned one and write the maps' coordinates.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: ``input.metrics``, ``input.pixels``, ``input.features``,
        ``input.explorer`` (the pages' coordinates), its params and ``output.umap``,
        ``output.tsne``, ``output.coords``.
    """
    # Ranked from the metric files, as summarize_metrics ranks them (both run side by side).
    model, layer, metric, score = best_learned_layer(read_results(smk.input.metrics), dict(smk.params.families))
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    table = cells_table(next(p for p in smk.input.features if p.endswith(f"/features/{model}/{layer}.parquet")), cells)
    umap = reusable_umap(list(smk.input.explorer), model, layer, cells)
    outputs = {"umap": smk.output.umap, "tsne": smk.output.tsne}
    title = f"{model}/{layer} ({RANKING_TITLES[metric]} {score:.3f})"
    columns = {"label": smk.params.label, "group": smk.params.group_by}
    out = layer_maps(table, pixels, outputs, title=title, **columns, seed=int(smk.params.seed), umap=umap)
    out["model"], out["layer"] = model, layer
    write_parquet(smk.output.coords, out)
    source = "of its explorer page" if umap is not None else "computed"
    log.info("best learned layer %s/%s on %d cells (UMAP %s)", model, layer, len(table), source)


run(snakemake, main)  # noqa: F821
