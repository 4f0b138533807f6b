"""Figures for the Snakemake report and the colours the explorer shares with them.

Every ``plot_*`` function takes arrays or tables, draws one figure with constrained layout and
writes it with :func:`workflow_scripts.io.save_figure` (atomic write, figure closed
afterwards); nothing is shown on screen (Agg backend). The modules:

- :mod:`~workflow_scripts.figures.style`: backend, layout, palette, legends, saving;
- :mod:`~workflow_scripts.figures.channels`: the channel-colour rule by role, contrast
  limits and colour composites (also used by the explorer's thumbnails);
- :mod:`~workflow_scripts.figures.segmentation`: outlines on fields, segmentation QC;
- :mod:`~workflow_scripts.figures.training`: learning curve, reconstructions;
- :mod:`~workflow_scripts.figures.embedding`: 2-D maps of cells;
- :mod:`~workflow_scripts.figures.metrics`: metric bars, metric grid, confusion matrices.
"""

from workflow_scripts.figures.channels import (
    channel_colour_names,
    channel_colours,
    composite_rgb,
    contrast_limits,
    default_roles,
)
from workflow_scripts.figures.embedding import plot_embedding
from workflow_scripts.figures.metrics import plot_confusion_matrices, plot_metric_bars, plot_metric_grid
from workflow_scripts.figures.screen import plot_screen_steps
from workflow_scripts.figures.segmentation import (
    plot_segmentation_overlay,
    plot_segmentation_overlays,
    plot_segmentation_qc,
)
from workflow_scripts.figures.style import plot_message
from workflow_scripts.figures.training import plot_learning_curve, plot_reconstruction_grid

__all__ = [
    "channel_colour_names",
    "channel_colours",
    "composite_rgb",
    "contrast_limits",
    "default_roles",
    "plot_confusion_matrices",
    "plot_embedding",
    "plot_learning_curve",
    "plot_message",
    "plot_metric_bars",
    "plot_metric_grid",
    "plot_reconstruction_grid",
    "plot_screen_steps",
    "plot_segmentation_overlay",
    "plot_segmentation_overlays",
    "plot_segmentation_qc",
]
