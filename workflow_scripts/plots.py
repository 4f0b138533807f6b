"""Figures for the Snakemake report: segmentation overlays, learning curves,
reconstructions, 2-D embeddings and metric summaries.

Every ``plot_*`` function takes arrays or tables, draws one figure and writes it with
:func:`workflow_scripts.io.save_figure` (atomic write, figure closed afterwards). Nothing is
shown on screen: the workflow runs headless, so the Agg backend is selected at import.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy import ndimage
from skimage.segmentation import find_boundaries

from workflow_scripts.io import save_figure

# Headless: cluster nodes and CI have no display, and the report only needs files.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: pyplot fixes the backend on import

# Resolution save_figure writes at by default; used to size outlines so they survive downsampling.
_DPI = 110

# Additive display colours per channel. The first three follow the Human Protein Atlas
# composites (blue nucleus, red structure, green protein); two channels use magenta/green,
# which stays distinguishable for red-green colour-blind readers.
_RGB_THREE = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
_RGB_TWO = ((1.0, 0.0, 1.0), (0.0, 1.0, 0.0))
_RGB_EXTRA = (
    (0.0, 1.0, 1.0),  # cyan
    (1.0, 1.0, 0.0),  # yellow
    (1.0, 0.0, 1.0),  # magenta
    (1.0, 0.5, 0.0),  # orange
    (0.5, 0.0, 1.0),  # violet
    (0.6, 1.0, 0.3),  # lime
    (1.0, 1.0, 1.0),  # white
)

# Outline colour on composites and on the nuclear channel: none of the channel colours above.
_OUTLINE_RGB = (1.0, 0.85, 0.0)

# Categorical colourings with more categories than this get no legend (it would not fit).
_MAX_LEGEND_CATEGORIES = 20

_HIGHLIGHT = "tab:orange"
_BASE = "tab:blue"


# --------------------------------------------------------------------------------------
# Composites
# --------------------------------------------------------------------------------------


def channel_colours(n_channels: int) -> np.ndarray:
    """Display colour of every channel in :func:`composite_rgb`.

    Parameters
    ----------
    n_channels : int
        Number of channels, ``>= 1``.

    Returns
    -------
    numpy.ndarray, shape (n_channels, 3), float64
        RGB in ``[0, 1]``: one channel grey (white); two magenta, green; three or more
        blue (channel 0, nucleus), red (1, structure), green (2, protein), then cyan, yellow,
        magenta, orange, violet, lime, white, cycled.
    """
    if not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
        raise ValueError(f"n_channels: got {n_channels!r}, expected an integer >= 1")
    if n_channels == 1:
        return np.ones((1, 3))
    if n_channels == 2:
        return np.array(_RGB_TWO)
    extra = [_RGB_EXTRA[i % len(_RGB_EXTRA)] for i in range(n_channels - 3)]
    return np.array(list(_RGB_THREE) + extra)


def contrast_limits(images: np.ndarray, *, percentiles: tuple[float, float] = (1.0, 99.5)) -> np.ndarray:
    """Per-channel display range from percentiles over a whole batch.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, C, H, W) or (C, H, W), real dtype
        Images; NaN values are ignored.
    percentiles : (float, float)
        Lower and upper percentile, ``0 <= low < high <= 100``.

    Returns
    -------
    numpy.ndarray, shape (C, 2), float64
        ``[low, high]`` per channel. Where the percentiles coincide (sparse signal: fewer
        bright pixels than ``100 - high`` percent) the channel's minimum and maximum are used
        instead; a channel that is constant everywhere keeps ``low == high`` and is displayed
        black by :func:`composite_rgb`.
    """
    batch = _as_image_batch(images, "images")
    low, high = _check_percentiles(percentiles)
    per_channel = np.moveaxis(batch, 1, 0).reshape(batch.shape[1], -1)
    finite = np.isfinite(per_channel)
    limits = np.zeros((batch.shape[1], 2))
    for c, (values, ok) in enumerate(zip(per_channel, finite)):
        values = values if ok.all() else values[ok]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [low, high])
        if hi <= lo:
            lo, hi = float(values.min()), float(values.max())
        limits[c] = lo, hi
    return limits


def composite_rgb(
    images: np.ndarray,
    *,
    percentiles: tuple[float, float] = (1.0, 99.5),
    limits: np.ndarray | None = None,
) -> np.ndarray:
    """Blend the channels of fluorescence images into RGB for display.

    Each channel is contrast-stretched to ``[0, 1]`` between its low and high percentile,
    computed over the whole batch so that crops stay comparable, then drawn in its colour
    (:func:`channel_colours`); colours add up and the sum is clipped to ``[0, 1]``.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, C, H, W) or (C, H, W), real dtype
        Images. NaN values are shown black.
    percentiles : (float, float)
        Lower and upper percentile for the stretch, ``0 <= low < high <= 100``.
    limits : numpy.ndarray, shape (C, 2), optional
        Display range ``[low, high]`` per channel, e.g. from :func:`contrast_limits` on
        other images (to show reconstructions with the originals' contrast). Overrides
        ``percentiles``.

    Returns
    -------
    numpy.ndarray, shape (N, H, W, 3) or (H, W, 3), float32
        RGB values in ``[0, 1]``, batched like ``images``.

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D real, ``percentiles`` is out of range, or
        ``limits`` has the wrong shape.
    """
    arr = np.asarray(images)
    batch = _as_image_batch(arr, "images")
    n_channels = batch.shape[1]
    if limits is None:
        limits = contrast_limits(batch, percentiles=percentiles)
    else:
        limits = np.asarray(limits, dtype=np.float64)
        if limits.shape != (n_channels, 2) or not np.isfinite(limits).all():
            raise ValueError(
                f"limits: got shape {limits.shape}, expected finite values of shape "
                f"({n_channels}, 2) (one [low, high] per channel)"
            )
    colours = channel_colours(n_channels).astype(np.float32)
    rgb = np.zeros(batch.shape[:1] + batch.shape[2:] + (3,), dtype=np.float32)
    for c in range(n_channels):
        stretched = _stretch(batch[:, c], *limits[c])
        rgb += stretched[..., None] * colours[c]
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb[0] if arr.ndim == 3 else rgb


def _stretch(channel: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` to ``[0, 1]`` (clipped, NaN -> 0) as float32."""
    if high <= low:
        # Constant channel: no contrast to show.
        return np.zeros(channel.shape, dtype=np.float32)
    out = (channel.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


def _as_image_batch(images: np.ndarray, name: str) -> np.ndarray:
    """Validate (N, C, H, W) or (C, H, W) real images and return them as (N, C, H, W)."""
    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{name}: got an array of shape {arr.shape}, expected (C, H, W) or (N, C, H, W)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name}: got dtype {arr.dtype}, expected a real numeric dtype")
    if 0 in arr.shape:
        raise ValueError(f"{name}: got shape {arr.shape}, expected no empty dimension")
    return arr[None] if arr.ndim == 3 else arr


def _check_percentiles(percentiles) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles: got {percentiles!r}, expected two numbers (low, high)") from None
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles: got {percentiles!r}, expected 0 <= low < high <= 100")
    return low, high


def _channel_names(channel_names, n_channels: int) -> list[str]:
    if channel_names is None:
        return [f"channel {c}" for c in range(n_channels)]
    names = [str(n) for n in channel_names]
    if len(names) != n_channels:
        raise ValueError(f"channel_names: got {len(names)} names {names}, expected {n_channels} (one per channel)")
    return names


def _channel_legend_handles(names: Sequence[str]) -> list[Patch]:
    colours = channel_colours(len(names))
    return [Patch(facecolor=colour, edgecolor="0.3", label=name) for name, colour in zip(names, colours)]


def _image_axes(ax) -> None:
    """No ticks, but keep the axes so row labels (ylabel) still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------


def plot_segmentation_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    channel_names: Sequence[str] | None = None,
    nucleus_channel: int = 0,
) -> None:
    """Draw one field of view with the outlines of its segmented objects.

    Left: the channel composite (:func:`composite_rgb`) with outlines; right: the nuclear
    channel alone in greyscale with the same outlines. The object count is in the title.

    Parameters
    ----------
    image : numpy.ndarray, shape (C, H, W) or (H, W), real dtype
        The field of view; a 2-D array is one channel.
    labels : numpy.ndarray, shape (H, W), integer dtype
        Label image: 0 is background, every other value one object.
    path : str or os.PathLike
        Output image file (PNG).
    title : str
        Figure title, e.g. the field's name.
    channel_names : sequence of str, optional
        One display name per channel, for the colour legend.
    nucleus_channel : int
        Index of the channel segmentation ran on.

    Raises
    ------
    ValueError
        If the shapes or dtypes disagree with the above.
    """
    plot_segmentation_overlays(
        [image],
        [labels],
        [title],
        path,
        channel_names=channel_names,
        nucleus_channel=nucleus_channel,
    )


def plot_segmentation_overlays(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    channel_names: Sequence[str] | None = None,
    nucleus_channel: int = 0,
    title: str = "",
) -> None:
    """Draw several fields of view with segmentation outlines, one row per field.

    Each row holds the two panels of :func:`plot_segmentation_overlay`. Contrast is
    stretched per field, since fields may differ in size and exposure.

    Parameters
    ----------
    images : sequence of numpy.ndarray, each shape (C, H, W) or (H, W)
        Fields of view, all with the same number of channels (sizes may differ).
    labels : sequence of numpy.ndarray, each shape (H, W), integer dtype
        Label image of each field.
    names : sequence of str
        Name of each field, shown in its row's title.
    path : str or os.PathLike
        Output image file (PNG).
    channel_names : sequence of str, optional
        One display name per channel, for the colour legend.
    nucleus_channel : int
        Index of the channel segmentation ran on.
    title : str
        Figure title.

    Raises
    ------
    ValueError
        If the sequences differ in length or are empty, or an image and its labels disagree.
    """
    images = list(images)
    labels = list(labels)
    names = [str(n) for n in names]
    if len(images) == 0:
        raise ValueError("images: got an empty sequence, expected at least one field")
    if not len(images) == len(labels) == len(names):
        raise ValueError(
            f"images, labels, names: got lengths {len(images)}, {len(labels)}, {len(names)}, "
            "expected equal lengths (one entry per field)"
        )
    fields = []
    for i, (image, lab) in enumerate(zip(images, labels)):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(f"images[{i}]: got an array of shape {image.shape}, expected (C, H, W) or (H, W)")
        lab = np.asarray(lab)
        if lab.shape != image.shape[1:]:
            raise ValueError(
                f"labels[{i}]: got shape {lab.shape}, expected {image.shape[1:]} (the height and width of images[{i}])"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels[{i}]: got dtype {lab.dtype}, expected an integer dtype")
        fields.append((image, lab))
    n_channels = fields[0][0].shape[0]
    for i, (image, _) in enumerate(fields):
        if image.shape[0] != n_channels:
            raise ValueError(f"images[{i}]: got {image.shape[0]} channels, expected {n_channels} (like images[0])")
    if not isinstance(nucleus_channel, (int, np.integer)) or not (-n_channels <= nucleus_channel < n_channels):
        raise ValueError(f"nucleus_channel: got {nucleus_channel!r}, expected an index into {n_channels} channels")
    ch_names = _channel_names(channel_names, n_channels)

    panel_w = 5.0
    heights = [panel_w * min(max(img.shape[1] / img.shape[2], 0.4), 2.5) for img, _ in fields]
    fig, axes = plt.subplots(
        len(fields),
        2,
        figsize=(2 * panel_w, sum(heights) + 0.35 * len(fields) + 0.5),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
        layout="constrained",
    )
    for (image, lab), name, (ax_rgb, ax_nuc) in zip(fields, names, axes):
        limits = contrast_limits(image)
        outline = _outline_mask(lab, panel_w * _DPI)
        n_objects = int(np.count_nonzero(np.unique(lab)))

        rgb = composite_rgb(image, limits=limits)
        rgb[outline] = _OUTLINE_RGB
        ax_rgb.imshow(rgb)
        prefix = f"{name}: " if name else ""
        noun = "object" if n_objects == 1 else "objects"
        ax_rgb.set_title(f"{prefix}composite, {n_objects} {noun}")

        nuc = _stretch(image[nucleus_channel], *limits[nucleus_channel])
        nuc_rgb = np.repeat(nuc[..., None], 3, axis=-1)
        nuc_rgb[outline] = _OUTLINE_RGB
        ax_nuc.imshow(nuc_rgb)
        ax_nuc.set_title(f"{ch_names[nucleus_channel]} (segmented channel)")
        for ax in (ax_rgb, ax_nuc):
            _image_axes(ax)

    handles = _channel_legend_handles(ch_names)
    handles.append(Line2D([], [], color=_OUTLINE_RGB, lw=2, label="object outline"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 6),
        frameon=False,
    )
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=_DPI)


def plot_segmentation_qc(
    table: pd.DataFrame,
    scale: Mapping,
    warnings: Sequence[str],
    path: str | os.PathLike,
    *,
    dataset: str = "",
) -> None:
    """Per-field segmentation QC of one dataset: objects per field, share of the foreground
    kept by the area filters, contrast to noise and each field's nucleus size against the
    dataset's diameter, flagged fields in red; the scale and the warnings as text below.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per field: ``n_objects``, ``kept_fraction``, ``snr``, ``diameter``, ``flags``
        (';'-joined, empty when the field looks fine).
    scale : mapping
        ``diameter`` (px), ``source`` (``{"diameter": "auto" | "config", ...}``) and
        ``segmentation`` (the resolved parameters; ``min_snr`` is drawn).
    warnings : sequence of str
        Printed under the panels.
    path : str or os.PathLike
        Output image file.
    """
    diameter = float(scale["diameter"])
    flagged = table["flags"].astype(str) != ""
    index = np.arange(len(table))
    source = scale["source"]["diameter"]
    lines = [
        f"{dataset}: nucleus diameter {diameter:.1f} px ({'estimated' if source == 'auto' else 'set in config'}); "
        f"{int(flagged.sum())} of {len(table)} fields flagged"
    ]
    lines += [f"WARNING: {w}" for w in warnings] or ["no warnings"]
    text = "\n".join(_wrap(line, 180) for line in lines)
    n_lines = text.count("\n") + 1
    fig = plt.figure(figsize=(15, 3.4 + 0.17 * n_lines), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=(3.2, 0.17 * n_lines + 0.1))
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    panels = [
        ("n_objects", "objects per field", None),
        ("kept_fraction", "foreground kept by the area filters", None),
        ("snr", "contrast to noise", scale["segmentation"].get("min_snr")),
        ("diameter", "median nucleus diameter (px)", diameter),
    ]
    for ax, (column, title, line) in zip(axes, panels, strict=True):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        ax.scatter(index[~flagged], values[~flagged], s=12, color="0.35", label="field")
        if flagged.any():
            ax.scatter(index[flagged], values[flagged], s=18, color="tab:red", label="flagged")
        if line is not None and np.isfinite(line):
            ax.axhline(line, color="tab:blue", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("field (in shard order; names in qc/segmentation_fields.csv)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        finite = values[np.isfinite(values)]
        if column == "snr" and finite.size and finite.max() > 50:
            ax.set_yscale("log")
    axes[0].legend(fontsize=8, loc="best")
    notes = fig.add_subplot(grid[1, :])
    notes.axis("off")
    notes.text(0, 1, text, ha="left", va="top", fontsize=8, color="tab:red" if warnings else "black", transform=notes.transAxes)
    save_figure(fig, path)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _outline_mask(labels: np.ndarray, display_px: float) -> np.ndarray:
    """Object outlines, thickened so they stay visible when the image is drawn smaller."""
    outline = find_boundaries(labels, mode="outer")
    # One image pixel is width / display_px screen pixels wide; thinner lines vanish.
    thickness = math.ceil(labels.shape[1] / display_px)
    if thickness > 1 and outline.any():
        outline = ndimage.binary_dilation(outline, iterations=thickness - 1)
    return outline


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


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

    def numeric(col: str) -> pd.Series:
        try:
            return pd.to_numeric(history[col])
        except (TypeError, ValueError):
            raise ValueError(f"history: column {col!r} has dtype {history[col].dtype}, expected numbers") from None

    epoch = numeric("epoch")
    best_epoch = best_value = None
    if "val_loss" in history.columns:
        val_loss = numeric("val_loss").to_numpy(dtype=float)
        if np.isfinite(val_loss).any():
            best = int(np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.nan)))
            best_epoch, best_value = epoch.iloc[best], float(val_loss[best])

    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.6 * ncols, 3.4 * nrows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    styles = {"train": ("tab:blue", "training"), "val": ("tab:orange", "validation")}
    for ax, term in zip(axes.flat, terms):
        values = []
        for split, (colour, label) in styles.items():
            col = f"{split}_{term}"
            if col not in history.columns:
                continue
            y = numeric(col)
            ok = y.notna() & epoch.notna()
            if not ok.any():
                continue
            values.append(y[ok].to_numpy(dtype=float))
            # Markers only while they stay readable.
            marker = "o" if ok.sum() <= 30 else None
            ax.plot(epoch[ok], y[ok], color=colour, marker=marker, ms=3, label=label)
        if best_epoch is not None:
            ax.axvline(
                best_epoch,
                color="0.4",
                ls="--",
                lw=1,
                label=f"best validation loss (epoch {best_epoch:g})",
            )
            if term == "loss":
                ax.plot(
                    [best_epoch],
                    [best_value],
                    marker="*",
                    ms=12,
                    color="tab:red",
                    ls="none",
                    label=f"min. {best_value:.4g}",
                )
        finite = np.concatenate(values) if values else np.array([])
        finite = finite[np.isfinite(finite)]
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
            ax.set_yscale("log")
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.set_ylabel(term + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(terms) :]:
        ax.set_visible(False)
    fig.suptitle(title or "Learning curve")
    save_figure(fig, path, dpi=_DPI)


def plot_reconstruction_grid(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | os.PathLike,
    *,
    channel_names: Sequence[str] | None = None,
    title: str = "",
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

    Raises
    ------
    ValueError
        If either array is not 4-D or their shapes differ.
    """
    orig = np.asarray(originals)
    recon = np.asarray(reconstructions)
    if orig.ndim != 4:
        raise ValueError(f"originals: got an array of shape {orig.shape}, expected (N, C, H, W)")
    if recon.shape != orig.shape:
        raise ValueError(f"reconstructions: got shape {recon.shape}, expected {orig.shape} (the shape of originals)")
    _as_image_batch(orig, "originals")
    _as_image_batch(recon, "reconstructions")
    n, n_channels = orig.shape[:2]
    names = _channel_names(channel_names, n_channels)

    limits = contrast_limits(orig)
    rgb_orig = composite_rgb(orig, limits=limits)
    rgb_recon = composite_rgb(recon, limits=limits)
    mse = np.nanmean((orig.astype(np.float64) - recon.astype(np.float64)) ** 2, axis=(1, 2, 3))

    row_labels = ["original", "reconstruction"]
    for name in names:
        row_labels += [f"{name}\noriginal", f"{name}\nreconstruction"]
    nrows = len(row_labels)
    # Keep panels between ~1 and ~1.6 inches: readable, yet the figure stays report-sized.
    size = float(np.clip(14.0 / max(n, nrows), 1.0, 1.6))
    fig, axes = plt.subplots(
        nrows,
        n,
        figsize=(size * n + 1.2, size * nrows + 0.8),
        squeeze=False,
        layout="constrained",
    )
    for j in range(n):
        axes[0, j].imshow(rgb_orig[j])
        axes[1, j].imshow(rgb_recon[j])
        for c in range(n_channels):
            lo, hi = limits[c]
            if hi <= lo:
                hi = lo + 1.0
            for k, source in enumerate((orig, recon)):
                axes[2 + 2 * c + k, j].imshow(source[j, c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        axes[0, j].set_title(f"cell {j}\nMSE {mse[j]:.3g}", fontsize="small")
    for ax in axes.flat:
        _image_axes(ax)
    for i, label in enumerate(row_labels):
        axes[i, 0].set_ylabel(label, fontsize="small", rotation=0, ha="right", va="center")
    fig.legend(
        handles=_channel_legend_handles(names),
        loc="outside lower center",
        ncol=min(n_channels, 6),
        frameon=False,
        title="composite colours",
    )
    fig.suptitle(title or "Reconstructions (same contrast as originals)")
    save_figure(fig, path, dpi=_DPI)


# --------------------------------------------------------------------------------------
# Embeddings and metrics
# --------------------------------------------------------------------------------------


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
    xy = np.asarray(coords)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
        raise ValueError(f"coords: got an array of shape {xy.shape}, expected (N, 2) with N >= 1")
    if not np.issubdtype(xy.dtype, np.number) or not np.isfinite(xy).all():
        raise ValueError("coords: expected finite real values (got NaN, inf or non-numbers)")
    if not isinstance(colour_by, Mapping):
        raise TypeError(f"colour_by: got {type(colour_by).__name__}, expected a mapping name -> values")
    n = xy.shape[0]
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
    if not panels:
        panels = [("cells", None)]

    # Fewer, larger points for small N; many small translucent ones for large N.
    size = float(np.clip(300.0 / math.sqrt(n), 0.3, 20.0))
    alpha = float(np.clip(1.2 - 0.2 * math.log10(n), 0.3, 0.9))
    order = np.random.default_rng(0).permutation(n)

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(6.0 * ncols, 4.8 * nrows + 0.3),
        squeeze=False,
        layout="constrained",
    )
    for ax, (key, series) in zip(axes.flat, panels):
        if series is None:
            ax.scatter(*xy[order].T, s=size, alpha=alpha, color=_BASE, linewidths=0)
            ax.set_title(f"{key} (N = {n})")
        elif _is_categorical(series):
            _scatter_categorical(ax, xy, series, key, order, size, alpha)
        else:
            _scatter_continuous(fig, ax, xy, series, key, order, size, alpha)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{axis_label}-1")
        ax.set_ylabel(f"{axis_label}-2")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title or f"{axis_label} embedding of {n} cells")
    save_figure(fig, path, dpi=_DPI)


def _is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return True
    if pd.api.types.is_integer_dtype(dtype):
        return series.nunique(dropna=True) <= _MAX_LEGEND_CATEGORIES
    return not pd.api.types.is_numeric_dtype(dtype)


def _category_order(values: pd.Series) -> list:
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        return [c for c in values.cat.categories if c in present]
    uniques = list(values.dropna().unique())
    try:
        return sorted(uniques)
    except TypeError:  # mixed types: order by their text
        return sorted(uniques, key=str)


def _scatter_categorical(ax, xy, series, key, order, size, alpha) -> None:
    categories = _category_order(series)
    missing = series.isna().to_numpy()
    n_cat = len(categories)
    cmap = plt.get_cmap("tab10" if n_cat <= 10 else "tab20")
    index = {cat: i for i, cat in enumerate(categories)}
    codes = np.array([-1 if m else index[v] for v, m in zip(series, missing)])
    colours = np.array([cmap(i % cmap.N) for i in range(max(n_cat, 1))])
    if missing.any():
        ax.scatter(*xy[missing].T, s=size, alpha=alpha, color="0.85", linewidths=0)
    shown = order[~missing[order]]
    ax.scatter(*xy[shown].T, s=size, alpha=alpha, c=colours[codes[shown]], linewidths=0)
    if n_cat > _MAX_LEGEND_CATEGORIES:
        ax.set_title(f"{key} ({n_cat} categories, colours repeat)")
        return
    ax.set_title(key)
    counts = np.bincount(codes[codes >= 0], minlength=n_cat)
    handles = [
        Line2D([], [], ls="none", marker="o", ms=6, color=colours[i], label=f"{cat} ({counts[i]})")
        for i, cat in enumerate(categories)
    ]
    if missing.any():
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                ms=6,
                color="0.85",
                label=f"missing ({int(missing.sum())})",
            )
        )
    ax.legend(
        handles=handles,
        title=key,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        frameon=False,
        ncol=1 if len(handles) <= 12 else 2,
    )


