r"""Fields of view from files on disk: list them, join their metadata, read their channels.

Three layouts, one code path. A dataset's files are matched against a regular expression on
their path relative to the dataset folder (posix ``/``), so folder names are regex groups too:

* one file per field holding every channel: a multi-page / multi-channel TIFF (OME-TIFF
  included) or an RGB composite (PNG, JPEG, TIFF); the channel keys of the config pick planes
  (``0``, ``1``, ... or ``red``, ``green``, ``blue``);
* one file per channel per field: the pattern has a ``channel`` group whose values are the
  channel keys (``(?P<image>.+)_w(?P<channel>\d)\.tif`` for BBBC021 names,
  ``(?P<image>r\d+c\d+f\d+p\d+)-ch(?P<channel>\d+)sk.*\.tiff`` for Cell Painting names);
* a field table (CSV): one row per field, a column ``image`` and ``file_<key>`` per channel
  (the format the HPA and BBBC acquisitions write; also a simple way to hand-pick fields).

Named groups other than ``image`` and ``channel`` become ``Metadata_<name>`` columns; a
metadata CSV is joined on the field; ``class``/``group`` name the columns that become
``Metadata_class`` (the label) and ``Metadata_group`` (the unit held out in evaluation).

The index (one row per field) is computed by :func:`index_fields` in one job, and each shard's
fields are read by :func:`read_field`, so a dataset of 100,000 fields is listed once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image

from workflow_scripts.datasets import effective_shard_size
from workflow_scripts.screen.layout import negative_control_rows

log = logging.getLogger(__name__)

__all__ = [
    "read_shard",
    "BAD_IMAGE_REASONS",
    "COLOUR_PLANES",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "MissingCodecError",
    "assign_roles",
    "compile_pattern",
    "describe",
    "field_index",
    "index_fields",
    "list_matches",
    "listing_fingerprint",
    "read_channels",
    "read_field",
    "read_planes",
    "sanitize_id",
]

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
COLOUR_PLANES = {"red": 0, "green": 1, "blue": 2}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED_GROUPS = {"image", "channel", "cell"}


def sanitize_id(value: str) -> str:
    """Make a field or cell id safe in file names and tables.

    Runs of characters outside ``[A-Za-z0-9._-]`` become ``_``; leading and trailing ``_``
    and ``.`` are removed.

    Parameters
    ----------
    value : str
        The id as found (a file stem, a table value).

    Returns
    -------
    str
        The safe id; ``_`` if nothing is left.

    Examples
    --------
    >>> sanitize_id("plate 1/A01 (x)"), sanitize_id("..")
    ('plate_1_A01_x', '_')
    """
    cleaned = _SAFE.sub("_", str(value)).strip("_.")
    return cleaned or "_"


def compile_pattern(pattern: str | None, key: str = "pattern") -> re.Pattern | None:
    """Compile a regular expression from the config.

    Parameters
    ----------
    pattern : str or None
        The expression; None for none.
    key : str, optional
        The config key it came from, for messages.

    Returns
    -------
    re.Pattern or None
        The compiled expression, or None.

    Raises
    ------
    ValueError
        Naming the key, if ``pattern`` is not a valid regular expression.
    """
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{key}: {pattern!r} is not a valid regular expression: {exc}") from None


def _walk(root: Path) -> Iterable[str]:
    """Relative posix paths of the files under ``root``, sorted, hidden files skipped."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            yield (rel_dir / name).as_posix()


