"""Rule load_fields: the fields of one shard of a dataset on disk -> one field array file.

A bad field (missing, unreadable, wrong planes, shapes that differ, NaN/inf pixels) stops the
run with an error naming the file, or with ``on_bad_image: skip`` is left out: the fields table
then carries the skipped fields and their reasons in its ``skipped_fields`` attribute (Parquet
metadata), which segmentation passes on to the QC drop counts."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_fields, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.local import BadImageError, read_field

log = logging.getLogger("load_fields")


def main(smk):
    index = pd.read_parquet(smk.input.index)
    rows = index[index["shard"] == smk.wildcards.shard]
    if rows.empty:
        raise ValueError(f"{smk.input.index}: no fields in shard {smk.wildcards.shard}")
    channels = smk.params.entry["channels"]
    on_bad = smk.params.entry.get("on_bad_image", "fail")
    images, kept, skipped = [], [], []
    for i, (_, row) in enumerate(rows.iterrows()):
        image_id = row["Metadata_image"]
        try:
            image = read_field(row, channels, smk.params.root)
        except BadImageError as exc:
            if on_bad != "skip":
                raise BadImageError(
                    f"dataset {smk.wildcards.dataset!r}, field {image_id!r}: {exc}. Fix or remove the file, or set "
                    f"datasets.{smk.wildcards.dataset}.on_bad_image: skip to leave such fields out (they are "
                    "counted in qc/drops.csv)",
                    exc.reason,
                ) from None
            log.warning("field %s skipped (%s): %s", image_id, exc.reason, exc)
            skipped.append({"image": str(image_id), "reason": exc.reason, "message": str(exc)})
            continue
        log.info("%s: %s %s", image_id, image.shape, image.dtype)
        images.append(image)
        kept.append(i)
    table = rows.iloc[kept][[c for c in rows.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    table.attrs["skipped_fields"] = skipped
    if skipped and not images:
        log.error("every field of shard %s was skipped: check the channel settings and the files", smk.wildcards.shard)
    write_fields(smk.output.fields, images, table["Metadata_image"].to_numpy(dtype=str))
    write_parquet(smk.output.table, table)
    # No ground truth for real images: an empty object table keeps one interface for all sources.
    write_parquet(smk.output.objects, pd.DataFrame({"Metadata_image": pd.Series([], dtype=str), "truth_label": []}))


run(snakemake, main)  # noqa: F821
