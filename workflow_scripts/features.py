"""Per-layer features of a trained model: named activations, globally pooled, batched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def pool(maps: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(N, C, H, W) -> (N, C) by global mean or max pooling; (N, D) passes through."""
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
    """Pooled activations for every item of ``source``, in order, in one pass of the model.

    ``layers`` is a list of (layer name, pooling) pairs, e.g. ``[("conv3", "mean"),
    ("conv3", "max"), ("mu", "mean")]``; vector layers ignore the pooling. Returns a dict
    (layer, pooling) -> float32 array (N, D).
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
    """``Metadata_*`` columns first, then features named ``<prefix>_<i>``."""
    if len(metadata) != len(values):
        raise ValueError(f"metadata has {len(metadata)} rows but values has {len(values)}")
    meta = metadata[[c for c in metadata.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    feats = pd.DataFrame(values, columns=[f"{prefix}_{i}" for i in range(values.shape[1])])
    return pd.concat([meta, feats], axis=1)
