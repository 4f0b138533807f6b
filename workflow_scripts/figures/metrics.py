"""Metric figures: a ranking bar chart, small multiples of every metric, confusion matrices."""

from __future__ import annotations

import os
from collections.abc import Collection

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from workflow_scripts.figures.style import (
    BASE,
    BASELINE,
    GREY,
    HIGHLIGHT,
    SHARE_CMAP,
    grid_shape,
    hide_unused,
    save,
    subplots,
)

__all__ = ["plot_confusion_matrices", "plot_metric_bars", "plot_metric_grid"]


def plot_metric_bars(
    summary: pd.DataFrame,
    metric: str,
    path: str | os.PathLike,
    *,
    title: str = "",
    higher_is_better: bool = True,
) -> None:
    """Draw a metric for every model/layer as horizontal bars, best at the top.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per model and layer, with columns ``model``, ``layer`` and ``metric``.
        Rows whose metric is missing are left out (their number is given in the title).
    metric : str
        Name of the numeric column to draw.
    path : str or os.PathLike
        Output image file (PNG).
    title : str
        Figure title (default: the metric's name).
    higher_is_better : bool
        Direction of the metric: which bar is "best" and how bars are sorted.

    Raises
    ------
    TypeError
        If ``summary`` is not a DataFrame.
    ValueError
        If a column is missing, the metric is not numeric or has no value, or a model/layer
        pair appears more than once.
    """
    _check_summary(summary, metric)
    table, n_missing = _finite_rows(summary, metric)
    # Worst first: barh draws the first row at the bottom, so the best ends up on top.
    table = table.sort_values(metric, ascending=higher_is_better, kind="stable")
    labels = [f"{m}/{layer}" for m, layer in zip(table["model"], table["layer"])]
    values = table[metric].to_numpy()
    fig, axes = subplots(figsize=(7.5, 0.32 * len(values) + 1.4))
    ax = axes[0, 0]
    _draw_ranked_bars(ax, values, labels)
    direction = "higher is better" if higher_is_better else "lower is better"
    ax.set_xlabel(f"{metric} ({direction})")
    ax.set_ylabel("model/layer")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=HIGHLIGHT, label=f"best: {labels[-1]}")], loc="lower right", fontsize="small")
    heading = title or metric
    if n_missing:
        heading += f"\n({n_missing} model/layer without a value not shown)"
    ax.set_title(heading)
    save(fig, path)


def _check_summary(summary, metric: str) -> None:
    """Check for a DataFrame with ``model``, ``layer`` and a numeric ``metric``, one row per pair."""
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(f"summary: got {type(summary).__name__}, expected a pandas DataFrame")
    missing_cols = [c for c in ("model", "layer", metric) if c not in summary.columns]
    if missing_cols:
        raise ValueError(
            f"summary: missing columns {missing_cols} (has {list(summary.columns)}), expected "
            f"'model', 'layer' and the metric {metric!r}"
        )
    if not pd.api.types.is_numeric_dtype(summary[metric]) or pd.api.types.is_bool_dtype(summary[metric]):
        raise ValueError(f"metric: column {metric!r} has dtype {summary[metric].dtype}, expected numbers")
    dupes = summary.duplicated(["model", "layer"])
    if dupes.any():
        first = summary.loc[dupes, ["model", "layer"]].iloc[0].tolist()
        raise ValueError(
            f"summary: model/layer {first[0]}/{first[1]} appears more than once, expected one row per model and layer"
        )


def _finite_rows(summary: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, int]:
    """Keep the rows with a finite ``metric`` (as float); count those left out."""
    table = summary[["model", "layer", metric]].copy()
    table[metric] = table[metric].astype(float)
    finite = np.isfinite(table[metric])
    n_missing = int((~finite).sum())
    table = table[finite]
    if table.empty:
        raise ValueError(f"summary: column {metric!r} has no finite value, expected at least one")
    return table, n_missing


