"""Training figures: the learning curve and cells beside their reconstructions."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workflow_scripts.figures.channels import (
    as_image_batch,
    channel_colours,
    composite_rgb,
    contrast_limits,
    resolve_names,
    resolve_roles,
)
from workflow_scripts.figures.style import (
    ALERT,
    BASE,
    GREY,
    HIGHLIGHT,
    grid_shape,
    hide_unused,
    image_axes,
    legend_patches,
    save,
    subplots,
)

__all__ = ["plot_learning_curve", "plot_reconstruction_grid"]

# Colour and legend text of each split's curve.
_SPLITS = {"train": (BASE, "training"), "val": (HIGHLIGHT, "validation")}


def plot_learning_curve(history: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> None:
    """Draw training and validation losses per epoch.

    One subplot per loss term (``loss`` first), with the training and validation curves.
    The epoch with the lowest validation ``loss`` is marked on every subplot. A term's
    y-axis is logarithmic when all its values are positive and span more than a decade.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per epoch: an ``epoch`` column and numeric columns ``train_<term>`` and/or
        ``val_<term>`` (e.g. ``train_loss``, ``val_loss``, ``train_kl``). Other columns are
        ignored; missing values (e.g. epochs without validation) are skipped.
    path : str or os.PathLike
        Output image file (PNG).
    title : str
        Figure title, e.g. the model's name.

    Raises
    ------
    TypeError
        If ``history`` is not a DataFrame.
    ValueError
        If ``history`` has no ``epoch`` column, no loss columns, or non-numeric losses.
    """
    terms = _loss_terms(history)
    epoch = _numeric(history, "epoch")
    best = _best_epoch(history, epoch)
    nrows, ncols = grid_shape(len(terms))
    fig, axes = subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.4))
    for ax, term in zip(axes.flat, terms):
        _draw_term(ax, history, epoch, term, best)
    hide_unused(axes, len(terms))
    fig.suptitle(title or "Learning curve")
    save(fig, path)


def _loss_terms(history) -> list[str]:
    """Check the table and list its loss terms (``loss`` first)."""
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history: got {type(history).__name__}, expected a pandas DataFrame")
    if "epoch" not in history.columns:
        raise ValueError(f"history: got columns {list(history.columns)}, expected an 'epoch' column")
    if len(history) == 0:
        raise ValueError("history: got an empty table, expected at least one epoch")
    terms: list[str] = []
    for col in history.columns:
        match = re.fullmatch(r"(?:train|val)_(.+)", str(col))
        if match and match.group(1) not in terms:
            terms.append(match.group(1))
    if not terms:
        raise ValueError(
            f"history: got columns {list(history.columns)}, expected loss columns named 'train_<term>' or 'val_<term>'"
        )
    if "loss" in terms:
        terms.remove("loss")
        terms.insert(0, "loss")
    return terms


def _numeric(history: pd.DataFrame, col: str) -> pd.Series:
    """Read column ``col`` as numbers; ValueError naming it otherwise."""
    try:
        return pd.to_numeric(history[col])
    except (TypeError, ValueError):
        raise ValueError(f"history: column {col!r} has dtype {history[col].dtype}, expected numbers") from None


def _best_epoch(history: pd.DataFrame, epoch: pd.Series) -> tuple | None:
    """Find (epoch, value) of the lowest validation loss; None without one."""
    if "val_loss" not in history.columns:
        return None
    val_loss = _numeric(history, "val_loss").to_numpy(dtype=float)
    if not np.isfinite(val_loss).any():
        return None
    best = int(np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.nan)))
    return epoch.iloc[best], float(val_loss[best])


def _draw_term(ax, history: pd.DataFrame, epoch: pd.Series, term: str, best: tuple | None) -> None:
    """Draw one loss term: its training and validation curves and the best epoch."""
    values = []
    for split, (colour, label) in _SPLITS.items():
        col = f"{split}_{term}"
        if col not in history.columns:
            continue
        y = _numeric(history, col)
        ok = y.notna() & epoch.notna()
        if not ok.any():
            continue
        values.append(y[ok].to_numpy(dtype=float))
        # Markers only while they stay readable.
        marker = "o" if ok.sum() <= 30 else None
        ax.plot(epoch[ok], y[ok], color=colour, marker=marker, ms=3, label=label)
    if best is not None:
        _mark_best(ax, *best, with_value=term == "loss")
    finite = np.concatenate(values) if values else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_yscale("log")
    ax.set_title(term)
    ax.set_xlabel("epoch")
    ax.set_ylabel(term + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _mark_best(ax, best_epoch, best_value: float, *, with_value: bool) -> None:
    """Mark the best epoch with a dashed line; on the loss itself with a star at its value too."""
    ax.axvline(best_epoch, color=GREY, ls="--", lw=1, label=f"best validation loss (epoch {best_epoch:g})")
    if with_value:
        ax.plot([best_epoch], [best_value], marker="*", ms=12, color=ALERT, ls="none", label=f"min. {best_value:.4g}")


def plot_reconstruction_grid(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | os.PathLike,
    *,
    channel_names: Sequence[str] | None = None,
    title: str = "",
    channel_roles: Sequence[str] | None = None,
) -> None:
    """Draw cells next to their reconstructions, one column per cell.

    Rows: original composite, reconstruction composite, then for each channel the original
    and the reconstruction in greyscale. Reconstructions use the originals' contrast
    (percentiles of the originals), so a washed-out or too-bright reconstruction shows as
    such. Each column's title gives that cell's mean squared error.

    Parameters
    ----------
    originals : numpy.ndarray, shape (N, C, H, W), real dtype
        Input images.
    reconstructions : numpy.ndarray, shape (N, C, H, W), real dtype
        Model outputs for the same images, same shape.
    path : str or os.PathLike
        Output image file (PNG).
    channel_names : sequence of str, optional
        One display name per channel, used in the row labels.
    title : str
        Figure title, e.g. the model and epoch.
    channel_roles : sequence of str, optional
        One role per channel (nucleus, structure, protein, other), which sets its colour in
        the composites; default :func:`~workflow_scripts.figures.channels.default_roles`.

    Raises
    ------
    ValueError
        If either array is not 4-D or their shapes differ.
    """
    orig, recon = _checked_pair(originals, reconstructions)
    n, n_channels = orig.shape[:2]
    names = resolve_names(channel_names, n_channels)
    roles = resolve_roles(channel_roles, n_channels)
    limits = contrast_limits(orig)
    mse = np.nanmean((orig.astype(np.float64) - recon.astype(np.float64)) ** 2, axis=(1, 2, 3))
    row_labels = _row_labels(names)
    nrows = len(row_labels)
    # Keep panels between ~1 and ~1.6 inches: readable, yet the figure stays report-sized.
    size = float(np.clip(14.0 / max(n, nrows), 1.0, 1.6))
    fig, axes = subplots(nrows, n, figsize=(size * n + 1.2, size * nrows + 0.8))
    _draw_composites(axes, orig, recon, limits, roles, mse)
    _draw_channels(axes, orig, recon, limits)
    for ax in axes.flat:
        image_axes(ax)
    for i, label in enumerate(row_labels):
        axes[i, 0].set_ylabel(label, fontsize="small", rotation=0, ha="right", va="center")
    fig.legend(
        handles=legend_patches(names, channel_colours(n_channels, roles)),
        loc="outside lower center",
        ncol=min(n_channels, 6),
        frameon=False,
        title="composite colours",
    )
    fig.suptitle(title or "Reconstructions (same contrast as originals)")
    save(fig, path)


def _checked_pair(originals, reconstructions) -> tuple[np.ndarray, np.ndarray]:
    """Check both batches are (N, C, H, W) of one shape; return them as arrays."""
    orig = np.asarray(originals)
    recon = np.asarray(reconstructions)
    if orig.ndim != 4:
        raise ValueError(f"originals: got an array of shape {orig.shape}, expected (N, C, H, W)")
    if recon.shape != orig.shape:
        raise ValueError(f"reconstructions: got shape {recon.shape}, expected {orig.shape} (the shape of originals)")
    as_image_batch(orig, "originals")
    as_image_batch(recon, "reconstructions")
    return orig, recon


def _row_labels(names: list[str]) -> list[str]:
    """Label two composite rows, then an original and a reconstruction row per channel."""
    labels = ["original", "reconstruction"]
    for name in names:
        labels += [f"{name}\noriginal", f"{name}\nreconstruction"]
    return labels


def _draw_composites(axes, orig, recon, limits, roles, mse) -> None:
    """Draw the top two rows: each cell's composites, its MSE in the column title."""
    rgb_orig = composite_rgb(orig, limits=limits, roles=roles)
    rgb_recon = composite_rgb(recon, limits=limits, roles=roles)
    for j in range(orig.shape[0]):
        axes[0, j].imshow(rgb_orig[j])
        axes[1, j].imshow(rgb_recon[j])
        axes[0, j].set_title(f"cell {j}\nMSE {mse[j]:.3g}", fontsize="small")


def _draw_channels(axes, orig, recon, limits) -> None:
    """Draw the rows below: every channel in greyscale, original above reconstruction."""
    for j in range(orig.shape[0]):
        for c in range(orig.shape[1]):
            lo, hi = limits[c]
            if hi <= lo:
                hi = lo + 1.0
            for k, source in enumerate((orig, recon)):
                axes[2 + 2 * c + k, j].imshow(source[j, c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
