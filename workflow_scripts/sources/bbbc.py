"""Broad Bioimage Benchmark Collection source: zip archives of per-channel images.

The images come with CellProfiler-style metadata CSVs (BBBC021 and the sets that follow
its convention).

:func:`acquire_bbbc` downloads the archives and CSVs to ``<raw_dir>/downloads/``,
extracts every archive (zip-slip safe) into ``<raw_dir>/images/``, reads the image table,
finds each channel file, joins the mechanism-of-action table and writes the field table
``<raw_dir>/fields.csv``, one row per row of the image table:

``image``
    ``<plate>_<well>_<site>`` with characters outside ``[A-Za-z0-9._-]`` replaced by
    ``_``. The site comes from a site column when the table has one, else from the
    ``_s<digits>_`` part of the first channel's file name (BBBC021's
    ``Week1_150607_B02_s1_w1...tif``), else it is the ``ImageNumber`` (prefixed with the
    ``TableNumber`` when there is one). Should two rows still collide, ``-2``, ``-3``, ...
    is appended in table order, so ids are unique and stable for a given table.
``file_<key>``
    One column per entry of ``channels``: the image path relative to ``raw_dir`` (posix).
``Metadata_plate``, ``Metadata_well``, ``Metadata_compound``, ``Metadata_concentration``,
``Metadata_replicate``
    From the image table (empty where the table lacks the column).
``Metadata_moa``
    The mechanism of action joined on (compound, concentration); NaN for pairs the MoA
    table does not list (BBBC021: DMSO and the concentrations without a clear phenotype).
``Metadata_site``
    The site (field of view within the well) when known: from a site column, else parsed
    from the file name as for ``image``.
``Metadata_table_number``, ``Metadata_image_number``
    ``TableNumber`` and ``ImageNumber`` when present, to join back to the source tables.
``Metadata_treatment``
    ``<compound>@<concentration>`` (``taxol@0.3``, ``DMSO@0``): BBBC021's unit of
    treatment, the perturbation of a screen layout; the compound alone where the
    concentration is missing.
``Metadata_batch``
    The ``Week<N>`` prefix of the plate (BBBC021's plates ``Week1_22123``, ...: the weeks
    are its imaging batches, those of the not-same-compound-or-batch evaluation), else the
    plate itself.
``Metadata_class``
    ``class_column`` of the above (without the ``Metadata_`` prefix); by default ``moa``
    when a MoA table is given, else ``compound``. Rows without a class keep NaN.
``Metadata_group``
    ``group_columns`` joined by ``_``. Default: ``compound`` when the class is the MoA:
    the standard "not-same-compound" evaluation of BBBC021 (a compound's fields are held
    out together, so a classifier cannot score by recognising the compound itself rather
    than its mechanism). When the class is anything else (e.g. the compound), holding out
    the class would leave nothing to learn it from, so the default is ``plate`` + ``well``
    (a well's fields are near-duplicates and must stay on one side of a split).
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd

from workflow_scripts.download import DownloadEntry, DownloadError, download_all, safe_extract_zip
from workflow_scripts.io import write_csv

__all__ = ["DEFAULT_METADATA_COLUMNS", "acquire_bbbc", "build_field_table"]

log = logging.getLogger(__name__)

FIELDS_NAME = "fields.csv"
_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SITE = re.compile(r"_s(\d+)(?:_|\b)")
_WEEK = re.compile(r"^(Week\d+)(?:[_-]|$)")

# Metadata name -> candidate columns of the image table, first present wins. BBBC021 first,
# then the plain CellProfiler and hand-made spellings.
DEFAULT_METADATA_COLUMNS: dict[str, tuple[str, ...]] = {
    "plate": ("Image_Metadata_Plate_DAPI", "Image_Metadata_Plate", "Metadata_Plate", "Plate"),
    "well": ("Image_Metadata_Well_DAPI", "Image_Metadata_Well", "Metadata_Well", "Well"),
    "site": ("Image_Metadata_Site", "Metadata_Site", "Site"),
    "compound": ("Image_Metadata_Compound", "Metadata_Compound", "Compound", "compound"),
    "concentration": (
        "Image_Metadata_Concentration",
        "Metadata_Concentration",
        "Concentration",
        "concentration",
    ),
    "replicate": ("Replicate", "Image_Metadata_Replicate", "Metadata_Replicate"),
    "table_number": ("TableNumber",),
    "image_number": ("ImageNumber",),
}
_ALWAYS = ("plate", "well", "compound", "concentration", "moa", "replicate")


def _sanitize(text: str) -> str:
    out = _UNSAFE.sub("_", str(text))
    return "_" * max(len(out), 1) if set(out) <= {"."} else out


def _url_name(url: str) -> str:
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name or _sanitize(name) != name:
        raise ValueError(f"{url!r}: expected a URL ending in a file name made of [A-Za-z0-9._-]")
    return name


def _as_list(value, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}={value!r}: expected a URL or a non-empty list of URLs")
    return list(value)


def _concentration_key(values: pd.Series) -> pd.Series:
    """Concentrations as rounded floats (``'1'``, ``'1.0'`` and ``1`` join), NaN kept."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers.map(lambda v: v if np.isnan(v) else float(f"{v:.10g}"))