def _scatter_continuous(fig, ax, xy, series, key, order, size, alpha) -> None:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    missing = ~np.isfinite(values)
    if missing.any():
        ax.scatter(
            *xy[missing].T,
            s=size,
            alpha=alpha,
            color="0.85",
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
        cmap="viridis",
        vmin=vmin,
        vmax=vmax if vmax > vmin else vmin + 1.0,
        linewidths=0,
    )
    colourbar = fig.colorbar(mappable, ax=ax, shrink=0.85)
    colourbar.set_label(key)
    colourbar.solids.set_alpha(1.0)
    ax.set_title(key)


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
    table = summary[["model", "layer", metric]].copy()
    table[metric] = table[metric].astype(float)
    finite = np.isfinite(table[metric])
    n_missing = int((~finite).sum())
    table = table[finite]
    if table.empty:
        raise ValueError(f"summary: column {metric!r} has no finite value, expected at least one")
    # Worst first: barh draws the first row at the bottom, so the best ends up on top.
    table = table.sort_values(metric, ascending=higher_is_better, kind="stable")
    labels = [f"{m}/{layer}" for m, layer in zip(table["model"], table["layer"])]
    values = table[metric].to_numpy()
    best = len(values) - 1

    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(values) + 1.4), layout="constrained")
    colours = [_BASE] * len(values)
    colours[best] = _HIGHLIGHT
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
    ax.axvline(0, color="0.3", lw=0.8)
    direction = "higher is better" if higher_is_better else "lower is better"
    ax.set_xlabel(f"{metric} ({direction})")
    ax.set_ylabel("model/layer")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=_HIGHLIGHT, label=f"best: {labels[best]}")],
        loc="lower right",
        fontsize="small",
    )
    heading = title or metric
    if n_missing:
        heading += f"\n({n_missing} model/layer without a value not shown)"
    ax.set_title(heading)
    save_figure(fig, path, dpi=_DPI)