def list_matches(root: str | os.PathLike, pattern: str | None) -> list[tuple[str, dict]]:
    """List the files under ``root`` whose relative path matches ``pattern`` in full.

    Hidden files and folders are skipped; symbolic links to folders are followed.

    Parameters
    ----------
    root : path-like
        The dataset folder.
    pattern : str or None
        Regular expression matched against each file's path relative to ``root`` (posix
        ``/``); without one every image file (:data:`IMAGE_EXTENSIONS`) matches.

    Returns
    -------
    list of (str, dict)
        Relative path and named groups (those that matched) per file, sorted by path.

    Raises
    ------
    ValueError
        Naming the folder, when it does not exist; or if ``pattern`` is invalid.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset path {str(root)!r} does not exist or is not a folder")
    regex = compile_pattern(pattern)
    matches = []
    for rel in _walk(root):
        if regex is None:
            if rel.lower().endswith(IMAGE_EXTENSIONS):
                matches.append((rel, {}))
            continue
        m = regex.fullmatch(rel)
        if m:
            matches.append((rel, {k: v for k, v in m.groupdict().items() if v is not None}))
    return matches


def listing_fingerprint(root: str | os.PathLike, pattern: str | None) -> str:
    """Hash the matching files' names, sizes and modification times into a short string.

    Given to the indexing rule as a parameter, so adding, removing or replacing an image makes
    Snakemake re-index the dataset (a folder's own timestamp does not say that).

    Parameters
    ----------
    root : path-like
        The dataset folder.
    pattern : str or None
        As for :func:`list_matches`.

    Returns
    -------
    str
        16 hex digits, or ``"missing"`` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for rel, _ in list_matches(root, pattern):
        st = (root / rel).stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _metadata_name(name: str) -> str:
    return name if name.startswith("Metadata_") else f"Metadata_{name}"


def _channel_keys(channels: Sequence[dict]) -> list[str]:
    return [str(c["key"]) for c in channels]


def _fields_from_matches(matches, channels, root) -> pd.DataFrame:
    keys = _channel_keys(channels)
    per_channel = any("channel" in groups for _, groups in matches)
    fields: dict[str, dict] = {}
    for rel, groups in matches:
        image = groups.get("image")
        if image is None:
            if per_channel:
                raise ValueError(
                    f"pattern: it has a 'channel' group but no 'image' group, so the channel files "
                    f"of one field cannot be grouped (file {rel!r})"
                )
            image = rel.rsplit(".", 1)[0]
        row = fields.setdefault(image, {"image": image, "files": {}, "meta": {}})
        for name, value in groups.items():
            if name in _RESERVED_GROUPS:
                continue
            old = row["meta"].setdefault(name, value)
            if old != value:
                raise ValueError(
                    f"field {image!r}: regex group {name!r} is {old!r} in one file and {value!r} in "
                    f"{rel!r}; a field's files must agree on their metadata"
                )
        if per_channel:
            key = groups.get("channel")
            if key is None:
                raise ValueError(f"file {rel!r} matched the pattern without a 'channel' value")
            if key not in keys:
                continue  # a channel the config does not use (e.g. BBBC021 _w3)
            if key in row["files"]:
                raise ValueError(f"field {image!r}: two files for channel {key!r}: {row['files'][key]!r} and {rel!r}")
            row["files"][key] = rel
        else:
            if row["files"]:
                raise ValueError(
                    f"field {image!r}: two files {row['files'][keys[0]]!r} and {rel!r}; with one file "
                    f"per field the pattern's 'image' group must be unique (add a 'channel' group "
                    f"for one file per channel)"
                )
            row["files"] = {k: rel for k in keys}
    rows = []
    for image, row in fields.items():
        missing = [k for k in keys if k not in row["files"]]
        if missing:
            found = sorted(row["files"].values())
            raise ValueError(
                f"field {image!r} in {str(root)!r}: no file for channel(s) {missing} (found {found}); "
                f"expected one file per channel key {keys}"
            )
        entry = {"image": image, **{f"file_{k}": row["files"][k] for k in keys}}
        entry.update({_metadata_name(n): v for n, v in row["meta"].items()})
        rows.append(entry)
    return pd.DataFrame(rows)


def _fields_from_table(path: Path, channels) -> pd.DataFrame:
    if not path.exists():
        raise ValueError(f"fields_table: {str(path)!r} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    keys = _channel_keys(channels)
    needed = ["image"] + [f"file_{k}" for k in keys]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; a field table needs 'image' and 'file_<key>' for "
            f"every channel key {keys} (has {list(table.columns)})"
        )
    blank = table[needed].isna().any(axis=1)
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0]) + 2
        raise ValueError(f"{path}: row {row} has an empty 'image' or 'file_<key>' value")
    keep = needed + [c for c in table.columns if c not in needed and not c.startswith("file_")]
    table = table[keep].rename(columns={c: _metadata_name(c) for c in keep if c not in needed})
    return table