def _read_moa(path: Path) -> pd.DataFrame:
    moa = pd.read_csv(path)
    columns = {c.lower(): c for c in moa.columns}
    missing = [c for c in ("compound", "concentration", "moa") if c not in columns]
    if missing:
        raise ValueError(f"{path}: MoA table lacks column(s) {missing}; expected compound, concentration, moa")
    moa = pd.DataFrame(
        {
            "compound": moa[columns["compound"]].astype(str).str.strip(),
            "concentration": _concentration_key(moa[columns["concentration"]]),
            "moa": moa[columns["moa"]],
        }
    ).drop_duplicates()
    clash = moa[moa.duplicated(["compound", "concentration"], keep=False)]
    if len(clash):
        first = clash.iloc[0]
        raise ValueError(
            f"{path}: {first['compound']!r} at concentration {first['concentration']} has several MoAs "
            f"{sorted(clash[(clash.compound == first.compound)].moa.astype(str).unique())}; expected one"
        )
    return moa


def _plain_name(name: str) -> bool:
    """Tell whether ``name`` is a single path component (no separator, not ``.`` or ``..``)."""
    return bool(name) and name not in (".", "..") and not any(ch in name for ch in "/\\\x00")


def _last_folder(pathname) -> str | None:
    """Return the last folder of a CellProfiler PathName (posix or Windows spelling)."""
    if not isinstance(pathname, str) or not pathname.strip():
        return None
    text = pathname.strip().rstrip("/\\")
    name = PureWindowsPath(text).name if "\\" in text else PurePosixPath(text).name
    return name or None


