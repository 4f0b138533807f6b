"""Readers and writers. Every writer is atomic: data goes to a temporary file in the
destination folder, which is renamed over the final name only once it is complete, so a
killed job or a full disk never leaves a partial file under a final output name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the final suffix (libraries such as numpy and matplotlib
    choose the format from it). On any exception the temporary file is removed and the
    final path is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the final file the usual permissions (0666 - umask)
    # so results stay readable by the group on shared clusters.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` (memory-mappable when read back)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write several arrays as an uncompressed ``.npz``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_parquet(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as Parquet without the pandas index."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as CSV without the pandas index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write an object as indented JSON (numpy scalars converted)."""

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
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The ``Metadata_*`` columns of a table, in order."""
    return [c for c in table.columns if c.startswith("Metadata_")]


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a table: everything that is not ``Metadata_*``."""
    return [c for c in table.columns if not c.startswith("Metadata_")]


def write_fields(path: str | os.PathLike, images, image_ids, truth_labels=None) -> None:
    """Write the fields of one shard. Fields of one shape are stacked under ``images``
    ``(N, C, H, W)``; fields of different shapes (real screens mix them) go one array each,
    ``image_00000``, ``image_00001``, ... Read back with :func:`read_fields`."""
    arrays = {"image_ids": np.asarray(image_ids, dtype=str)}
    if len({tuple(np.shape(im)) for im in images}) <= 1 and len(images):
        arrays["images"] = np.stack(images) if not isinstance(images, np.ndarray) else images
    else:
        arrays.update({f"image_{i:05d}": np.asarray(im) for i, im in enumerate(images)})
        arrays["n_images"] = np.asarray(len(images))
    if truth_labels is not None:
        arrays["truth_labels"] = truth_labels
    write_npz(path, **arrays)


def read_fields(path: str | os.PathLike) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray | None]:
    """The fields of a shard written by :func:`write_fields`: images (an ``(N, C, H, W)``
    array or a list of ``(C, H, W)`` arrays) and the ground-truth labels if any."""
    data = np.load(path, allow_pickle=False)
    truth = data["truth_labels"] if "truth_labels" in data.files else None
    if "images" in data.files:
        return data["images"], truth
    n = int(data["n_images"]) if "n_images" in data.files else 0
    return [data[f"image_{i:05d}"] for i in range(n)], truth