def _join_metadata(fields: pd.DataFrame, path: Path, on: str) -> pd.DataFrame:
    if not path.exists():
        raise ValueError(f"metadata: {str(path)!r} does not exist")
    meta = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if on not in meta.columns:
        raise ValueError(f"{path}: no column {on!r} to join on (metadata_on); columns: {list(meta.columns)}")
    if meta[on].duplicated().any():
        dup = meta.loc[meta[on].duplicated(), on].iloc[0]
        raise ValueError(f"{path}: {on!r} value {dup!r} appears more than once; one row per field expected")
    meta = meta.rename(columns={c: _metadata_name(c) for c in meta.columns if c != on})
    overlap = [c for c in meta.columns if c in fields.columns and c != on]
    fields = fields.drop(columns=overlap)  # the CSV wins over regex groups of the same name
    key = fields["image"].astype(str)
    missing = sorted(set(key) - set(meta[on].astype(str)))
    if missing:
        raise ValueError(
            f"{path}: no row for {len(missing)} field(s), e.g. {missing[:5]}; every field's 'image' id "
            f"must appear in column {on!r}"
        )
    merged = fields.merge(meta.rename(columns={on: "image"}), on="image", how="left", validate="one_to_one")
    return merged


def _coerce(series: pd.Series) -> pd.Series:
    """Numbers stay numbers (a continuous value, a concentration); the rest stay strings."""
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().sum() == series.notna().sum() and series.notna().any():
        return numeric
    return series


