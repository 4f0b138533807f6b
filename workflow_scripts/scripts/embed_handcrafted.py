"""Rule embed_handcrafted: UMAP and t-SNE maps of the hand-crafted baseline.

Drawn as those of the best learned layer are. Its own job, needing no trained model and no
metric file, so it runs while models train or are evaluated (``maps.handcrafted_title``
recomputes the evaluation's score for the title).
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np

from workflow_scripts.maps import cells_table, handcrafted_title, layer_maps
from workflow_scripts.runner import run

log = logging.getLogger("embed_handcrafted")


def main(smk):
    """Map the hand-crafted features of the metric cells.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: ``input.pixels``, ``input.features``, its params and ``output.umap``,
        ``output.tsne``.
    """
    space = np.load(smk.input.pixels)
    cells, pixels = space["cells"], space["pixels"].astype(np.float64)
    table = cells_table(smk.input.features, cells)
    columns = {"label": smk.params.label, "group": smk.params.group_by}
    title = handcrafted_title(table, **columns, metrics=smk.params.metrics, seed=int(smk.params.seed))
    outputs = {"umap": smk.output.umap, "tsne": smk.output.tsne}
    layer_maps(table, pixels, outputs, title=title, **columns, seed=int(smk.params.seed))
    log.info("%s on %d cells", title, len(table))


run(snakemake, main)  # noqa: F821
