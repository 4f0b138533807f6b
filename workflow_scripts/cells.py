"""Segment and crop every field of a shard: its crops, its cell table and its QC record.

:func:`workflow_scripts.crop.segment_and_crop` handles one field; this module runs it over a
shard and joins the results. Each cell carries its field's metadata (class, group, batch...)
and, where the source has ground truth, that of its best-overlapping true object; the
``Metadata_*`` columns come first. The QC record counts what was found and what was dropped,
field by field, for the drop table of the filtering stage and the segmentation QC report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from .crop import segment_and_crop
from .io import atomic_path

__all__ = ["cell_table", "segment_shard"]

log = logging.getLogger(__name__)


def segment_shard(
    images: Sequence[np.ndarray],
    fields: pd.DataFrame,
    objects: pd.DataFrame,
    scale: dict,
    *,
    nucleus_channel: int,
    n_channels: int,
    shard: str,
    truth: np.ndarray | None = None,
    source: str = "fields",
    masks_dir: str | Path | None = None,
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Segment the nuclei of every field of a shard and crop every cell.

    Parameters
    ----------
    images : sequence of (C, H, W) ndarray
        The shard's fields, in the order of ``fields``' rows.
    fields : pandas.DataFrame
        One row per field with ``Metadata_image`` and the field's metadata; its
        ``attrs["skipped_fields"]`` (fields left out on loading), if any, go to the QC record.
    objects : pandas.DataFrame
        Ground-truth objects (``Metadata_image``, ``truth_label`` and their ``Metadata_*``
        columns); may be empty.
    scale : dict
        The dataset's resolved sizes: ``segmentation`` (keyword arguments of
        :func:`workflow_scripts.segment.segment_nuclei_qc`) and ``crop`` (``size``,
        ``resize_to``, ``edge``).
    nucleus_channel : int
        Index of the nuclear-stain channel.
    n_channels : int
        Number of channels (shapes the crop array of a shard without cells).
    shard : str
        Shard name, stored in ``Metadata_shard`` and the QC record.
    truth : (F, H, W) ndarray of int, optional
        Ground-truth labels of every field.
    source : str, optional
        Name of the shard's file, for error messages.
    masks_dir : str or Path, optional
        Folder to write each field's nuclear labels to (``<image>.tif``, int32, zlib).

    Returns
    -------
    crops : (N, C, r, r) ndarray of float32
        The crops of all fields, in the order of ``cells``.
    cells : pandas.DataFrame
        One row per crop, see :func:`cell_table`.
    qc : dict
        ``shard``, ``n_fields``, ``n_objects`` (nuclei found), ``n_crops``,
        ``n_edge_dropped`` (nuclei whose window left the field), ``fields_without_cells``,
        ``fields_skipped`` and ``fields`` (the per-field QC of
        :func:`workflow_scripts.segment.segment_nuclei_qc` with ``image`` and ``n_crops``).

    Raises
    ------
    ValueError
        If ``crop.edge`` is ``drop`` and ``crop.size`` exceeds a field, or segmenting a field
        fails (the message names ``source`` and the field).
    """
    crop = dict(scale["crop"])
    crops, tables, field_qc, empty_fields = [], [], [], []
    n_objects = 0
    for i, image in enumerate(images):
        image_id = fields["Metadata_image"].iloc[i]
        field_truth = None if truth is None else truth[i]
        field_crops, table, labels, qc = _segment_field(
            image, image_id, scale["segmentation"], crop, nucleus_channel, field_truth, source
        )
        n_objects += int(labels.max())
        field_qc.append({"image": str(image_id), **qc, "n_crops": int(len(table))})
        if masks_dir is not None:
            _save_mask(Path(masks_dir) / f"{image_id}.tif", labels)
        if len(table) == 0:
            empty_fields.append(str(image_id))
            continue
        table.insert(0, "Metadata_image", image_id)
        crops.append(field_crops)
        tables.append(table)
        log.info("field %s: %d nuclei, %d crops kept", image_id, labels.max(), len(table))
    size = int(crop["resize_to"] or crop["size"])
    crops = np.concatenate(crops) if crops else np.zeros((0, n_channels, size, size), np.float32)
    cells = cell_table(tables, fields, objects, shard)
    record = {
        "shard": shard,
        "n_fields": int(len(images)),
        "n_objects": n_objects,
        "n_crops": int(len(cells)),
        "n_edge_dropped": n_objects - int(len(cells)),
        "fields_without_cells": empty_fields,
        "fields_skipped": fields.attrs.get("skipped_fields", []),
        "fields": field_qc,
    }
    return crops, cells, record


