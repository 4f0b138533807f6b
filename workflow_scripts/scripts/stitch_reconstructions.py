"""Rule stitch_reconstructions: whole validation fields rebuilt from reconstructed tiles."""

import json

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd
import torch

from workflow_scripts.data import normalizer_from_record, open_shards
from workflow_scripts.figures import plot_reconstruction_grid
from workflow_scripts.models.registry import load_trained
from workflow_scripts.runner import run
from workflow_scripts.training.job import stitched_validation_fields


def main(smk):
    """Rebuild the first validation fields from reconstructed tiles and draw them.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: the trained model (``input.weights``, ``input.config``), the tile
        tables and arrays, the split's ``input.stats``, ``params.n_fields``,
        ``params.tiling`` and the figure as ``output[0]``.
    """
    torch.set_num_threads(max(1, int(smk.threads)))
    model, record = load_trained(smk.input.weights, smk.input.config)
    table = pd.concat([pd.read_parquet(p) for p in smk.input.tables], ignore_index=True)
    with open(smk.input.stats) as fh:
        stats = json.load(fh)
    originals, recons = stitched_validation_fields(
        model,
        normalizer_from_record(record["normalization"]),
        table,
        open_shards(smk.input.tiles),
        stats,
        int(smk.params.n_fields),
        int(smk.params.tiling["overlap"]),
    )
    plot_reconstruction_grid(
        originals,
        recons,
        smk.output[0],
        channel_names=[c["name"] for c in record["channels"]],
        channel_roles=[c["role"] for c in record["channels"]],
        title=f"{smk.wildcards.model}: validation fields, stitched from reconstructed tiles",
    )


run(snakemake, main)  # noqa: F821
