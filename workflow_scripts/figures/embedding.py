"""Embedding figure: a 2-D map of cells (UMAP, t-SNE), one panel per colouring."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.lines import Line2D

from workflow_scripts.figures.style import (
    BASE,
    MISSING,
    SEQUENTIAL_CMAP,
    grid_shape,
    hide_unused,
    save,
    subplots,
)

__all__ = ["plot_embedding"]

# Categorical colourings with more categories than this get no legend (it would not fit).
_MAX_LEGEND_CATEGORIES = 20


def plot_embedding(
    coords: np.ndarray,
    colour_by: Mapping[str, Sequence],
    path: str | os.PathLike,
    *,
    title: str = "",
    axis_label: str = "UMAP",
) -> None:
    """Draw a 2-D embedding of cells, one panel per colouring.

    Categorical values (strings, booleans, pandas categoricals, integers with at most 20
    distinct values) get discrete colours and a legend; with more than 20 categories the
    colours are cycled, no legend is drawn and the panel title gives the count. Numeric
    values get the viridis colour map and a colourbar. Missing values are drawn in light
    grey underneath. Points are drawn in a fixed shuffled order so that no category hides
    the others just by coming last.

    Parameters
    ----------
    coords : numpy.ndarray, shape (N, 2), real dtype
        Embedding coordinates, finite.
    colour_by : mapping of str to sequence of length N
        Panel name -> value per cell, e.g. ``{"class": ..., "trajectory": ...}``. Empty:
        one panel with all cells in one colour.
    path : str or os.PathLike
        Output image file (PNG).
    title : str
        Figure title, e.g. the model and layer.
    axis_label : str
        Method name for the axis labels (``"UMAP"`` -> ``UMAP-1``, ``UMAP-2``).

    Raises
    ------
    TypeError
        If ``colour_by`` is not a mapping.
    ValueError
        If ``coords`` is not (N, 2) finite or a colouring's length is not N.
    """
    xy = _checked_coords(coords)
    n = xy.shape[0]
    panels = _panels(colour_by, n)
    # Fewer, larger points for small N; many small translucent ones for large N.
    size = float(np.clip(300.0 / math.sqrt(n), 0.3, 20.0))
    alpha = float(np.clip(1.2 - 0.2 * math.log10(n), 0.3, 0.9))
    order = np.random.default_rng(0).permutation(n)
    nrows, ncols = grid_shape(len(panels))
    fig, axes = subplots(nrows, ncols, figsize=(6.0 * ncols, 4.8 * nrows + 0.3))
    for ax, (key, series) in zip(axes.flat, panels):
        if series is None:
            ax.scatter(*xy[order].T, s=size, alpha=alpha, color=BASE, linewidths=0)
            ax.set_title(f"{key} (N = {n})")
        elif _is_categorical(series):
            _scatter_categorical(ax, xy, series, key, order, size, alpha)
        else:
            _scatter_continuous(fig, ax, xy, series, key, order, size, alpha)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{axis_label}-1")
        ax.set_ylabel(f"{axis_label}-2")
    hide_unused(axes, len(panels))
    fig.suptitle(title or f"{axis_label} embedding of {n} cells")
    save(fig, path)


def _checked_coords(coords) -> np.ndarray:
    """Check ``coords`` is an (N, 2) finite real array, N >= 1."""
    xy = np.asarray(coords)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
        raise ValueError(f"coords: got an array of shape {xy.shape}, expected (N, 2) with N >= 1")
    if not np.issubdtype(xy.dtype, np.number) or not np.isfinite(xy).all():
        raise ValueError("coords: expected finite real values (got NaN, inf or non-numbers)")
    return xy


def _panels(colour_by, n: int) -> list[tuple[str, pd.Series | None]]:
    """List (name, values) per panel; one plain ``cells`` panel when there is no colouring."""
    if not isinstance(colour_by, Mapping):
        raise TypeError(f"colour_by: got {type(colour_by).__name__}, expected a mapping name -> values")
    panels = []
    for key, values in colour_by.items():
        if isinstance(values, pd.Series):
            series = values
        elif isinstance(values, (np.ndarray, pd.Categorical, pd.Index)):
            series = pd.Series(values)
        else:
            series = pd.Series(list(values))
        if len(series) != n:
            raise ValueError(f"colour_by[{key!r}]: got {len(series)} values, expected {n} (one per row of coords)")
        panels.append((str(key), series.reset_index(drop=True).infer_objects()))
    return panels or [("cells", None)]


def _is_categorical(series: pd.Series) -> bool:
    """Tell whether ``series`` gets discrete colours (see :func:`plot_embedding`)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return True
    if pd.api.types.is_integer_dtype(dtype):
        return series.nunique(dropna=True) <= _MAX_LEGEND_CATEGORIES
    return not pd.api.types.is_numeric_dtype(dtype)