def _segment_field(image, image_id, segmentation: dict, crop: dict, nucleus_channel: int, truth, source: str):
    """Run :func:`segment_and_crop` on one field, naming ``source`` and the field on failure."""
    if crop["edge"] == "drop" and int(crop["size"]) > min(image.shape[-2:]):
        raise ValueError(
            f"crop.size {crop['size']} is larger than field {image_id!r} ({image.shape[-2]} x {image.shape[-1]} "
            "pixels): every cell would leave the image and be dropped. Expected crop.size <= the field's "
            "height and width; lower crop.size or set crop.edge: pad"
        )
    try:
        return segment_and_crop(
            image,
            nucleus_channel=int(nucleus_channel),
            segmentation=dict(segmentation),
            crop=crop,
            truth=truth,
            return_qc=True,
        )
    except ValueError as exc:
        raise ValueError(f"{source}, field {image_id!r}: {exc}") from exc


def _save_mask(path: Path, labels: np.ndarray) -> None:
    """Write a field's nuclear labels as an int32, zlib-compressed TIFF (atomically)."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(np.int32), compression="zlib")


def cell_table(tables: Sequence[pd.DataFrame], fields: pd.DataFrame, objects: pd.DataFrame, shard: str) -> pd.DataFrame:
    """Join the per-field cell tables of a shard with the field and ground-truth metadata.

    Parameters
    ----------
    tables : sequence of pandas.DataFrame
        Per-field tables of :func:`workflow_scripts.crop.segment_and_crop`, each with a
        ``Metadata_image`` column; may be empty (a shard without a single cell).
    fields : pandas.DataFrame
        One row per field: ``Metadata_image`` and the field's metadata.
    objects : pandas.DataFrame
        Ground-truth objects: ``Metadata_image``, ``truth_label`` and their own ``Metadata_*``
        columns (those the fields already have are not taken); may be empty.
    shard : str
        Shard name.

    Returns
    -------
    pandas.DataFrame
        One row per cell, in the order of ``tables``: the cells' columns, the field's and the
        true object's metadata, ``Metadata_shard``, ``Metadata_row`` (0..n-1) and
        ``Metadata_cell`` (``<image>-<label>``), with every ``Metadata_*`` column first, each
        group in that order.

    Examples
    --------
    >>> cells = pd.DataFrame({"Metadata_image": ["a", "a"], "Metadata_label": [3, 5], "QC_x": [0.1, 0.2]})
    >>> fields = pd.DataFrame({"Metadata_image": ["a"], "Metadata_group": ["g"]})
    >>> cell_table([cells], fields, pd.DataFrame(), "s0")[["Metadata_group", "Metadata_cell", "QC_x"]]
      Metadata_group Metadata_cell  QC_x
    0              g           a-3   0.1
    1              g           a-5   0.2
    """
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
    cells["Metadata_shard"] = shard
    cells["Metadata_row"] = np.arange(len(cells), dtype=np.int64)
    cells["Metadata_cell"] = [f"{img}-{int(lab)}" for img, lab in zip(cells["Metadata_image"], cells["Metadata_label"])]
    meta = [c for c in cells.columns if c.startswith("Metadata_")]
    return cells[meta + [c for c in cells.columns if c not in meta]]