def _index_tree(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = defaultdict(list)
    for dirpath, _, files in os.walk(root):
        for name in files:
            index[name].append(Path(dirpath) / name)
    return index


def build_field_table(
    images: pd.DataFrame,
    raw_dir: str | os.PathLike,
    *,
    channels: Mapping[str, str],
    moa: pd.DataFrame | None = None,
    image_root: str = "images",
    image_column_prefix: str = "Image_FileName_",
    path_column_prefix: str = "Image_PathName_",
    metadata_columns: Mapping[str, str] | None = None,
    class_column: str | None = None,
    group_columns: Sequence[str] | None = None,
    source: str = "image table",
) -> pd.DataFrame:
    """Build the field table of an image table whose files lie under ``raw_dir/image_root``.

    The I/O-free part of :func:`acquire_bbbc` (apart from listing the extracted files).

    Parameters
    ----------
    images : pandas.DataFrame
        The image table, one row per field of view.
    raw_dir : path-like
        Folder the ``file_<key>`` paths are relative to.
    channels : dict
        Channel key -> CSV channel suffix, as for :func:`acquire_bbbc`.
    moa : pandas.DataFrame, optional
        Mechanism-of-action table with columns ``compound``, ``concentration`` (floats)
        and ``moa``.
    image_root : str, optional
        Folder under ``raw_dir`` holding the extracted images.
    image_column_prefix, path_column_prefix, metadata_columns, class_column, group_columns
        As for :func:`acquire_bbbc`.
    source : str, optional
        Name of the table in messages.

    Returns
    -------
    pandas.DataFrame
        The field table (columns in the module docstring); ``attrs["n_without_moa"]``
        counts the fields without a MoA.

    Raises
    ------
    ValueError
        If a channel column or file, a plate or well column, or a class or group column
        is missing.
    """
    raw_dir = Path(raw_dir)
    channels = dict(channels)
    _check_channel_columns(images, channels, image_column_prefix, source)
    resolved = _resolve_metadata(images, metadata_columns, source)
    files = _locate_channel_files(
        images, raw_dir, raw_dir / image_root, channels, image_column_prefix, path_column_prefix, source
    )
    table = _metadata_table(images, resolved)
    _add_treatment_and_batch(table)
    n_no_moa = _join_moa(table, moa)
    _add_class_and_group(table, class_column, group_columns, has_moa=moa is not None)
    site = _site(images, resolved, table, f"{image_column_prefix}{next(iter(channels.values()))}")
    ids = _field_ids(images, resolved, site)

    out = pd.DataFrame({"image": ids}, index=images.index)
    for key in channels:
        out[f"file_{key}"] = files[key]
    meta_order = ["Metadata_class", "Metadata_group"] + [
        c for c in table.columns if c not in ("Metadata_class", "Metadata_group")
    ]
    out = pd.concat([out, table[meta_order]], axis=1).reset_index(drop=True)
    out.attrs["n_without_moa"] = n_no_moa
    return out


def _check_channel_columns(images: pd.DataFrame, channels: dict, image_column_prefix: str, source: str) -> None:
    """Raise unless every channel key is a safe name with a file name column in ``images``."""
    if not channels:
        raise ValueError("channels: expected at least one channel key -> CSV channel suffix")
    for key, suffix in channels.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"channels: key {key!r} must be made of [A-Za-z0-9_] (it becomes column file_{key})")
        column = f"{image_column_prefix}{suffix}"
        if column not in images.columns:
            raise ValueError(
                f"{source}: no column {column!r} for channel {key!r}; file name columns present: "
                f"{[c for c in images.columns if c.startswith(image_column_prefix)]}"
            )


def _resolve_metadata(images: pd.DataFrame, metadata_columns: Mapping[str, str] | None, source: str) -> dict[str, str]:
    """Metadata name -> image-table column: the defaults present, then the overrides."""
    resolved: dict[str, str] = {}
    for name, candidates in DEFAULT_METADATA_COLUMNS.items():
        found = next((c for c in candidates if c in images.columns), None)
        if found is not None:
            resolved[name] = found
    for name, column in (metadata_columns or {}).items():
        if column not in images.columns:
            raise ValueError(f"{source}: metadata column {column!r} (for Metadata_{name}) not found")
        resolved[name] = column
    for name in ("plate", "well"):
        if name not in resolved:
            raise ValueError(
                f"{source}: no {name} column; expected one of {list(DEFAULT_METADATA_COLUMNS[name])} "
                f"or metadata_columns={{'{name}': <column>}}"
            )
    return resolved


