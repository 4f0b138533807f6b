"""Pre-cropped single cells: no segmentation, straight to the cell arrays the models read.

Two layouts:

* files, one per channel per cell (the paired-cell-inpainting benchmarks:
  ``<class>/<cell>_gfp.tif`` + ``<class>/<cell>_rfp.tif``) or one multi-channel file per cell.
  The pattern is matched against the path relative to the dataset folder; its ``channel`` group
  names the channel key, other named groups become ``Metadata_*`` (``class`` from the parent
  folder, ``image`` for the field of view the cell came from, ...). A cell's id is its path with
  the channel part and the extension removed.
* one stacked array, ``.npz`` or ``.h5``, ``(N, C, H, W)`` (or ``NHWC`` with ``axes: NHWC``),
  with a label table (CSV, one row per cell in array order) whose columns become metadata.

Crops of any size are resized (anti-aliased, bilinear) to the model input size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.sources.local import (
    _coerce,
    _join_metadata,
    _metadata_name,
    assign_roles,
    list_matches,
    read_channels,
    sanitize_id,
)

__all__ = ["index_crops", "load_crops", "open_array"]


def _cell_id(rel: str, match_span: tuple[int, int] | None) -> str:
    if match_span is not None:
        rel = rel[: match_span[0]] + rel[match_span[1] :]
    stem = rel.rsplit(".", 1)[0]
    return sanitize_id(stem.replace("/", "_"))


def _index_files(dataset: str, entry: dict, root: Path) -> pd.DataFrame:
    keys = [str(c["key"]) for c in entry["channels"]]
    pattern = entry.get("pattern")
    matches = list_matches(root, pattern)
    if not matches:
        raise ValueError(f"dataset {dataset!r}: no file under {str(root)!r} matches pattern {pattern!r}")
    regex = re.compile(pattern) if pattern else None
    cells: dict[str, dict] = {}
    for rel, groups in matches:
        span = None
        if "channel" in groups and regex is not None:
            span = regex.fullmatch(rel).span("channel")
        cell = _cell_id(rel, span)
        row = cells.setdefault(cell, {"files": {}, "meta": {}, "folder": str(Path(rel).parent.as_posix())})
        for name, value in groups.items():
            if name in ("channel", "cell"):
                continue
            old = row["meta"].setdefault(name, value)
            if old != value:
                raise ValueError(f"cell {cell!r}: group {name!r} is {old!r} in one file and {value!r} in {rel!r}")
        if "channel" in groups:
            if groups["channel"] not in keys:
                continue
            if groups["channel"] in row["files"]:
                raise ValueError(f"cell {cell!r}: two files for channel {groups['channel']!r}")
            row["files"][groups["channel"]] = rel
        else:
            row["files"] = {k: rel for k in keys}
    rows = []
    for cell, row in cells.items():
        missing = [k for k in keys if k not in row["files"]]
        if missing:
            raise ValueError(
                f"cell {cell!r} in {str(root)!r}: no file for channel(s) {missing} (found "
                f"{sorted(row['files'].values())}); expected one file per channel key {keys}"
            )
        entry_row = {"Metadata_cell": cell, **{f"file_{k}": row["files"][k] for k in keys}}
        entry_row.update({_metadata_name(n): v for n, v in row["meta"].items()})
        entry_row.setdefault("Metadata_image", sanitize_id(row["folder"]))
        rows.append(entry_row)
    return pd.DataFrame(rows)


def open_array(path: str | os.PathLike, key: str | None):
    """Open the crop array in a ``.npz`` or ``.h5`` file (lazily for HDF5).

    Parameters
    ----------
    path : path-like
        The file.
    key : str or None
        The array's name in the file; None when it holds exactly one.

    Returns
    -------
    array : numpy.ndarray or h5py.Dataset
        The 4-axis crop array.
    key : str
        Its name.

    Raises
    ------
    ValueError
        If the file is missing or of another type, the key is missing or ambiguous, or the
        array does not have 4 axes.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"array: {str(path)!r} does not exist")
    if path.suffix.lower() == ".npz":
        data = np.load(path, allow_pickle=False)
        names = list(data.files)
    elif path.suffix.lower() in (".h5", ".hdf5"):
        import h5py  # optional, and only HDF5 datasets need it

        data = h5py.File(path, "r")
        names = [n for n in data if isinstance(data[n], h5py.Dataset)]
    else:
        raise ValueError(f"array: {str(path)!r} must be a .npz or .h5 file")
    if key is None:
        if len(names) != 1:
            raise ValueError(f"{path}: holds {names}; set array_key to the one with the crops")
        key = names[0]
    if key not in names:
        raise ValueError(f"{path}: no array {key!r} (has {names})")
    array = data[key]
    if array.ndim != 4:
        raise ValueError(f"{path}: array {key!r} has shape {tuple(array.shape)}; expected 4 axes (N, C, H, W)")
    return array, key