def index_fields(
    dataset: str,
    entry: dict,
    root: str | os.PathLike,
    *,
    fields_table: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """List the fields of a dataset: one row per field, sorted by id, with its shard.

    Parameters
    ----------
    dataset : str
        Dataset name (the ``Metadata_dataset`` value, and used in messages).
    entry : dict
        The dataset's config entry with normalised ``channels``; ``pattern``,
        ``metadata``, ``metadata_on``, ``class``, ``group``, ``shard_size`` and
        ``max_shards`` are used.
    root : path-like
        The folder the files are listed under and relative to.
    fields_table : path-like, optional
        A field table (CSV) to read instead of listing ``root``.

    Returns
    -------
    pandas.DataFrame
        Columns ``Metadata_dataset``, ``Metadata_image``, ``Metadata_class`` /
        ``Metadata_group`` (from ``entry['class']`` / ``entry['group']``, group defaulting
        to the field), other ``Metadata_*`` columns, ``file_<key>`` per channel (relative to
        ``root``) and ``shard``. Fields without a class value are left out (counted in
        ``attrs["unlabelled_fields"]``).

    Raises
    ------
    ValueError
        If no file matches, a field lacks a channel, ids clash, or a named class or group
        is not a metadata field.
    """
    root = Path(root)
    fields = _list_fields(dataset, entry, root, fields_table)
    if entry.get("metadata"):
        fields = _join_metadata(fields, Path(entry["metadata"]), entry.get("metadata_on", "image"))
    fields = _with_field_ids(dataset, fields)
    assign_roles(fields, dataset, entry, "this dataset")
    for column in fields.columns:
        if column.startswith("Metadata_") and column not in ("Metadata_image", "Metadata_dataset"):
            fields[column] = _coerce(fields[column])
    controls = negative_control_rows(fields, entry["layout"], dataset=dataset) if entry.get("layout") else None
    fields = _drop_unlabelled(dataset, fields, controls)
    for role in ("Metadata_class", "Metadata_group"):
        if role in fields.columns:
            fields[role] = fields[role].astype(str)

    fields = fields.sort_values("Metadata_image", kind="stable").reset_index(drop=True)
    size = effective_shard_size(entry, len(fields))
    fields["shard"] = [f"s{i // size:04d}" for i in range(len(fields))]
    meta = [c for c in fields.columns if c.startswith("Metadata_")]
    return fields[meta + [c for c in fields.columns if c not in meta]]


def _list_fields(dataset: str, entry: dict, root: Path, fields_table) -> pd.DataFrame:
    """Return the fields of the field table, else of the files under ``root`` matching the pattern."""
    channels = entry["channels"]
    if fields_table is not None:
        return _fields_from_table(Path(fields_table), channels)
    matches = list_matches(root, entry.get("pattern"))
    if not matches:
        raise ValueError(
            f"dataset {dataset!r}: no file under {str(root)!r} matches pattern "
            f"{entry.get('pattern')!r} (matched against paths relative to that folder)"
        )
    return _fields_from_matches(matches, channels, root)


def _with_field_ids(dataset: str, fields: pd.DataFrame) -> pd.DataFrame:
    """Replace ``image`` by file-name safe ``Metadata_image`` ids and add ``Metadata_dataset``."""
    ids = fields["image"].map(sanitize_id)
    clash = ids[ids.duplicated()]
    if len(clash):
        raise ValueError(
            f"dataset {dataset!r}: field ids {sorted(fields.loc[ids == clash.iloc[0], 'image'])} become "
            f"the same id {clash.iloc[0]!r} once made file-name safe; rename them or change 'pattern'"
        )
    fields = fields.drop(columns="image")
    fields.insert(0, "Metadata_image", ids)
    fields.insert(0, "Metadata_dataset", dataset)
    return fields


def assign_roles(table: pd.DataFrame, dataset: str, entry: dict, what: str) -> None:
    """Add ``Metadata_class`` / ``Metadata_group`` from the fields ``entry`` names, in place.

    The group defaults to the field of view (``Metadata_image``).

    Parameters
    ----------
    table : pandas.DataFrame
        A field or cell index with ``Metadata_*`` columns.
    dataset : str
        Dataset name, for messages.
    entry : dict
        The dataset's config entry; its ``class`` and ``group`` name metadata fields.
    what : str
        What ``table`` lists, for messages ("this dataset", "these crops").

    Raises
    ------
    ValueError
        If ``class`` or ``group`` names no metadata field of ``table``; the message lists
        those available.

    Examples
    --------
    >>> table = pd.DataFrame({"Metadata_image": ["a", "b"], "Metadata_gene": ["x", "y"]})
    >>> assign_roles(table, "demo", {"class": "gene"}, "this dataset")
    >>> table[["Metadata_class", "Metadata_group"]].values.tolist()
    [['x', 'a'], ['y', 'b']]
    """
    for role in ("class", "group"):
        source = entry.get(role)
        if source:
            column = _metadata_name(source)
            if column not in table.columns:
                available = [c[len("Metadata_") :] for c in table.columns if c.startswith("Metadata_")]
                raise ValueError(
                    f"datasets.{dataset}.{role}: {source!r} is not a metadata field of {what}; "
                    f"available: {available}"
                )
            table[f"Metadata_{role}"] = table[column]
    if "Metadata_group" not in table.columns:
        table["Metadata_group"] = table["Metadata_image"]


#: The class of a screen's negative-control field that has none of its own.
CONTROL_CLASS = "negative control"


def _drop_unlabelled(dataset: str, fields: pd.DataFrame, controls=None) -> pd.DataFrame:
    """Leave out fields without a class value, and say so (``attrs["unlabelled_fields"]``).

    E.g. BBBC021 controls (DMSO) when the class is the mechanism of action and the MoA table
    lacks them: a field without a label cannot be scored. A screen's negative controls
    (``controls``, one flag per field) are kept, with the class :data:`CONTROL_CLASS`: every
    plate is normalised against them.
    """
    if "Metadata_class" not in fields.columns or not fields["Metadata_class"].isna().any():
        return fields
    if controls is not None:
        keep = fields["Metadata_class"].isna().to_numpy() & controls
        if keep.any():
            fields = fields.copy()
            fields.loc[keep, "Metadata_class"] = CONTROL_CLASS
            log.info("dataset %s: %d negative-control field(s) without a class kept as %r", dataset, keep.sum(), CONTROL_CLASS)
        if not fields["Metadata_class"].isna().any():
            return fields
    unlabelled = fields.loc[fields["Metadata_class"].isna(), "Metadata_image"]
    log.warning(
        "dataset %s: %d field(s) have no class value and are left out (e.g. %s)",
        dataset,
        len(unlabelled),
        list(unlabelled[:5]),
    )
    fields = fields[fields["Metadata_class"].notna()].copy()
    if fields.empty:
        raise ValueError(f"dataset {dataset!r}: no field has a class value")
    fields.attrs["unlabelled_fields"] = int(len(unlabelled))
    return fields


def field_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read an index written by the indexing rule.

    Parameters
    ----------
    path : path-like
        ``results/<dataset>/index.parquet``.

    Returns
    -------
    pandas.DataFrame
        The index (see :func:`index_fields`).
    """
    return pd.read_parquet(path)


# --- reading pixels -------------------------------------------------------------------------


class BadImageError(ValueError):
    """A field that cannot be used as it is on disk.

    Parameters
    ----------
    message : str
        What is wrong, naming the file.
    reason : str
        One of :data:`BAD_IMAGE_REASONS` (the drop reason counted when
        ``on_bad_image: skip``), kept as :attr:`reason`.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


#: Why a field is bad: its file is missing; cannot be decoded (empty, truncated, corrupt, not an
#: image); holds other planes than the channels ask for; channel images differ in shape; has
#: NaN or inf pixels.
BAD_IMAGE_REASONS = ("missing_file", "unreadable", "wrong_channels", "shape_mismatch", "non_finite")


class MissingCodecError(ValueError):
    """A compressed image this installation cannot decode because a codec package is missing.

    tifffile reads LZW, JPEG, Zstd, ... TIFFs through ``imagecodecs``. Not a :class:`BadImageError`: the file is not damaged, and ``on_bad_image: skip`` would
    otherwise drop every field of a screen that ships compressed TIFFs, so the run stops with
    a message that names the file, its compression and what to install. A ValueError, so the
    rule's runner reports it as a user error (message, no traceback).
    """


_CODEC_FIX = (
    "install the codecs with `pip install imagecodecs` (or `pip install -r requirements.txt`; with "
    "conda, update the environment from envs/core.yaml) and rerun"
)


def _compression_of(path: Path, message: str) -> str:
    """Name the compression of a TIFF tifffile could not decode.

    The one named in tifffile's message (``<COMPRESSION.LZW: 5> requires ...``), else the
    one the file's first page declares.
    """
    named = re.search(r"COMPRESSION\.(\w+)", message)
    if named:
        return named.group(1)
    try:
        with tifffile.TiffFile(path) as tif:
            compression = tif.pages[0].compression
        return getattr(compression, "name", str(compression))
    except Exception:  # the header is unreadable too: say so rather than guess
        return "unknown"


def _missing_codec(path: Path, exc: BaseException) -> MissingCodecError | None:
    """Return the error to raise when tifffile failed on ``path`` for want of a codec, else None.

    tifffile raises ValueError ``"<COMPRESSION.X: n> requires the 'imagecodecs' package"`` when
    the codec is absent, and an ImportError when a fallback module is missing (Zstd without
    imagecodecs looks for ``compression.zstd``, which only Python >= 3.14 has).
    """
    message = str(exc)
    if not (isinstance(exc, ImportError) or "requires the 'imagecodecs' package" in message):
        return None
    compression = _compression_of(path, message)
    # Packed 12-bit or 24-bit float pixels need imagecodecs too, in uncompressed files.
    what = f"its {compression} compression" if compression not in ("NONE", "unknown") else "its pixel encoding"
    return MissingCodecError(
        f"{path}: cannot decode {what}: this installation lacks the codec ({type(exc).__name__}: "
        f"{message}). The file is not damaged: {_CODEC_FIX}."
    )


def read_planes(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Read an image file as planes ``(P, H, W)``.

    TIFF (OME-TIFF included) through tifffile: every axis but Y and X is flattened into planes,
    in stored order. Compressed TIFFs (LZW, Deflate, Zstd, JPEG, ...) need ``imagecodecs``.
    Other formats through Pillow: greyscale -> one plane, RGB(A) -> three (alpha dropped),
    palette images converted to RGB.

    Parameters
    ----------
    path : path-like
        The image file.

    Returns
    -------
    planes : numpy.ndarray
        ``(P, H, W)`` in the file's dtype.
    colour : bool
        Whether the planes are colour samples (RGB).

    Raises
    ------
    MissingCodecError
        Naming the file and the compression, when the codec package is missing.
    ValueError
        If a TIFF has no Y and X axes; decoders raise their own errors for damaged files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = series.asarray()
                axes = series.axes
        except Exception as exc:
            missing = _missing_codec(path, exc)
            if missing is not None:
                raise missing from exc
            raise
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"{path}: TIFF axes {axes!r} have no Y and X")
        colour = "S" in axes and array.shape[axes.index("S")] in (3, 4)
        if colour:  # samples (RGB, contiguous or planar) first, alpha dropped
            array = np.moveaxis(array, axes.index("S"), 0)[:3]
            axes = "S" + axes.replace("S", "")
        order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
        array = np.transpose(array, order)
        return array.reshape((-1, *array.shape[-2:])), colour
    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        array = np.asarray(img)
    if array.ndim == 2:
        return array[None], False
    return np.moveaxis(array[..., :3], -1, 0), True


def _plane(planes: np.ndarray, colour: bool, channel: dict, shared: bool, path) -> np.ndarray:
    key = str(channel["key"])
    plane = channel.get("plane")
    if plane is None and shared:
        plane = key
    if plane is None:
        if len(planes) == 1:
            return planes[0]
        if colour:  # a single channel stored as colour (grey or one hue): max over R, G, B
            return planes.max(axis=0)
        raise ValueError(
            f"{path}: {len(planes)} planes for the single channel {key!r}; set channels.{key}.plane "
            f"to the plane index to use"
        )
    if isinstance(plane, str) and plane.lower() in COLOUR_PLANES:
        if not colour:
            raise ValueError(f"{path}: channel {key!r} asks for the {plane} plane of a file that is not RGB")
        return planes[COLOUR_PLANES[plane.lower()]]
    try:
        index = int(plane)
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: cannot tell which plane is channel {key!r}: use a plane index (0, 1, ...) or "
            f"red/green/blue as the key or as channels.{key}.plane"
        ) from None
    if not 0 <= index < len(planes):
        raise ValueError(f"{path}: channel {key!r} asks for plane {index} but the file has {len(planes)} plane(s)")
    return planes[index]


