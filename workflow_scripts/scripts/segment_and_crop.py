"""Rule segment_and_crop: nuclei of every field of a shard -> one crop array + one cell table."""

import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.cells import segment_shard
from workflow_scripts.io import read_fields, write_json, write_npy, write_parquet
from workflow_scripts.runner import run

log = logging.getLogger("segment_and_crop")


def main(smk):
    """Segment and crop every field of the shard; write its crops, cell table and QC record."""
    images, truth = read_fields(smk.input.fields)
    fields = pd.read_parquet(smk.input.table)
    objects = pd.read_parquet(smk.input.objects)
    if len(fields) != len(images):
        raise ValueError(f"{smk.input.table}: {len(fields)} rows but {len(images)} images in {smk.input.fields}")
    # Sizes resolved once per dataset (rule estimate_scale), so every shard uses the same ones.
    scale = json.loads(Path(smk.input.scale).read_text())

    crops, cells, qc = segment_shard(
        images,
        fields,
        objects,
        scale,
        nucleus_channel=int(smk.params.nucleus_channel),
        n_channels=len(smk.params.channels),
        shard=smk.wildcards.shard,
        truth=truth,
        source=str(smk.input.fields),
        masks_dir=smk.params.masks_dir if smk.params.save_masks else None,
    )

    write_npy(smk.output.crops, crops.astype(np.float32, copy=False))
    write_parquet(smk.output.table, cells)
    write_json(smk.output.qc, qc)
    log.info("%d fields, %d nuclei, %d crops", qc["n_fields"], qc["n_objects"], qc["n_crops"])


run(snakemake, main)  # noqa: F821