def _index_array(dataset: str, entry: dict) -> pd.DataFrame:
    array, key = open_array(entry["array"], entry.get("array_key"))
    n = int(array.shape[0])
    axes = entry.get("axes", "NCHW")
    n_planes = array.shape[1] if axes == "NCHW" else array.shape[3]
    for channel in entry["channels"]:
        plane = channel.get("plane", channel["key"])
        try:
            index = int(plane)
        except (TypeError, ValueError):
            raise ValueError(
                f"datasets.{dataset}.channels.{channel['key']}: a stacked array's channels are picked by "
                f"index; use keys 0, 1, ... or set 'plane'"
            ) from None
        if not 0 <= index < n_planes:
            raise ValueError(
                f"datasets.{dataset}.channels.{channel['key']}: plane {index} but {entry['array']} has "
                f"{n_planes} channels (axes {axes})"
            )
    if entry.get("labels"):
        labels_path = Path(entry["labels"])
        if not labels_path.exists():
            raise ValueError(f"labels: {str(labels_path)!r} does not exist")
        labels = pd.read_csv(labels_path, dtype=str, keep_default_na=False, na_values=[""])
        if len(labels) != n:
            raise ValueError(
                f"{labels_path}: {len(labels)} rows but {entry['array']} holds {n} crops; one row per crop"
            )
        labels = labels.rename(columns={c: _metadata_name(c) for c in labels.columns})
    else:
        labels = pd.DataFrame(index=range(n))
    table = labels.reset_index(drop=True)
    if "Metadata_cell" in table.columns:
        table["Metadata_cell"] = table["Metadata_cell"].map(sanitize_id)
        if table["Metadata_cell"].duplicated().any():
            raise ValueError(f"{entry['labels']}: column 'cell' has repeated values; cell ids must be unique")
    else:
        table["Metadata_cell"] = [f"cell{i:07d}" for i in range(n)]
    if "Metadata_image" not in table.columns:
        table["Metadata_image"] = table["Metadata_cell"]
    table["array_row"] = np.arange(n, dtype=np.int64)
    return table