def read_channels(files: dict[str, str], channels: Sequence[dict], root) -> np.ndarray:
    """Read one field as ``(C, H, W)`` in the channel order of the config.

    A file shared by several channels is read once. Integer images keep their dtype (so
    saturation is judged against it); float images become float32; mixed integer depths are
    promoted.

    Parameters
    ----------
    files : dict
        Channel key -> path relative to ``root``.
    channels : sequence of dict
        The dataset's channels (``key``, optional ``plane``), in array order.
    root : path-like
        The dataset folder.

    Returns
    -------
    numpy.ndarray
        The field, ``(C, H, W)``.

    Raises
    ------
    BadImageError
        If the field cannot be used (skipped with ``on_bad_image: skip``).
    MissingCodecError
        If a compressed file's codec is not installed (never skipped).
    """
    root = Path(root)
    cache: dict[str, tuple[np.ndarray, bool]] = {}
    counts: dict[str, int] = {}
    for channel in channels:
        rel = files[str(channel["key"])]
        counts[rel] = counts.get(rel, 0) + 1
    out, shapes = [], []
    for channel in channels:
        rel = files[str(channel["key"])]
        path = root / rel
        if rel not in cache:
            if not path.is_file():
                raise BadImageError(f"{path}: file not found (listed for channel {channel['key']!r})", "missing_file")
            if path.stat().st_size == 0:
                raise BadImageError(f"{path}: the file is empty (0 bytes); expected an image", "unreadable")
            try:
                cache[rel] = read_planes(path)
            except MissingCodecError:  # the installation, not the file: stop, even with on_bad_image: skip
                raise
            except Exception as exc:  # a decoder's own error (truncated, corrupt): say which file
                raise BadImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})", "unreadable") from exc
        planes, colour = cache[rel]
        try:
            plane = _plane(planes, colour, channel, counts[rel] > 1, path)
        except ValueError as exc:
            raise BadImageError(str(exc), "wrong_channels") from None
        out.append(plane)
        shapes.append((str(channel["key"]), rel, plane.shape))
    if len({s[2] for s in shapes}) > 1:
        desc = ", ".join(f"{k}: {r} {s}" for k, r, s in shapes)
        raise BadImageError(f"channel images of one field differ in shape: {desc}", "shape_mismatch")
    dtype = np.result_type(*[p.dtype for p in out])
    if dtype.kind != "u" or dtype.itemsize > 2:  # float, signed or 32-bit: float32
        dtype = np.dtype(np.float32)
    field = np.stack([p.astype(dtype, copy=False) for p in out])
    if dtype.kind == "f" and not np.isfinite(field).all():
        bad = [
            f"{k}: {r} ({np.count_nonzero(~np.isfinite(p))} values)"
            for (k, r, _), p in zip(shapes, out)
            if p.dtype.kind == "f" and not np.isfinite(p).all()
        ]
        raise BadImageError(f"NaN or inf pixels in {', '.join(bad)}; expected finite intensities", "non_finite")
    return field