class _FileFinder:
    """Find the channel files named by an image table under ``root``.

    A file is looked for at ``<root>/<last folder of PathName>/<FileName>``, else as the
    only file of that name anywhere under ``root`` (the tree is listed once, on first need).
    """

    def __init__(self, root: Path):
        self.root = root
        self._index: dict[str, list[Path]] | None = None

    def find(self, name, pathname) -> tuple[Path | None, str, str]:
        """Return the file found (or None), the name as reported, and the problem if none."""
        if not (isinstance(name, str) and name.strip()):
            return None, repr(name), "no file name"
        name = name.strip()
        folder = _last_folder(pathname)
        if folder is not None and _plain_name(folder) and _plain_name(name):
            candidate = self.root / folder / name
            if candidate.is_file():
                return candidate, name, "not found"
        if self._index is None:
            self._index = _index_tree(self.root)
        hits = self._index.get(name, [])
        if len(hits) == 1:
            return hits[0], name, "not found"
        if len(hits) > 1:
            return None, name, f"ambiguous: {len(hits)} files of that name under {self.root}"
        return None, name, "not found"


def _locate_channel_files(
    images: pd.DataFrame,
    raw_dir: Path,
    root: Path,
    channels: dict,
    image_column_prefix: str,
    path_column_prefix: str,
    source: str,
) -> dict[str, list[str | None]]:
    """Channel key -> each row's file relative to ``raw_dir`` (posix); raise if any is missing."""
    finder = _FileFinder(root)
    files: dict[str, list[str | None]] = {key: [] for key in channels}
    missing: list[tuple[int, str, str, str]] = []  # (row number, channel key, file name, problem)
    for key, suffix in channels.items():
        names = images[f"{image_column_prefix}{suffix}"].tolist()
        path_column = f"{path_column_prefix}{suffix}"
        folders = images[path_column].tolist() if path_column in images.columns else [None] * len(images)
        for row_number, (name, pathname) in enumerate(zip(names, folders), start=1):
            found, shown, problem = finder.find(name, pathname)
            if found is None:
                missing.append((row_number, key, shown, problem))
                files[key].append(None)
            else:
                files[key].append(found.relative_to(raw_dir).as_posix())
    if missing:
        raise ValueError(_missing_files_message(images, missing, root, source))
    return files


def _missing_files_message(images: pd.DataFrame, missing: list, root: Path, source: str) -> str:
    """List the first 20 missing channel files by row, with the row's table and image numbers."""
    id_columns = [c for c in ("TableNumber", "ImageNumber") if c in images.columns]
    lines = []
    for row_number, key, name, problem in sorted(missing, key=lambda m: m[0])[:20]:
        row = images.iloc[row_number - 1]
        ident = ", ".join(f"{c}={row[c]}" for c in id_columns)
        lines.append(f"row {row_number}{' (' + ident + ')' if ident else ''}, channel {key}: {name} ({problem})")
    return (
        f"{source}: {len(missing)} channel file(s) missing under {root}"
        + (" (first 20)" if len(missing) > 20 else "")
        + ":\n  "
        + "\n  ".join(lines)
    )


def _metadata_table(images: pd.DataFrame, resolved: dict[str, str]) -> pd.DataFrame:
    """Take the ``Metadata_*`` columns from the image table (site apart)."""
    table = pd.DataFrame(index=images.index)
    for name in _ALWAYS:
        table[f"Metadata_{name}"] = images[resolved[name]] if name in resolved else np.nan
    for name, column in resolved.items():
        if name not in _ALWAYS and name != "site":
            table[f"Metadata_{name}"] = images[column]
    table["Metadata_concentration"] = _concentration_key(table["Metadata_concentration"])
    table["Metadata_compound"] = table["Metadata_compound"].map(lambda v: v.strip() if isinstance(v, str) else v)
    return table


def _add_treatment_and_batch(table: pd.DataFrame) -> None:
    """Add ``Metadata_treatment`` and ``Metadata_batch`` (see the module docstring), in place."""
    compound, concentration = table["Metadata_compound"], table["Metadata_concentration"]
    dose = pd.Series([f"@{v:.10g}" if pd.notna(v) else "" for v in concentration], index=table.index, dtype=object)
    table["Metadata_treatment"] = (compound.astype(str) + dose).where(compound.notna())
    plate = table["Metadata_plate"].astype(str)
    week = plate.str.extract(_WEEK, expand=False)
    table["Metadata_batch"] = week.fillna(plate).where(table["Metadata_plate"].notna())


