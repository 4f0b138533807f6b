"""Rule segment_and_crop: nuclei of every field of a shard -> one crop array + one cell table."""

import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.crop import segment_and_crop
from workflow_scripts.io import atomic_path, read_fields, write_json, write_npy, write_parquet
from workflow_scripts.runner import run

log = logging.getLogger("segment_and_crop")


def main(smk):
    images, truth = read_fields(smk.input.fields)
    fields = pd.read_parquet(smk.input.table)
    objects = pd.read_parquet(smk.input.objects)
    if len(fields) != len(images):
        raise ValueError(f"{smk.input.table}: {len(fields)} rows but {len(images)} images in {smk.input.fields}")

    # Sizes resolved once per dataset (rule estimate_scale), so every shard uses the same ones.
    scale = json.loads(Path(smk.input.scale).read_text())
    segmentation = scale["segmentation"]
    crop = dict(scale["crop"])
    crops, tables, field_qc = [], [], []
    n_objects = 0
    empty_fields = []
    for i, image in enumerate(images):
        image_id = fields["Metadata_image"].iloc[i]
        if crop["edge"] == "drop" and int(crop["size"]) > min(image.shape[-2:]):
            raise ValueError(
                f"crop.size {crop['size']} is larger than field {image_id!r} ({image.shape[-2]} x {image.shape[-1]} "
                "pixels): every cell would leave the image and be dropped. Expected crop.size <= the field's "
                "height and width; lower crop.size or set crop.edge: pad"
            )
        try:
            field_crops, table, labels, qc = segment_and_crop(
                image,
                nucleus_channel=int(smk.params.nucleus_channel),
                segmentation=dict(segmentation),
                crop=crop,
                truth=None if truth is None else truth[i],
                return_qc=True,
            )
        except ValueError as exc:
            raise ValueError(f"{smk.input.fields}, field {image_id!r}: {exc}") from exc
        n_objects += int(labels.max())
        field_qc.append({"image": str(image_id), **qc, "n_crops": int(len(table))})
        if smk.params.save_masks:
            import tifffile

            with atomic_path(Path(smk.params.masks_dir) / f"{image_id}.tif") as tmp:
                tifffile.imwrite(tmp, labels.astype(np.int32), compression="zlib")
        if len(table) == 0:
            empty_fields.append(str(image_id))
            continue
        table.insert(0, "Metadata_image", image_id)
        crops.append(field_crops)
        tables.append(table)
        log.info("field %s: %d nuclei, %d crops kept", image_id, labels.max(), len(table))

    channels = len(smk.params.channels)
    size = int(crop["resize_to"] or crop["size"])
    crops = np.concatenate(crops) if crops else np.zeros((0, channels, size, size), np.float32)
    # A shard without a single cell (every field skipped, empty or without nuclei) still writes
    # its (empty) outputs, so the drop counts of its fields reach qc/drops.csv.
    cells = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame({"Metadata_image": pd.Series([], dtype=str), "Metadata_label": pd.Series([], dtype=np.int64)})
    )

    # Field metadata (class, group, batch...) and per-object ground truth travel with each cell.
    cells = cells.merge(fields, on="Metadata_image", how="left", validate="many_to_one")
    if "truth_label" in cells.columns and len(objects):
        truth_cols = ["Metadata_image", "truth_label"] + [
            c for c in objects.columns if c.startswith("Metadata_") and c not in cells.columns
        ]
        cells = cells.merge(objects[truth_cols], on=["Metadata_image", "truth_label"], how="left")
    cells["Metadata_shard"] = smk.wildcards.shard
    cells["Metadata_row"] = np.arange(len(cells), dtype=np.int64)
    cells["Metadata_cell"] = [f"{img}-{int(lab)}" for img, lab in zip(cells["Metadata_image"], cells["Metadata_label"])]
    meta = [c for c in cells.columns if c.startswith("Metadata_")]
    cells = cells[meta + [c for c in cells.columns if c not in meta]]

    write_npy(smk.output.crops, crops.astype(np.float32, copy=False))
    write_parquet(smk.output.table, cells)
    write_json(
        smk.output.qc,
        {
            "shard": smk.wildcards.shard,
            "n_fields": int(len(images)),
            "n_objects": n_objects,
            "n_crops": int(len(cells)),
            "n_edge_dropped": n_objects - int(len(cells)),
            "fields_without_cells": empty_fields,
            "fields_skipped": fields.attrs.get("skipped_fields", []),
            "fields": field_qc,
        },
    )
    log.info("%d fields, %d nuclei, %d crops", len(images), n_objects, len(cells))


run(snakemake, main)  # noqa: F821
