"""Rule load_fields: the fields of one shard of a dataset on disk -> one field array file."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_fields, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.local import read_field

log = logging.getLogger("load_fields")


def main(smk):
    index = pd.read_parquet(smk.input.index)
    rows = index[index["shard"] == smk.wildcards.shard]
    if rows.empty:
        raise ValueError(f"{smk.input.index}: no fields in shard {smk.wildcards.shard}")
    channels = smk.params.entry["channels"]
    images = []
    for _, row in rows.iterrows():
        image = read_field(row, channels, smk.params.root)
        log.info("%s: %s %s", row["Metadata_image"], image.shape, image.dtype)
        images.append(image)
    table = rows[[c for c in rows.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    write_fields(smk.output.fields, images, table["Metadata_image"].to_numpy(dtype=str))
    write_parquet(smk.output.table, table)
    # No ground truth for real images: an empty object table keeps one interface for all sources.
    write_parquet(smk.output.objects, pd.DataFrame({"Metadata_image": pd.Series([], dtype=str), "truth_label": []}))


run(snakemake, main)  # noqa: F821
