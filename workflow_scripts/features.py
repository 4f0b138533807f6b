"""Per-layer features of a trained model: named activations, globally pooled, batched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workflow_scripts.io import metadata_columns


def pool(maps: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Pool feature maps globally: (N, C, H, W) -> (N, C) by mean or max; (N, D) passes through.

    Parameters
    ----------
    maps : torch.Tensor
        Feature maps (N, C, H, W) or vectors (N, D).
    how : {"mean", "max"}
        Global pooling of each map.

    Returns
    -------
    torch.Tensor
        (N, C) pooled maps, or ``maps`` itself when it is (N, D).

    Raises
    ------
    ValueError
        On another number of dimensions or an unknown ``how``.

    Examples
    --------
    >>> pool(torch.arange(8.0).view(1, 2, 2, 2), "max")
    tensor([[3., 7.]])
    """
    if maps.ndim == 2:
        return maps
    if maps.ndim != 4:
        raise ValueError(f"maps must be (N, D) or (N, C, H, W), got shape {tuple(maps.shape)}")
    if how == "mean":
        return maps.mean(dim=(2, 3))
    if how == "max":
        return maps.amax(dim=(2, 3))
    raise ValueError(f"pooling must be 'mean' or 'max', got {how!r}")


@torch.no_grad()
def extract_features(model, source, layers, *, batch_size=256, device=None):
    """Compute pooled activations for every item of ``source``, in order, in one pass of the model.

    Parameters
    ----------
    model : CellModel
        A trained model; put in eval mode on ``device``.
    source : BatchSource
        The items: ``len(source)`` and ``source.batch(index)`` -> (n, C, H, W) float32.
    layers : list of (str, str)
        (layer name, pooling) pairs, e.g. ``[("conv3", "mean"), ("conv3", "max"), ("mu",
        "mean")]``; vector layers ignore the pooling.
    batch_size : int, default=256
        Items per forward pass.
    device : torch.device, optional
        Where the model runs; the CPU by default.

    Returns
    -------
    dict of (str, str) to ndarray
        (layer, pooling) -> float32 array (N, D).

    Raises
    ------
    ValueError
        If a layer is not one of the model's ``layer_names``.
    """
    device = device or torch.device("cpu")
    layers = [tuple(pair) for pair in layers]
    missing = sorted({name for name, _ in layers} - set(model.layer_names))
    if missing:
        raise ValueError(f"layers {missing} not in the model's layers {model.layer_names}")
    model.to(device).eval()
    parts = {pair: [] for pair in layers}
    for start in range(0, len(source), batch_size):
        index = np.arange(start, min(start + batch_size, len(source)))
        x = torch.from_numpy(source.batch(index)).to(device)
        maps = model.feature_maps(x)
        for name, how in layers:
            parts[(name, how)].append(pool(maps[name].float(), how).cpu().numpy())
    return {pair: np.concatenate(chunks).astype(np.float32) for pair, chunks in parts.items()}


def feature_table(metadata: pd.DataFrame, values: np.ndarray, prefix: str) -> pd.DataFrame:
    """Build a feature table: ``Metadata_*`` columns first, then features named ``<prefix>_<i>``.

    Parameters
    ----------
    metadata : pandas.DataFrame
        One row per cell; only its ``Metadata_*`` columns are kept.
    values : ndarray of shape (N, D)
        The features, one row per row of ``metadata``.
    prefix : str
        Name of the layer, the stem of the feature names.

    Returns
    -------
    pandas.DataFrame
        N rows (index 0..N-1): the metadata, then ``<prefix>_0`` .. ``<prefix>_<D-1>``.

    Raises
    ------
    ValueError
        If ``metadata`` and ``values`` differ in length.

    Examples
    --------
    >>> cells = pd.DataFrame({"Metadata_cell": ["a", "b"], "area": [3, 4]})
    >>> list(feature_table(cells, np.zeros((2, 2)), "mu").columns)
    ['Metadata_cell', 'mu_0', 'mu_1']
    """
    feats = pd.DataFrame(values, columns=[f"{prefix}_{i}" for i in range(values.shape[1])])
    return metadata_first(metadata, feats)


def metadata_first(metadata: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Join the ``Metadata_*`` columns of ``metadata`` and the columns of ``features``, side by side.

    Parameters
    ----------
    metadata : pandas.DataFrame
        One row per cell; only its ``Metadata_*`` columns are kept, its index is dropped.
    features : pandas.DataFrame
        The feature columns, one row per row of ``metadata``, index 0..N-1.

    Returns
    -------
    pandas.DataFrame
        The metadata columns, then the feature columns.

    Raises
    ------
    ValueError
        If ``metadata`` and ``features`` differ in length.
    """
    if len(metadata) != len(features):
        raise ValueError(f"metadata has {len(metadata)} rows but values has {len(features)}")
    meta = metadata[metadata_columns(metadata)].reset_index(drop=True)
    return pd.concat([meta, features], axis=1)