def _category_order(values: pd.Series) -> list:
    """Order the categories present in ``values``: a categorical's own order, else sorted."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        return [c for c in values.cat.categories if c in present]
    uniques = list(values.dropna().unique())
    try:
        return sorted(uniques)
    except TypeError:  # mixed types: order by their text
        return sorted(uniques, key=str)


def _scatter_categorical(ax, xy, series, key, order, size, alpha) -> None:
    """Colour by category, missing values grey underneath, with a legend."""
    categories = _category_order(series)
    missing = series.isna().to_numpy()
    n_cat = len(categories)
    cmap = colormaps["tab10" if n_cat <= 10 else "tab20"]
    index = {cat: i for i, cat in enumerate(categories)}
    codes = np.array([-1 if m else index[v] for v, m in zip(series, missing)])
    colours = np.array([cmap(i % cmap.N) for i in range(max(n_cat, 1))])
    if missing.any():
        ax.scatter(*xy[missing].T, s=size, alpha=alpha, color=MISSING, linewidths=0)
    shown = order[~missing[order]]
    ax.scatter(*xy[shown].T, s=size, alpha=alpha, c=colours[codes[shown]], linewidths=0)
    if n_cat > _MAX_LEGEND_CATEGORIES:
        ax.set_title(f"{key} ({n_cat} categories, colours repeat)")
        return
    ax.set_title(key)
    counts = np.bincount(codes[codes >= 0], minlength=n_cat)
    handles = [_dot(colours[i], f"{cat} ({counts[i]})") for i, cat in enumerate(categories)]
    if missing.any():
        handles.append(_dot(MISSING, f"missing ({int(missing.sum())})"))
    ax.legend(
        handles=handles,
        title=key,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        frameon=False,
        ncol=1 if len(handles) <= 12 else 2,
    )


def _dot(colour, label: str) -> Line2D:
    """Make a legend entry: one round marker."""
    return Line2D([], [], ls="none", marker="o", ms=6, color=colour, label=label)


def _scatter_continuous(fig, ax, xy, series, key, order, size, alpha) -> None:
    """Colour by value with a colourbar, missing values grey underneath."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    missing = ~np.isfinite(values)
    if missing.any():
        ax.scatter(
            *xy[missing].T,
            s=size,
            alpha=alpha,
            color=MISSING,
            linewidths=0,
            label=f"missing ({int(missing.sum())})",
        )
        ax.legend(loc="best", fontsize="small", markerscale=max(1.0, 6.0 / math.sqrt(size)))
    shown = order[~missing[order]]
    if shown.size:
        vmin, vmax = float(values[shown].min()), float(values[shown].max())
    else:
        vmin, vmax = 0.0, 1.0
    mappable = ax.scatter(
        *xy[shown].T,
        s=size,
        alpha=alpha,
        c=values[shown],
        cmap=SEQUENTIAL_CMAP,
        vmin=vmin,
        vmax=vmax if vmax > vmin else vmin + 1.0,
        linewidths=0,
    )
    colourbar = fig.colorbar(mappable, ax=ax, shrink=0.85)
    colourbar.set_label(key)
    colourbar.solids.set_alpha(1.0)
    ax.set_title(key)
