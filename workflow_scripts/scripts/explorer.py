"""Rule explorer: the interactive explorer pages of a dataset.

One page per model layer in ``explorer.layers`` (:mod:`workflow_scripts.explorer`), with each
page's UMAP coordinates.
"""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.data import open_shards
from workflow_scripts.explorer import layer_page
from workflow_scripts.runner import run

log = logging.getLogger("explorer")


def main(smk):
    """Build every explorer page of a dataset and write its coordinates.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: ``input.arrays`` (the cell shards), ``input.features`` and, in the same
        order, ``output.pages`` and ``output.coords``; params ``label``, ``group_by``,
        ``max_cells``, ``seed`` and ``channels``.
    """
    # One job builds every page of a dataset: umap-learn and its compiled kernels load once.
    arrays = open_shards(smk.input.arrays)
    p = smk.params
    for features, page, coords in zip(smk.input.features, smk.output.pages, smk.output.coords):
        model, layer = Path(page).parent.name, Path(page).stem
        title = f"{smk.wildcards.dataset}: {model} / {layer}"
        options = {"label": p.label, "group": p.group_by, "max_cells": p.max_cells, "seed": int(p.seed)}
        cells, size = layer_page(features, arrays, page, coords, title=title, **options, channels=p.channels)
        log.info("%s/%s: %d cells, %.1f MB", model, layer, cells, size / 1e6)


run(snakemake, main)  # noqa: F821