def _join_moa(table: pd.DataFrame, moa: pd.DataFrame | None) -> int:
    """Fill ``Metadata_moa`` from the MoA table on (compound, concentration); count the misses."""
    if moa is None:
        return 0
    joined = table[["Metadata_compound", "Metadata_concentration"]].merge(
        moa.rename(columns={"compound": "Metadata_compound", "concentration": "Metadata_concentration"}),
        how="left",
        on=["Metadata_compound", "Metadata_concentration"],
        validate="many_to_one",
    )
    table["Metadata_moa"] = joined["moa"].to_numpy()
    no_moa = table["Metadata_moa"].isna()
    n_no_moa = int(no_moa.sum())
    if n_no_moa:
        compounds = sorted(table.loc[no_moa, "Metadata_compound"].astype(str).unique())
        log.info(
            "BBBC: %d of %d fields have no MoA (compound/concentration not in the MoA table): %s",
            n_no_moa,
            len(table),
            ", ".join(compounds[:20]) + (" ..." if len(compounds) > 20 else ""),
        )
    return n_no_moa


def _add_class_and_group(table: pd.DataFrame, class_column, group_columns, *, has_moa: bool) -> None:
    """Add ``Metadata_class`` and ``Metadata_group`` (defaults in the module docstring)."""
    if class_column is None:
        class_column = "moa" if has_moa else "compound"
    class_column = class_column.removeprefix("Metadata_")
    names = [c.removeprefix("Metadata_") for c in table.columns if c.startswith("Metadata_")]
    if f"Metadata_{class_column}" not in table.columns:
        raise ValueError(f"class_column={class_column!r}: expected one of {names}")
    if group_columns is None:
        group_columns = ["compound"] if class_column == "moa" else ["plate", "well"]
    elif isinstance(group_columns, str):
        group_columns = [group_columns]
    group_columns = [g.removeprefix("Metadata_") for g in group_columns]
    unknown = [g for g in group_columns if f"Metadata_{g}" not in table.columns]
    if not group_columns or unknown:
        raise ValueError(f"group_columns={group_columns!r}: expected names from {names}")
    table["Metadata_class"] = table[f"Metadata_{class_column}"]
    table["Metadata_group"] = (
        table[[f"Metadata_{g}" for g in group_columns]].astype(str).agg("_".join, axis=1).map(_sanitize)
    )


def _site(images: pd.DataFrame, resolved: dict[str, str], table: pd.DataFrame, first_file_column: str) -> pd.Series:
    """Return the site part of each field id; add ``Metadata_site`` to ``table`` when known.

    From a site column, else the ``_s<digits>_`` of the first channel's file name, else the
    (table and) image number, else the row number.
    """
    if "site" in resolved:
        table["Metadata_site"] = images[resolved["site"]]
        return images[resolved["site"]].astype(str)
    parsed = images[first_file_column].astype(str).str.extract(_SITE)[0]
    if parsed.notna().all():
        table["Metadata_site"] = parsed.astype(int)
        return "s" + parsed
    if "image_number" in resolved:
        number = images[resolved["image_number"]].astype(str)
        if "table_number" in resolved:
            number = images[resolved["table_number"]].astype(str) + "-" + number
        return number
    return pd.Series([str(i) for i in range(1, len(images) + 1)], index=images.index)


def _field_ids(images: pd.DataFrame, resolved: dict[str, str], site: pd.Series) -> list[str]:
    """``<plate>_<well>_<site>``, sanitised, with ``-2``, ``-3``, ... appended to repeats."""
    base = (images[resolved["plate"]].astype(str) + "_" + images[resolved["well"]].astype(str) + "_" + site).map(
        _sanitize
    )
    taken: set[str] = set()
    ids = []
    for name in base:
        unique, k = name, 1
        while unique in taken:
            k += 1
            unique = f"{name}-{k}"
        taken.add(unique)
        ids.append(unique)
    return ids


