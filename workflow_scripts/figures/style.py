"""Shared look of every report figure: backend, layout, palette, legends and saving.

Every figure module draws through :func:`subplots` or :func:`figure` (constrained layout,
never ``tight_layout``), takes its colours from the constants below, and writes with
:func:`save`. Nothing is shown on screen: the workflow runs headless, so the Agg backend is
selected here, before pyplot is imported.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from workflow_scripts.io import save_figure

# Headless: cluster nodes and CI have no display, and the report only needs files.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after matplotlib.use: pyplot fixes the backend on import)

__all__ = [
    "ALERT",
    "BASE",
    "BASELINE",
    "CATEGORICAL_PALETTE",
    "DPI",
    "GREY",
    "HIGHLIGHT",
    "MISSING",
    "OUTLINE_RGB",
    "SEQUENTIAL_CMAP",
    "SHARE_CMAP",
    "figure",
    "grid_shape",
    "hide_unused",
    "image_axes",
    "legend_patches",
    "outline_handle",
    "plot_message",
    "save",
    "subplots",
    "wrap",
]

#: Resolution every figure is written at; also sizes outlines so they survive downsampling.
DPI = 110

#: The ordinary series: bars, the training curve, a single-colour scatter.
BASE = "tab:blue"
#: What the reader should look at first: the best bar, the validation curve.
HIGHLIGHT = "tab:orange"
#: Something wrong or extreme: flagged fields, the minimum of the loss.
ALERT = "tab:red"
#: Reference lines, legend swatch edges and unflagged points.
GREY = "0.3"
#: Baselines beside the learned models.
BASELINE = "#9e9e9e"
#: Missing values, drawn underneath the others.
MISSING = "0.85"
#: Colour map of continuous values.
SEQUENTIAL_CMAP = "viridis"
#: Colour map of shares in [0, 1] (confusion matrices).
SHARE_CMAP = "Blues"
#: Categorical colours of the explorer page (colour-blind-safe Okabe-Ito plus greys), cycled.
CATEGORICAL_PALETTE = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
    "#999999",
    "#7F3C8D",
    "#11A579",
    "#3969AC",
)
#: Object outlines on composites and on the nuclear channel: none of the channel colours.
OUTLINE_RGB = (1.0, 0.85, 0.0)


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    """Create a figure and a 2-D array of axes with constrained layout.

    Parameters
    ----------
    nrows, ncols : int
        Grid of axes.
    figsize : (float, float)
        Figure size in inches.
    **kwargs
        Passed on to :func:`matplotlib.pyplot.subplots` (e.g. ``gridspec_kw``).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The new figure.
    axes : numpy.ndarray of matplotlib.axes.Axes, shape (nrows, ncols)
        Always 2-D, even for one axes.
    """
    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", **kwargs)


def figure(figsize: tuple[float, float]):
    """Create an empty figure with constrained layout (for hand-made grids).

    Parameters
    ----------
    figsize : (float, float)
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure.
    """
    return plt.figure(figsize=figsize, layout="constrained")


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` atomically at :data:`DPI` and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike
        Output image file; the suffix chooses the format.
    """
    save_figure(fig, path, dpi=DPI)


def grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    """Rows and columns of a grid of small multiples, filled row by row.

    Parameters
    ----------
    n_panels : int
        Number of panels, ``>= 1``.
    max_cols : int
        Most panels per row.

    Returns
    -------
    (int, int)
        ``(nrows, ncols)``.

    Examples
    --------
    >>> grid_shape(4)
    (2, 3)
    >>> grid_shape(2)
    (1, 2)
    """
    ncols = min(max_cols, n_panels)
    return -(-n_panels // ncols), ncols


def hide_unused(axes: np.ndarray, n_used: int) -> None:
    """Hide the axes of a grid past the first ``n_used`` (in row order).

    Parameters
    ----------
    axes : numpy.ndarray of matplotlib.axes.Axes
        The grid.
    n_used : int
        Number of axes holding a panel.
    """
    for ax in list(axes.flat)[n_used:]:
        ax.set_visible(False)


def image_axes(ax) -> None:
    """Remove ticks and frame from an image panel, keeping the axes so row labels still show.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The panel.
    """
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def legend_patches(labels: Sequence[str], colours: Sequence) -> list[Patch]:
    """Legend swatches, one per label, in the matching colour.

    Parameters
    ----------
    labels : sequence of str
        Legend text of each swatch.
    colours : sequence of colours
        Any matplotlib colour per label (e.g. the rows of
        :func:`workflow_scripts.figures.channels.channel_colours`).

    Returns
    -------
    list of matplotlib.patches.Patch
        Handles for ``legend(handles=...)``.
    """
    return [Patch(facecolor=colour, edgecolor=GREY, label=label) for label, colour in zip(labels, colours)]


def outline_handle() -> Line2D:
    """Legend entry for the object outlines drawn in :data:`OUTLINE_RGB`.

    Returns
    -------
    matplotlib.lines.Line2D
        A handle for ``legend(handles=...)``.
    """
    return Line2D([], [], color=OUTLINE_RGB, lw=2, label="object outline")


def wrap(text: str, width: int) -> str:
    r"""Break ``text`` into lines of at most ``width`` characters.

    Parameters
    ----------
    text : str
        The text.
    width : int
        Line width in characters.

    Returns
    -------
    str
        The wrapped lines joined by newlines (``text`` itself when it is empty).

    Examples
    --------
    >>> wrap("one two three", 7)
    'one two\nthree'
    """
    return "\n".join(textwrap.wrap(text, width)) or text


def plot_message(message: str, path: str | os.PathLike, *, figsize: tuple[float, float] = (5.0, 1.5)) -> None:
    """Write a figure that only states ``message``, where there is nothing to draw.

    Parameters
    ----------
    message : str
        The text, centred.
    path : str or os.PathLike
        Output image file (PNG).
    figsize : (float, float)
        Figure size in inches.
    """
    fig, axes = subplots(figsize=figsize)
    ax = axes[0, 0]
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center")
    save(fig, path)
