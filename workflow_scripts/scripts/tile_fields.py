"""Rule tile_fields: whole fields cut into overlapping tiles over all channels."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.io import read_fields, write_npy, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.tiles import tile_image


def main(smk):
    """Cut every field of the shard into tiles; write the tiles and their table."""
    images, _ = read_fields(smk.input.fields)
    fields = pd.read_parquet(smk.input.table)
    size, overlap = int(smk.params.tiling["size"]), int(smk.params.tiling["overlap"])
    tiles, rows = [], []
    for i, image in enumerate(images):
        field_tiles, origins = tile_image(image, size, overlap)
        tiles.append(field_tiles)
        part = pd.DataFrame({"Metadata_tile_y": origins[:, 0], "Metadata_tile_x": origins[:, 1]})
        part.insert(0, "Metadata_image", fields["Metadata_image"].iloc[i])
        rows.append(part)
    table = pd.concat(rows, ignore_index=True).merge(fields, on="Metadata_image", how="left")
    table["Metadata_shard"] = smk.wildcards.shard
    table["Metadata_row"] = np.arange(len(table), dtype=np.int64)
    write_npy(smk.output.tiles, np.concatenate(tiles))
    write_parquet(smk.output.table, table)


run(snakemake, main)  # noqa: F821
