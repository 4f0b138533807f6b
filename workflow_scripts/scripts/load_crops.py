"""Rule load_crops: one shard of pre-cropped cells -> the cell arrays segmentation would write."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.io import write_json, write_npy, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.crops import load_crops

log = logging.getLogger("load_crops")


def main(smk):
    """Write one shard's crops, resized, with their cell table and QC counts.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``wildcards.shard``, ``input.index``, ``output`` (``crops``, ``table``,
        ``qc``) and ``params``: ``entry`` (the dataset's config entry) and ``size`` (the
        crop side).
    """
    index = pd.read_parquet(smk.input.index)
    rows = index[index["shard"] == smk.wildcards.shard]
    if rows.empty:
        raise ValueError(f"{smk.input.index}: no cells in shard {smk.wildcards.shard}")
    entry = smk.params.entry
    crops, table = load_crops(rows, entry, entry.get("path"), int(smk.params.size))
    table["Metadata_shard"] = smk.wildcards.shard
    table["Metadata_row"] = np.arange(len(table), dtype=np.int64)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    table = table[meta + [c for c in table.columns if c not in meta]]
    write_npy(smk.output.crops, crops)
    write_parquet(smk.output.table, table)
    write_json(
        smk.output.qc,
        {
            "shard": smk.wildcards.shard,
            "n_fields": int(table["Metadata_image"].nunique()),
            "n_objects": int(len(table)),
            "n_crops": int(len(table)),
            "n_edge_dropped": 0,
            "fields_without_cells": [],
        },
    )
    log.info("%d crops resized to %s", len(table), crops.shape[1:])


run(snakemake, main)  # noqa: F821