def index_crops(dataset: str, entry: dict, root: str | os.PathLike | None) -> pd.DataFrame:
    """List the cells of a pre-cropped dataset, one row per cell, with its shard.

    Parameters
    ----------
    dataset : str
        Dataset name.
    entry : dict
        The dataset's config entry (``channels``, ``pattern`` or ``array`` / ``labels``,
        ``metadata``, ``class``, ``group``, ``cells_per_shard``, ...).
    root : path-like or None
        The folder of the crop files (unused for a stacked array).

    Returns
    -------
    pandas.DataFrame
        ``Metadata_*`` columns (``Metadata_cell`` unique), where the pixels are
        (``file_<key>`` or ``array_row``) and ``shard``.

    Raises
    ------
    ValueError
        If no file matches, a cell lacks a channel, cell ids repeat, or a named metadata
        field is missing.
    """
    if entry.get("array"):
        table = _index_array(dataset, entry)
    else:
        table = _index_files(dataset, entry, Path(root))
    if entry.get("metadata"):
        on = entry.get("metadata_on", "cell")
        column = "Metadata_cell" if on == "cell" else _metadata_name(on)
        if column not in table.columns:
            raise ValueError(f"datasets.{dataset}.metadata_on: {on!r} is not a metadata field of the crops")
        table = table.rename(columns={column: "image"})
        table = _join_metadata(table, Path(entry["metadata"]), on)
        table = table.rename(columns={"image": column})
    table["Metadata_image"] = table["Metadata_image"].astype(str).map(sanitize_id)
    table.insert(0, "Metadata_dataset", dataset)
    assign_roles(table, dataset, entry, "these crops")
    for column in table.columns:
        if column.startswith("Metadata_") and column not in ("Metadata_cell", "Metadata_image", "Metadata_dataset"):
            table[column] = _coerce(table[column])
    for role in ("Metadata_class", "Metadata_group"):
        if role in table.columns:
            table[role] = table[role].astype(str)
    if table["Metadata_cell"].duplicated().any():
        raise ValueError(
            f"dataset {dataset!r}: cell id {table.loc[table['Metadata_cell'].duplicated(), 'Metadata_cell'].iloc[0]!r} repeats"
        )
    sort = "array_row" if "array_row" in table.columns else "Metadata_cell"
    table = table.sort_values(sort, kind="stable").reset_index(drop=True)
    size = int(entry["cells_per_shard"])
    table["shard"] = [f"s{i // size:04d}" for i in range(len(table))]
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    return table[meta + [c for c in table.columns if c not in meta]]


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    if crop.shape[-2:] == (size, size):
        return crop.astype(np.float32, copy=False)
    from skimage.transform import resize  # heavy: only the crop-loading jobs need it

    return resize(
        crop.astype(np.float32, copy=False),
        (crop.shape[0], size, size),
        order=1,
        anti_aliasing=crop.shape[-1] > size,
        preserve_range=True,
    ).astype(np.float32)


def load_crops(
    rows: pd.DataFrame, entry: dict, root: str | os.PathLike | None, size: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Load the pixels of index ``rows``, resized, and their cell table.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of the index (see :func:`index_crops`).
    entry : dict
        The dataset's config entry.
    root : path-like or None
        The folder of the crop files (unused for a stacked array).
    size : int
        Side of the output crops (anti-aliased bilinear resizing).

    Returns
    -------
    crops : numpy.ndarray
        ``(N, C, size, size)`` float32.
    table : pandas.DataFrame
        What segmented cells have downstream (``Metadata_*``, ``Metadata_label``,
        ``QC_saturated_fraction``); position and area are unknown for pre-cropped cells
        (NaN, so the area filter keeps them).

    Raises
    ------
    ValueError
        Naming the cell, if its files cannot be read.
    """
    channels: Sequence[dict] = entry["channels"]
    out = np.zeros((len(rows), len(channels), size, size), np.float32)
    saturated = np.zeros(len(rows))
    if entry.get("array"):
        array, _ = open_array(entry["array"], entry.get("array_key"))
        nhwc = entry.get("axes", "NCHW") == "NHWC"
        planes = [int(c.get("plane", c["key"])) for c in channels]
        for i, r in enumerate(rows["array_row"].to_numpy()):
            item = np.asarray(array[int(r)])
            item = np.moveaxis(item, -1, 0) if nhwc else item
            crop = item[planes]
            out[i] = _resize(crop, size)
            saturated[i] = _saturated(crop)
    else:
        for i, (_, row) in enumerate(rows.iterrows()):
            files = {str(c["key"]): row[f"file_{c['key']}"] for c in channels}
            try:
                crop = read_channels(files, channels, root)
            except ValueError as exc:
                raise ValueError(f"cell {row['Metadata_cell']!r}: {exc}") from None
            out[i] = _resize(crop, size)
            saturated[i] = _saturated(crop)
    table = rows[[c for c in rows.columns if c.startswith("Metadata_")]].copy().reset_index(drop=True)
    table["Metadata_label"] = np.arange(1, len(table) + 1, dtype=np.int64)
    for column in ("Metadata_x", "Metadata_y", "Metadata_area"):
        table[column] = np.nan
    table["QC_saturated_fraction"] = saturated
    return out, table


def _saturated(crop: np.ndarray) -> float:
    """Share of pixels at the integer dtype's maximum in any channel (0 for float data)."""
    if crop.dtype.kind not in "ui":
        return 0.0
    return float((crop >= np.iinfo(crop.dtype).max).any(axis=0).mean())
