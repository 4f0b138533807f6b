"""Rule stitch_reconstructions: whole validation fields rebuilt from reconstructed tiles."""

import json
import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
import torch

from workflow_scripts.data import normalizer_from_record, open_shards, source_for
from workflow_scripts.models.registry import load_trained
from workflow_scripts.plots import plot_reconstruction_grid
from workflow_scripts.runner import run
from workflow_scripts.tiles import stitch_tiles

log = logging.getLogger("stitch_reconstructions")


def main(smk):
    torch.set_num_threads(max(1, int(smk.threads)))
    model, record = load_trained(smk.input.weights, smk.input.config)
    normalizer = normalizer_from_record(record["normalization"])
    table = pd.concat([pd.read_parquet(p) for p in smk.input.tables], ignore_index=True)
    stats = json.loads(open(smk.input.stats).read())
    train_groups = set(stats["train_groups"])
    val_images = [
        img for img, grp in zip(table["Metadata_image"], table[stats["split_by"]].astype(str)) if grp not in train_groups
    ]
    images = list(dict.fromkeys(val_images))[: int(smk.params.n_fields)]
    arrays = open_shards(smk.input.tiles)
    originals, recons = [], []
    for image in images:
        tiles = table[table["Metadata_image"] == image].reset_index(drop=True)
        source = source_for(tiles, arrays, normalizer)
        origins = tiles[["Metadata_tile_y", "Metadata_tile_x"]].to_numpy()
        size = arrays.item_shape[-1]
        height, width = origins[:, 0].max() + size, origins[:, 1].max() + size
        with torch.no_grad():
            rec = np.concatenate(
                [
                    model.reconstruct(torch.from_numpy(source.batch(np.arange(s, min(s + 64, len(source)))))).numpy()
                    for s in range(0, len(source), 64)
                ]
            )
        overlap = int(smk.params.tiling["overlap"])
        # Raw intensities where the normalisation has an inverse, else both as the model saw them.
        shown = source.raw if normalizer.invertible else source.batch
        originals.append(stitch_tiles(shown(np.arange(len(source))), origins, height, width, overlap=overlap))
        recons.append(stitch_tiles(normalizer.invert(rec), origins, height, width, overlap=overlap))
        log.info("field %s: %d tiles stitched", image, len(tiles))
    plot_reconstruction_grid(
        np.stack(originals),
        np.stack(recons),
        smk.output[0],
        channel_names=[c["name"] for c in record["channels"]],
        title=f"{smk.wildcards.model}: validation fields, stitched from reconstructed tiles",
    )


run(snakemake, main)  # noqa: F821
