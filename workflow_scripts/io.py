"""Readers and writers of the workflow's files.

Every writer is atomic: data goes to a temporary file in the destination folder, which is
renamed over the final name only once it is complete, so a killed job or a full disk never
leaves a partial file under a final output name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd


def _current_umask() -> int:
    """Read the process umask (setting it needs a value, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def file_mode(executable: bool = False) -> int:
    """Return the usual permissions of a new file: ``0666 & ~umask`` (``0777`` if executable).

    Files written through a temporary name (``mkstemp`` creates them ``0600``) get these,
    so results stay readable by the group on shared clusters.

    Parameters
    ----------
    executable : bool, optional
        Whether the file is a program (execute bits as the umask allows).

    Returns
    -------
    int
        The mode bits, for :func:`os.chmod`.

    Examples
    --------
    >>> file_mode() == 0o666 & ~_UMASK
    True
    """
    return (0o777 if executable else 0o666) & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the final suffix (libraries such as numpy and matplotlib
    choose the format from it) and gets the usual permissions (:func:`file_mode`). On any
    exception the temporary file is removed and the final path is left untouched.

    Parameters
    ----------
    path : path-like
        The final file; its folder is created if needed.
    suffix : str, optional
        Suffix of the temporary file, if not that of ``path``.

    Yields
    ------
    pathlib.Path
        The temporary file to write.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the final file the usual permissions.
    os.chmod(tmp_path, file_mode())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` (memory-mappable when read back).

    Parameters
    ----------
    path : path-like
        Destination file.
    array : numpy.ndarray
        The array (written C-contiguous).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write several arrays as an uncompressed ``.npz``.

    Parameters
    ----------
    path : path-like
        Destination file.
    **arrays : numpy.ndarray
        Member name -> array.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_parquet(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as Parquet without the pandas index.

    Parameters
    ----------
    path : path-like
        Destination file.
    table : pandas.DataFrame
        The table.
    """
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as CSV without the pandas index.

    Parameters
    ----------
    path : path-like
        Destination file.
    table : pandas.DataFrame
        The table.
    """
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write an object as indented JSON (numpy scalars and arrays converted).

    Parameters
    ----------
    path : path-like
        Destination file.
    obj : object
        Anything :func:`json.dump` takes, numpy scalars and arrays included; NaN is
        written as ``NaN``.

    Raises
    ------
    TypeError
        If ``obj`` holds something else that JSON cannot represent.
    """

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, default=default, allow_nan=True)
            fh.write("\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : path-like
        Destination file; its suffix picks the format.
    dpi : int, optional
        Resolution of raster formats.
    """
    import matplotlib.pyplot as plt  # heavy, and only the plotting jobs need it

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """Return the ``Metadata_*`` columns of a table, in order.

    Parameters
    ----------
    table : pandas.DataFrame
        A cell, field or feature table.

    Returns
    -------
    list of str
        The column names.

    Examples
    --------
    >>> metadata_columns(pd.DataFrame(columns=["Metadata_image", "f0", "Metadata_class"]))
    ['Metadata_image', 'Metadata_class']
    """
    return [c for c in table.columns if c.startswith("Metadata_")]


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Return the feature columns of a table: everything that is not ``Metadata_*``.

    Parameters
    ----------
    table : pandas.DataFrame
        A feature table.

    Returns
    -------
    list of str
        The column names, in order.

    Examples
    --------
    >>> feature_columns(pd.DataFrame(columns=["Metadata_image", "f0", "f1"]))
    ['f0', 'f1']
    """
    return [c for c in table.columns if not c.startswith("Metadata_")]


def write_fields(path: str | os.PathLike, images, image_ids, truth_labels=None) -> None:
    """Write the fields of one shard as an uncompressed ``.npz``.

    Fields of one shape are stacked under ``images`` ``(N, C, H, W)``; fields of different
    shapes (real screens mix them) go one array each, ``image_00000``, ``image_00001``, ...
    Read back with :func:`read_fields`.

    Parameters
    ----------
    path : path-like
        Destination file.
    images : numpy.ndarray or sequence of numpy.ndarray
        The fields, each ``(C, H, W)``.
    image_ids : sequence of str
        The field ids, in the order of ``images``.
    truth_labels : numpy.ndarray, optional
        Ground-truth label images ``(N, H, W)`` (synthetic fields).
    """
    arrays = {"image_ids": np.asarray(image_ids, dtype=str)}
    if len({tuple(np.shape(im)) for im in images}) <= 1 and len(images):
        arrays["images"] = np.stack(images) if not isinstance(images, np.ndarray) else images
    else:
        arrays.update({f"image_{i:05d}": np.asarray(im) for i, im in enumerate(images)})
        arrays["n_images"] = np.asarray(len(images))
    if truth_labels is not None:
        arrays["truth_labels"] = truth_labels
    write_npz(path, **arrays)


def _stored_member_memmap(path: Path, archive, name: str) -> np.ndarray | None:
    """Map the ``.npy`` member ``name`` of an uncompressed ``.npz`` read-only.

    None when it cannot be mapped (compressed, object dtype, unusual header): the caller
    then reads it with ``np.load``.

    Mapping instead of reading means a job touches only what it uses: the nuclear plane for
    segmentation, the crop windows of the other channels, and no copy or CRC pass over the
    whole shard (which was a sixth of the segment + crop time of a 2048 x 2048 field). The size
    of the member is checked against its header, so a truncated file is an error, not zeros.
    """
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return None
        except ValueError:
            return None
        if dtype.hasobject:
            return None  # np.load refuses it (allow_pickle=False) with its own message
        offset = fh.tell()
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset - start + n_bytes != info.file_size:
        return None
    if n_bytes == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def read_fields(path: str | os.PathLike) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray | None]:
    """Read the fields of a shard written by :func:`write_fields`.

    Arrays of an uncompressed ``.npz`` (what :func:`write_fields` writes) come back as
    read-only memory maps; other members are read with ``np.load`` (``allow_pickle=False``).

    Parameters
    ----------
    path : path-like
        The shard's ``.npz`` file.

    Returns
    -------
    images : numpy.ndarray or list of numpy.ndarray
        An ``(N, C, H, W)`` array, or a list of ``(C, H, W)`` arrays for fields of
        different shapes.
    truth_labels : numpy.ndarray or None
        The ground-truth label images, if the shard has them.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "s0000.npz"
    >>> write_fields(path, np.zeros((2, 3, 8, 8), np.uint16), ["a", "b"])
    >>> images, truth = read_fields(path)
    >>> images.shape, truth
    ((2, 3, 8, 8), None)
    """
    path = Path(path)
    # The maps stay valid once the archive is closed; members read by np.load are read inside.
    with np.load(path, allow_pickle=False) as data:

        def member(name: str) -> np.ndarray:
            mapped = _stored_member_memmap(path, data.zip, name)
            return data[name] if mapped is None else mapped

        truth = member("truth_labels") if "truth_labels" in data.files else None
        if "images" in data.files:
            return member("images"), truth
        n = int(data["n_images"]) if "n_images" in data.files else 0
        return [member(f"image_{i:05d}") for i in range(n)], truth
