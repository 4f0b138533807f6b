"""Segmentation figures: fields of view with object outlines, and the per-field QC panels."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from scipy import ndimage
from skimage.segmentation import find_boundaries

from workflow_scripts.figures.channels import (
    channel_colours,
    composite_rgb,
    contrast_limits,
    resolve_names,
    resolve_roles,
    stretch,
)
from workflow_scripts.figures.style import (
    ALERT,
    BASE,
    DPI,
    GREY,
    OUTLINE_RGB,
    figure,
    image_axes,
    legend_patches,
    outline_handle,
    save,
    subplots,
    wrap,
)
from workflow_scripts.validation import check_label_image

__all__ = ["plot_segmentation_overlay", "plot_segmentation_overlays", "plot_segmentation_qc"]

# Width of one image panel in inches.
_PANEL_W = 5.0


def plot_segmentation_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    channel_names: Sequence[str] | None = None,
    nucleus_channel: int = 0,
    channel_roles: Sequence[str] | None = None,
) -> None:
    """Draw one field of view with the outlines of its segmented objects.

    Left: the channel composite (:func:`~workflow_scripts.figures.channels.composite_rgb`)
    with outlines; right: the nuclear channel alone in greyscale with the same outlines.
    The object count is in the title.

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
    channel_roles : sequence of str, optional
        One role per channel (nucleus, structure, protein, other), which sets its colour;
        default :func:`~workflow_scripts.figures.channels.default_roles`.

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
        channel_roles=channel_roles,
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
    channel_roles: Sequence[str] | None = None,
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
    channel_roles : sequence of str, optional
        One role per channel (nucleus, structure, protein, other), which sets its colour;
        default :func:`~workflow_scripts.figures.channels.default_roles`.

    Raises
    ------
    ValueError
        If the sequences differ in length or are empty, or an image and its labels disagree.
    """
    names = [str(n) for n in names]
    fields = _checked_fields(images, labels, names)
    n_channels = fields[0][0].shape[0]
    _check_nucleus_channel(nucleus_channel, n_channels)
    ch_names = resolve_names(channel_names, n_channels)
    roles = resolve_roles(channel_roles, n_channels)
    fig, axes = _overlay_grid(fields)
    for (image, lab), name, (ax_rgb, ax_nuc) in zip(fields, names, axes):
        _draw_field(ax_rgb, ax_nuc, image, lab, name, roles, ch_names[nucleus_channel], nucleus_channel)
    handles = legend_patches(ch_names, channel_colours(n_channels, roles)) + [outline_handle()]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    if title:
        fig.suptitle(title)
    save(fig, path)


def _checked_fields(images, labels, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Check every field: a (C, H, W) image and (H, W) labels, one number of channels."""
    images, labels = list(images), list(labels)
    if len(images) == 0:
        raise ValueError("images: got an empty sequence, expected at least one field")
    if not len(images) == len(labels) == len(names):
        raise ValueError(
            f"images, labels, names: got lengths {len(images)}, {len(labels)}, {len(names)}, "
            "expected equal lengths (one entry per field)"
        )
    fields = [_checked_field(i, image, lab) for i, (image, lab) in enumerate(zip(images, labels))]
    n_channels = fields[0][0].shape[0]
    for i, (image, _) in enumerate(fields):
        if image.shape[0] != n_channels:
            raise ValueError(f"images[{i}]: got {image.shape[0]} channels, expected {n_channels} (like images[0])")
    return fields


def _checked_field(i: int, image, lab) -> tuple[np.ndarray, np.ndarray]:
    """Check field ``i``: a (C, H, W) image (or (H, W)) and its (H, W) integer labels."""
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
    return image, check_label_image(f"labels[{i}]", lab)


def _check_nucleus_channel(nucleus_channel, n_channels: int) -> None:
    """Check for an index into ``n_channels`` channels (negative counts from the end)."""
    if not isinstance(nucleus_channel, (int, np.integer)) or not (-n_channels <= nucleus_channel < n_channels):
        raise ValueError(f"nucleus_channel: got {nucleus_channel!r}, expected an index into {n_channels} channels")


def _overlay_grid(fields):
    """Make a figure with two image panels per field, each row as tall as its field's aspect."""
    heights = [_PANEL_W * min(max(img.shape[1] / img.shape[2], 0.4), 2.5) for img, _ in fields]
    return subplots(
        len(fields),
        2,
        figsize=(2 * _PANEL_W, sum(heights) + 0.35 * len(fields) + 0.5),
        gridspec_kw={"height_ratios": heights},
    )


