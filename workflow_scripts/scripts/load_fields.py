"""Rule load_fields: the fields of one shard of a dataset on disk -> one field array file.

A bad field (missing, unreadable, wrong planes, shapes that differ, NaN/inf pixels) stops the
run with an error naming the file, or with ``on_bad_image: skip`` is left out: the fields table
then carries the skipped fields and their reasons in its ``skipped_fields`` attribute (Parquet
metadata), which segmentation passes on to the QC drop counts.
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_fields, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.local import read_shard

log = logging.getLogger("load_fields")


def main(smk):
    """Write one shard's fields, their table and an empty ground-truth table.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``wildcards`` (``dataset``, ``shard``), ``input.index``, ``output``
        (``fields``, ``table``, ``objects``) and ``params``: ``entry`` (the dataset's
        config entry) and ``root`` (the image folder).
    """
    index = pd.read_parquet(smk.input.index)
    rows = index[index["shard"] == smk.wildcards.shard]
    if rows.empty:
        raise ValueError(f"{smk.input.index}: no fields in shard {smk.wildcards.shard}")
    entry = smk.params.entry
    images, table = read_shard(
        rows,
        entry["channels"],
        smk.params.root,
        dataset=smk.wildcards.dataset,
        on_bad_image=entry.get("on_bad_image", "fail"),
    )
    skipped = table.attrs["skipped_fields"]
    if skipped and not images:
        log.error("every field of shard %s was skipped: check the channel settings and the files", smk.wildcards.shard)
    write_fields(smk.output.fields, images, table["Metadata_image"].to_numpy(dtype=str))
    write_parquet(smk.output.table, table)
    # No ground truth for real images: an empty object table keeps one interface for all sources.
    write_parquet(smk.output.objects, pd.DataFrame({"Metadata_image": pd.Series([], dtype=str), "truth_label": []}))


run(snakemake, main)  # noqa: F821