def _draw_ranked_bars(ax, values: np.ndarray, labels: list[str]) -> None:
    """Draw bars bottom to top, the last (the best) highlighted, each with its value."""
    best = len(values) - 1
    colours = [BASE] * len(values)
    colours[best] = HIGHLIGHT
    ax.barh(np.arange(len(values)), values, color=colours, height=0.7)
    ax.set_yticks(np.arange(len(values)), labels)
    ax.set_ylim(-0.6, len(values) - 0.4)
    span = max(float(np.abs(values).max()), 1e-12)
    for i, v in enumerate(values):
        ax.text(
            v + 0.01 * span * (1 if v >= 0 else -1),
            i,
            f"{v:.3g}",
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize="small",
            fontweight="bold" if i == best else "normal",
        )
    lo, hi = min(0.0, float(values.min())), max(0.0, float(values.max()))
    # Room for the value labels beyond the bar ends.
    ax.set_xlim(lo - (0.15 * span if lo < 0 else 0), hi + (0.15 * span if hi > 0 else 0))
    ax.axvline(0, color=GREY, lw=0.8)


def plot_metric_grid(
    summary: pd.DataFrame,
    columns: list[str],
    path: str | os.PathLike,
    *,
    lower_is_better: Collection[str] = (),
    title: str = "",
) -> None:
    """Draw small multiples: one horizontal bar chart per metric column.

    Every model/layer is a bar (baselines in grey), best at the top; metrics without any
    value are left out.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per model and layer: ``model``, ``layer``, the metric columns and
        optionally ``kind`` (``"baseline"`` for baselines).
    columns : list of str
        Metric columns, one panel each.
    path : str or os.PathLike
        Output image file (PNG).
    lower_is_better : collection of str
        Metrics whose lowest value is best.
    title : str
        Figure title.

    Raises
    ------
    ValueError
        If no metric column has a value.
    """
    columns = [c for c in columns if summary[c].astype(float).notna().any()]
    if not columns:
        raise ValueError("plot_metric_grid: no metric column has a value")
    nrows, ncols = grid_shape(len(columns))
    height = max(2.5, 0.22 * len(summary) + 1.0)
    fig, axes = subplots(nrows, ncols, figsize=(5.2 * ncols, height * nrows))
    names = (summary["model"].astype(str) + "/" + summary["layer"].astype(str)).to_numpy()
    baseline = summary.get("kind", pd.Series([""] * len(summary))).astype(str).eq("baseline").to_numpy()
    for ax, column in zip(axes.flat, columns):
        lower = column in lower_is_better
        _draw_metric_panel(ax, summary[column].astype(float).to_numpy(), names, baseline, lower)
        ax.set_title(column + (" (lower is better)" if lower else ""), fontsize=9)
    hide_unused(axes, len(columns))
    if title:
        fig.suptitle(title + "  (grey: baselines)", fontsize=11)
    save(fig, path)


def _draw_metric_panel(ax, values: np.ndarray, names: np.ndarray, baseline: np.ndarray, lower: bool) -> None:
    """Draw one metric's bars, best at the top, baselines grey; missing values left out."""
    ok = np.isfinite(values)
    order = np.argsort(values[ok] if lower else -values[ok])
    vals = values[ok][order]
    labels = names[ok][order]
    colours = np.where(baseline[ok][order], BASELINE, BASE)
    ax.barh(np.arange(len(vals))[::-1], vals, color=colours)
    ax.set_yticks(np.arange(len(vals))[::-1], labels, fontsize=7)
    ax.tick_params(axis="x", labelsize=7)


def plot_confusion_matrices(panels: list[tuple[str, list[str], np.ndarray]], path: str | os.PathLike) -> None:
    """Draw row-normalised confusion matrices side by side, the share written in each cell.

    Parameters
    ----------
    panels : list of (str, list of str, numpy.ndarray)
        ``(title, classes, counts)`` per panel; ``counts`` is (K, K) with rows the true
        class and columns the predicted one.
    path : str or os.PathLike
        Output image file (PNG).

    Raises
    ------
    ValueError
        If ``panels`` is empty.
    """
    if not panels:
        raise ValueError("plot_confusion_matrices: no panel to draw")
    size = max(3.5, 0.55 * max(len(c) for _, c, _ in panels) + 1.5)
    fig, axes = subplots(1, len(panels), figsize=(size * len(panels), size))
    for ax, (title, classes, counts) in zip(axes[0], panels):
        _draw_confusion(ax, title, classes, counts)
    save(fig, path)


def _draw_confusion(ax, title: str, classes: list[str], counts) -> None:
    """Draw one matrix: each true class's share of predictions, the value written in each cell."""
    counts = np.asarray(counts, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, vmin=0, vmax=1, cmap=SHARE_CMAP)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=9)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