def _draw_field(ax_rgb, ax_nuc, image, lab, name: str, roles, nucleus_name: str, nucleus_channel: int) -> None:
    """Draw one row: the composite and the nuclear channel, both with the objects' outlines."""
    limits = contrast_limits(image)
    outline = _outline_mask(lab, _PANEL_W * DPI)
    n_objects = int(np.count_nonzero(np.unique(lab)))

    rgb = composite_rgb(image, limits=limits, roles=roles)
    rgb[outline] = OUTLINE_RGB
    ax_rgb.imshow(rgb)
    prefix = f"{name}: " if name else ""
    noun = "object" if n_objects == 1 else "objects"
    ax_rgb.set_title(f"{prefix}composite, {n_objects} {noun}")

    nuc = stretch(image[nucleus_channel], *limits[nucleus_channel])
    nuc_rgb = np.repeat(nuc[..., None], 3, axis=-1)
    nuc_rgb[outline] = OUTLINE_RGB
    ax_nuc.imshow(nuc_rgb)
    ax_nuc.set_title(f"{nucleus_name} (segmented channel)")
    for ax in (ax_rgb, ax_nuc):
        image_axes(ax)


def _outline_mask(labels: np.ndarray, display_px: float) -> np.ndarray:
    """Find object outlines, thickened so they stay visible when the image is drawn smaller."""
    outline = find_boundaries(labels, mode="outer")
    # One image pixel is width / display_px screen pixels wide; thinner lines vanish.
    thickness = math.ceil(labels.shape[1] / display_px)
    if thickness > 1 and outline.any():
        outline = ndimage.binary_dilation(outline, iterations=thickness - 1)
    return outline


def plot_segmentation_qc(
    table: pd.DataFrame,
    scale: Mapping,
    warnings: Sequence[str],
    path: str | os.PathLike,
    *,
    dataset: str = "",
) -> None:
    """Draw the per-field segmentation QC of one dataset.

    Four panels: objects per field, share of the foreground kept by the area filters,
    contrast to noise and each field's nucleus size against the dataset's diameter, flagged
    fields in red; the scale and the warnings as text below.

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
    dataset : str
        Dataset name, at the start of the text.
    """
    diameter = float(scale["diameter"])
    flagged = (table["flags"].astype(str) != "").to_numpy()
    text = _qc_text(dataset, diameter, scale["source"]["diameter"], flagged, warnings)
    n_lines = text.count("\n") + 1
    fig = figure(figsize=(15, 3.4 + 0.17 * n_lines))
    grid = fig.add_gridspec(2, 4, height_ratios=(3.2, 0.17 * n_lines + 0.1))
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    panels = [
        ("n_objects", "objects per field", None),
        ("kept_fraction", "foreground kept by the area filters", None),
        ("snr", "contrast to noise", scale["segmentation"].get("min_snr")),
        ("diameter", "median nucleus diameter (px)", diameter),
    ]
    for ax, (column, panel_title, line) in zip(axes, panels, strict=True):
        _qc_panel(ax, table, column, panel_title, line, flagged)
    axes[0].legend(fontsize=8, loc="best")
    notes = fig.add_subplot(grid[1, :])
    notes.axis("off")
    colour = ALERT if warnings else "black"
    notes.text(0, 1, text, ha="left", va="top", fontsize=8, color=colour, transform=notes.transAxes)
    save(fig, path)


def _qc_text(dataset: str, diameter: float, source: str, flagged: np.ndarray, warnings) -> str:
    """Write the scale, the count of flagged fields and the warnings, wrapped."""
    origin = "estimated" if source == "auto" else "set in config"
    lines = [
        f"{dataset}: nucleus diameter {diameter:.1f} px ({origin}); "
        f"{int(flagged.sum())} of {len(flagged)} fields flagged"
    ]
    lines += [f"WARNING: {w}" for w in warnings] or ["no warnings"]
    return "\n".join(wrap(line, 180) for line in lines)


def _qc_panel(ax, table: pd.DataFrame, column: str, title: str, line, flagged: np.ndarray) -> None:
    """Draw one QC value per field, flagged fields in red, ``line`` (a threshold) dashed."""
    index = np.arange(len(table))
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    ax.scatter(index[~flagged], values[~flagged], s=12, color=GREY, label="field")
    if flagged.any():
        ax.scatter(index[flagged], values[flagged], s=18, color=ALERT, label="flagged")
    if line is not None and np.isfinite(line):
        ax.axhline(line, color=BASE, linestyle="--", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("field (in shard order; names in qc/segmentation_fields.csv)", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = values[np.isfinite(values)]
    if column == "snr" and finite.size and finite.max() > 50:
        ax.set_yscale("log")