def read_field(row: pd.Series, channels: Sequence[dict], root) -> np.ndarray:
    """Read the pixels of one index row (see :func:`index_fields`).

    Parameters
    ----------
    row : pandas.Series
        A row of the index, with a ``file_<key>`` per channel.
    channels : sequence of dict
        The dataset's channels, in array order.
    root : path-like
        The dataset folder the files are relative to.

    Returns
    -------
    numpy.ndarray
        The field, ``(C, H, W)`` (see :func:`read_channels`, whose errors it raises).
    """
    files = {str(c["key"]): row[f"file_{c['key']}"] for c in channels}
    return read_channels(files, channels, root)


def read_shard(
    rows: pd.DataFrame, channels: Sequence[dict], root, *, dataset: str, on_bad_image: str = "fail"
) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Read the fields of one shard of the index.

    Parameters
    ----------
    rows : pandas.DataFrame
        The shard's rows of the index (:func:`field_index`).
    channels : sequence of dict
        The dataset's channels (``key``, ``name``, ``role``, ``plane``).
    root : str or os.PathLike
        The folder the index's file paths are relative to.
    dataset : str
        The dataset's name, for messages.
    on_bad_image : {"fail", "skip"}
        What a bad field (missing, unreadable, wrong planes, shapes that differ, NaN/inf
        pixels) does: stop with an error naming the file and the way out, or be left out.

    Returns
    -------
    images : list of numpy.ndarray
        The fields read, (C, H, W) each.
    table : pandas.DataFrame
        Their ``Metadata_*`` columns; ``table.attrs["skipped_fields"]`` lists the fields left
        out (``image``, ``reason``, ``message``), which segmentation passes on to the QC drop
        counts.

    Raises
    ------
    BadImageError
        For a bad field under ``on_bad_image: fail``.
    """
    images, kept, skipped = [], [], []
    for i, (_, row) in enumerate(rows.iterrows()):
        image_id = row["Metadata_image"]
        try:
            image = read_field(row, channels, root)
        except BadImageError as exc:
            if on_bad_image != "skip":
                raise BadImageError(
                    f"dataset {dataset!r}, field {image_id!r}: {exc}. Fix or remove the file, or set "
                    f"datasets.{dataset}.on_bad_image: skip to leave such fields out (they are "
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
    return images, table


def describe(entry: dict) -> str:
    """Describe in one line, for logs, the source options that shape the index.

    Parameters
    ----------
    entry : dict
        The dataset's config entry.

    Returns
    -------
    str
        JSON of the options that are set.

    Examples
    --------
    >>> describe({"source": "local", "pattern": ".*tif", "shard_size": 16, "class": None})
    '{"pattern": ".*tif", "shard_size": 16}'
    """
    keys = ("pattern", "fields_table", "metadata", "metadata_on", "class", "group", "shard_size", "max_shards")
    return json.dumps({k: entry.get(k) for k in keys if entry.get(k) is not None})