def acquire_bbbc(
    raw_dir: str | os.PathLike,
    *,
    archives: Sequence[str],
    image_csv: str | Sequence[str],
    moa_csv: str | None = None,
    channels: Mapping[str, str],
    image_column_prefix: str = "Image_FileName_",
    path_column_prefix: str = "Image_PathName_",
    metadata_columns: Mapping[str, str] | None = None,
    class_column: str | None = None,
    group_columns: Sequence[str] | None = None,
    workers: int = 4,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: bool = True,
    session=None,
    fields_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Download and unpack a BBBC image set and write ``raw_dir/fields.csv``.

    Parameters
    ----------
    raw_dir : path-like
        Destination: ``downloads/`` (archives and CSVs as fetched), ``images/`` (the
        archives' contents) and ``fields.csv`` (columns in the module docstring).
    archives : list of str
        URLs of the zip archives of images (e.g. ``.../BBBC021_v1_images_Week1_22123.zip``).
    image_csv : str or list of str
        URL(s) of the image table(s): one row per field of view, CellProfiler-style
        ``<image_column_prefix><channel>`` / ``<path_column_prefix><channel>`` columns
        plus metadata columns (BBBC021: ``BBBC021_v1_image.csv``). Several are
        concatenated.
    moa_csv : str, optional
        URL of the mechanism-of-action table (columns ``compound``, ``concentration``,
        ``moa``; BBBC021: ``BBBC021_v1_moa.csv``), joined on (compound, concentration).
    channels : dict
        Channel key (the ``file_<key>`` column) -> the channel suffix of the CSV columns,
        e.g. ``{"DAPI": "DAPI", "Tubulin": "Tubulin", "Actin": "Actin"}``.
    image_column_prefix, path_column_prefix : str
        Prefixes of the file name and folder columns. A file is looked for at
        ``images/<last folder of PathName>/<FileName>`` (BBBC021 archives hold one folder
        per plate), else as the only file of that name anywhere under ``images/``.
    metadata_columns : dict, optional
        Overrides of the image-table column for a metadata name (``plate``, ``well``,
        ``site``, ``compound``, ``concentration``, ``replicate``, ...); by default the
        first of :data:`DEFAULT_METADATA_COLUMNS` present is used. ``plate`` and ``well``
        are required.
    class_column : str, optional
        Metadata name that becomes ``Metadata_class``; default ``moa`` with a MoA table,
        else ``compound``.
    group_columns : list of str, optional
        Metadata names joined into ``Metadata_group``; default ``["compound"]`` when the
        class is the MoA (not-same-compound evaluation), else ``["plate", "well"]``.
    workers, retries, backoff, timeout, progress, session
        Passed to :func:`~workflow_scripts.download.download_all`.
    fields_path : path-like, optional
        Where the field table goes instead of ``raw_dir/fields.csv`` (the workflow keeps it
        under ``results/<dataset>/raw`` when the files land in a folder of the user's); its
        paths stay relative to ``raw_dir``.

    Returns
    -------
    pandas.DataFrame
        The field table as written; ``attrs["n_without_moa"]`` counts the fields without a
        MoA.

    Raises
    ------
    DownloadError
        If any download failed; what arrived stays, ``fields.csv`` is not written, and a
        re-run resumes.
    ValueError
        If a channel file named by the image table is missing (all missing files listed,
        the first 20 shown), a column is missing, the MoA table is inconsistent, or an
        archive member would land outside ``images/``.
    """
    archives = _as_list(archives, "archives")
    image_csvs = _as_list(image_csv, "image_csv")
    urls = archives + image_csvs + ([moa_csv] if moa_csv is not None else [])
    _check_download_names(urls)
    if not channels:
        raise ValueError("channels: expected at least one channel key -> CSV channel suffix")

    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    fields_path = Path(fields_path) if fields_path is not None else raw_dir / FIELDS_NAME
    fields_path.parent.mkdir(parents=True, exist_ok=True)
    # fields.csv marks a complete acquisition: a stale one must not survive a failed run.
    fields_path.unlink(missing_ok=True)
    dl = {"workers": workers, "retries": retries, "backoff": backoff, "timeout": timeout}
    _download(urls, raw_dir, **dl, progress=progress, session=session)
    for url in archives:
        safe_extract_zip(_downloaded(raw_dir, url), raw_dir / "images")
    images = _read_image_tables(raw_dir, image_csvs)
    first = f"{path_column_prefix}{next(iter(channels.values()))}"
    images = _rows_of_extracted_folders(images, raw_dir / "images", first, ", ".join(map(_url_name, image_csvs)))
    moa = _read_moa(_downloaded(raw_dir, moa_csv)) if moa_csv is not None else None

    table = build_field_table(
        images,
        raw_dir,
        channels=channels,
        moa=moa,
        image_column_prefix=image_column_prefix,
        path_column_prefix=path_column_prefix,
        metadata_columns=metadata_columns,
        class_column=class_column,
        group_columns=group_columns,
        source=", ".join(_url_name(u) for u in image_csvs),
    )
    write_csv(fields_path, table)
    log.info("BBBC: %d fields, %d channels in %s", len(table), len(channels), raw_dir)
    return table


def _rows_of_extracted_folders(images: pd.DataFrame, root: Path, path_column: str, source: str) -> pd.DataFrame:
    """Keep the image table's rows whose plate folder was extracted from the archives.

    An image table (BBBC021's) lists every plate of the set, while a configuration may fetch
    only some plates' archives: the rows of a plate folder that no archive holds are left
    out, and logged. A folder that exists but lacks files stays an error
    (:func:`_locate_channel_files`). Without a PathName column every row is kept.
    """
    if path_column not in images.columns:
        return images
    present = {name for _, dirs, _ in os.walk(root) for name in dirs}
    folders = images[path_column].map(_last_folder)
    kept = folders.isna() | folders.isin(present)
    if kept.all():
        return images
    absent = sorted(set(folders[~kept]))
    if not kept.any():
        raise ValueError(
            f"{source}: none of the {len(absent)} plate folder(s) it names ({', '.join(absent[:5])}, ...) "
            f"is in the extracted archives under {root}; check `archives`"
        )
    log.info(
        "BBBC: %d of %d image-table rows left out: their %d plate folder(s) (%s%s) are in no downloaded archive",
        (~kept).sum(),
        len(images),
        len(absent),
        ", ".join(absent[:5]),
        ", ..." if len(absent) > 5 else "",
    )
    return images[kept.to_numpy()].reset_index(drop=True)


def _check_download_names(urls: list[str]) -> None:
    """Raise unless every URL ends in a safe file name, and no two in the same one."""
    names = [_url_name(u) for u in urls]
    duplicate = sorted({n for n in names if names.count(n) > 1})
    if duplicate:
        raise ValueError(f"archives/image_csv/moa_csv: several URLs end in the same file name {duplicate}")


def _downloaded(raw_dir: Path, url: str) -> Path:
    """Where :func:`_download` puts the file of ``url``."""
    return raw_dir / "downloads" / _url_name(url)


def _download(urls: list[str], raw_dir: Path, **options) -> None:
    """Fetch every URL to ``raw_dir/downloads/``; raise :class:`DownloadError` if any failed."""
    entries = [DownloadEntry(url=u, path=f"downloads/{_url_name(u)}") for u in urls]
    report = download_all(entries, raw_dir, **options)
    if report.failed:
        raise DownloadError(report.summary())


def _read_image_tables(raw_dir: Path, image_csvs: list[str]) -> pd.DataFrame:
    """Read the downloaded image tables, concatenated; raise if they hold no row."""
    frames = [pd.read_csv(_downloaded(raw_dir, url)) for url in image_csvs]
    images = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if images.empty:
        raise ValueError(f"{', '.join(image_csvs)}: the image table has no rows")
    return images
