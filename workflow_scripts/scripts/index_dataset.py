"""Rule index_dataset (a checkpoint): list a dataset's fields (or pre-cropped cells) once.

Each with its metadata and shard; every later job of the dataset reads this index.
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.io import write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.crops import index_crops
from workflow_scripts.sources.local import describe, index_fields
from workflow_scripts.sources.registry import source_spec

log = logging.getLogger("index_dataset")


def main(smk):
    """Write the index of the dataset, after checking it has the columns the config uses.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``wildcards.dataset``, ``input`` (optional ``fields_table``),
        ``output.index`` and ``params``: ``entry`` (the dataset's config entry), ``root``
        (the image folder) and ``required`` (metadata columns the config uses).
    """
    dataset = smk.wildcards.dataset
    entry = dict(smk.params.entry)
    log.info("indexing %s (%s) under %s: %s", dataset, entry["source"], smk.params.root, describe(entry))
    if not source_spec(entry["source"]).whole_fields:  # pre-cropped cells
        table = index_crops(dataset, entry, entry.get("path"))
        unit = "cells"
    else:
        table = index_fields(dataset, entry, smk.params.root, fields_table=smk.input.get("fields_table"))
        unit = "fields"
    # Columns the cells get later (segmentation) need not be in a field index.
    per_cell = {"Metadata_cell", "Metadata_label", "Metadata_x", "Metadata_y", "Metadata_area", "Metadata_row"}
    missing = [c for c in dict.fromkeys(smk.params.required) if c not in table.columns and c not in per_cell]
    if missing:
        available = [c for c in table.columns if c.startswith("Metadata_")]
        raise ValueError(
            f"dataset {dataset!r}: no column(s) {missing}, which the config uses (metrics.label, "
            f"filter.group_by, split.by); this dataset has {available}. Name a metadata field with "
            f"datasets.{dataset}.class / .group, a regex group, or a metadata CSV column."
        )
    write_parquet(smk.output.index, table)
    log.info("%d %s in %d shards", len(table), unit, table["shard"].nunique())


run(snakemake, main)  # noqa: F821
