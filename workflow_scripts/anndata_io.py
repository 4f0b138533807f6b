"""AnnData ``.h5ad`` export of feature and profile tables, for scanpy users.

Written with h5py following the AnnData on-disk format (anndata.readthedocs.io, "On-disk
format": anndata 0.1.0, dataframe 0.2.0, array / string-array / categorical 0.2.0, dict 0.1.0)
rather than with the ``anndata`` package itself: every anndata release to date requires
pandas < 3, and this workflow runs on pandas 3, so depending on it would pin the whole
environment back. The files are read back by ``anndata.read_h5ad`` in the tests.

Layout: ``X`` = the feature columns (float32, cells or groups x features); ``obs`` = the
``Metadata_*`` columns, indexed by ``Metadata_cell`` (per-cell tables) or by the profile's
group column; ``var`` = the feature names.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from workflow_scripts.io import feature_columns, metadata_columns

__all__ = ["write_h5ad", "table_to_h5ad"]

_STR = h5py.string_dtype("utf-8")


def _attrs(node, kind: str, version: str) -> None:
    node.attrs["encoding-type"] = kind
    node.attrs["encoding-version"] = version


def _strings(group, name: str, values) -> None:
    ds = group.create_dataset(name, data=np.array([str(v) for v in values], dtype=object), dtype=_STR)
    _attrs(ds, "string-array", "0.2.0")


def _column(group, name: str, series: pd.Series) -> None:
    if isinstance(series.dtype, pd.CategoricalDtype):
        sub = group.create_group(name)
        _attrs(sub, "categorical", "0.2.0")
        sub.attrs["ordered"] = bool(series.cat.ordered)
        _strings(sub, "categories", series.cat.categories)
        ds = sub.create_dataset("codes", data=series.cat.codes.to_numpy(np.int32))
        _attrs(ds, "array", "0.2.0")
    elif pd.api.types.is_bool_dtype(series.dtype) and not series.isna().any():
        _attrs(group.create_dataset(name, data=series.to_numpy(bool)), "array", "0.2.0")
    elif pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy()
        if series.isna().any() or not np.issubdtype(values.dtype, np.number):
            values = series.to_numpy(np.float64, na_value=np.nan)
        _attrs(group.create_dataset(name, data=values), "array", "0.2.0")
    else:
        # Text (and anything else): one categorical per column, as scanpy would store it;
        # missing values become code -1.
        _column(group, name, series.astype("string").astype("category"))


def _dataframe(parent, name: str, frame: pd.DataFrame, index: pd.Index) -> None:
    group = parent.create_group(name)
    _attrs(group, "dataframe", "0.2.0")
    group.attrs["_index"] = "_index"
    group.attrs["column-order"] = np.array([str(c) for c in frame.columns], dtype=object) if len(frame.columns) else []
    _strings(group, "_index", index)
    for column in frame.columns:
        _column(group, str(column), frame[column])


def write_h5ad(path: str | os.PathLike, X: np.ndarray, obs: pd.DataFrame, var_names) -> None:
    """Write ``X`` with its observations and variable names to ``path`` as ``.h5ad``.

    Written atomically: a temporary file renamed into place.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5ad`` file; its folder is created if needed.
    X : array_like of shape (n_obs, n_vars)
        The data matrix.
    obs : pandas.DataFrame
        One row per observation; its index holds the (unique) observation names.
    var_names : sequence of str
        The n_vars variable names.

    Raises
    ------
    ValueError
        If ``X`` does not have shape (len(obs), len(var_names)) or an observation name repeats.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape != (len(obs), len(var_names)):
        raise ValueError(
            f"{path}: X has shape {X.shape}; expected ({len(obs)} observations, {len(var_names)} variables)"
        )
    if obs.index.has_duplicates:
        dup = obs.index[obs.index.duplicated()][0]
        raise ValueError(f"{path}: observation names must be unique; {dup!r} occurs more than once")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            _attrs(f, "anndata", "0.1.0")
            _attrs(f.create_dataset("X", data=X), "array", "0.2.0")
            _dataframe(f, "obs", obs.reset_index(drop=True), obs.index)
            _dataframe(f, "var", pd.DataFrame(index=pd.Index(var_names)), pd.Index(var_names))
            for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
                _attrs(f.create_group(name), "dict", "0.1.0")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def table_to_h5ad(table: pd.DataFrame, path: str | os.PathLike, index: str) -> None:
    """Write a feature or profile table (``Metadata_*`` columns, then features) as ``.h5ad``.

    ``obs`` = the metadata indexed by column ``index``, ``X`` = the features as float32.

    Parameters
    ----------
    table : pandas.DataFrame
        ``Metadata_*`` columns and feature columns.
    path : str or os.PathLike
        The ``.h5ad`` file.
    index : str
        The metadata column whose values name the observations (``Metadata_cell`` or a
        profile's group column); they must be unique.

    Raises
    ------
    ValueError
        If ``index`` is not a column of ``table``, or as :func:`write_h5ad`.
    """
    if index not in table.columns:
        raise ValueError(f"{path}: index column {index!r} is not in the table; it has {list(table.columns)}")
    features = feature_columns(table)
    meta = [c for c in metadata_columns(table) if c != index]
    obs = table[meta].copy()
    obs.index = pd.Index(table[index].astype(str).to_numpy(), name=index)
    write_h5ad(path, table[features].to_numpy(np.float32), obs, features)