def plot_metric_grid(summary: pd.DataFrame, columns: list[str], path, *, lower_is_better=(), title: str = "") -> None:
    """Small multiples: one horizontal bar chart per metric column, every model/layer a bar
    (baselines in grey), best at the top; metrics without values are left out."""
    import matplotlib.pyplot as plt

    from workflow_scripts.io import save_figure

    columns = [c for c in columns if summary[c].astype(float).notna().any()]
    if not columns:
        raise ValueError("plot_metric_grid: no metric column has a value")
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    height = max(2.5, 0.22 * len(summary) + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, height * nrows), squeeze=False)
    names = summary["model"].astype(str) + "/" + summary["layer"].astype(str)
    baseline = summary.get("kind", pd.Series([""] * len(summary))).astype(str).eq("baseline").to_numpy()
    for ax, column in zip(axes.flat, columns):
        values = summary[column].astype(float).to_numpy()
        ok = np.isfinite(values)
        order = np.argsort(values[ok] if column in lower_is_better else -values[ok])
        vals = values[ok][order]
        labels = names[ok].to_numpy()[order]
        colours = np.where(baseline[ok][order], "#9e9e9e", "#3b75af")
        ax.barh(np.arange(len(vals))[::-1], vals, color=colours)
        ax.set_yticks(np.arange(len(vals))[::-1], labels, fontsize=7)
        ax.set_title(column + (" (lower is better)" if column in lower_is_better else ""), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title + "  (grey: baselines)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion_matrices(panels: list[tuple[str, list[str], np.ndarray]], path) -> None:
    """Row-normalised confusion matrices side by side: ``(title, classes, counts)`` per panel
    (rows = true class, columns = predicted), the share written in each cell."""
    import matplotlib.pyplot as plt

    from workflow_scripts.io import save_figure

    if not panels:
        raise ValueError("plot_confusion_matrices: no panel to draw")
    size = max(3.5, 0.55 * max(len(c) for _, c, _ in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, (title, classes, counts) in zip(axes[0], panels):
        counts = np.asarray(counts, dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(title, fontsize=9)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    fig.tight_layout()
    save_figure(fig, path)
