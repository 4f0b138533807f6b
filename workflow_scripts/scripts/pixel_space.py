"""Rule pixel_space: the input space neighbourhood metrics compare features against.

The cells evaluated (a seeded, class-stratified subsample of at most ``metrics.max_cells``)
and their pixels: per-channel z-scored, 2x2 block-mean downsampled, flattened; and the pixels'
principal components that every evaluation's mutual-information critic reads (computed once
here rather than once per feature table).
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.data import Normalizer, open_shards, pixel_matrix, raw_channel_stats
from workflow_scripts.io import atomic_path
from workflow_scripts.metrics.sampling import stratified_subsample
from workflow_scripts.metrics.suite import pixel_components
from workflow_scripts.runner import run
from workflow_scripts.training.streams import source_for

log = logging.getLogger("pixel_space")
DOWNSAMPLE = 2


def main(smk):
    """Write the evaluated cells' downsampled pixels and their principal components."""
    cells = pd.read_parquet(smk.input.cells)
    label = smk.params.label
    if label not in cells.columns:
        raise ValueError(f"metrics.label: column {label!r} is not in {smk.input.cells}")
    index = stratified_subsample(cells[label].astype(str).to_numpy(), int(smk.params.max_cells), int(smk.params.seed))
    subset = cells.iloc[index].reset_index(drop=True)
    arrays = open_shards(smk.input.arrays)
    stats = raw_channel_stats(subset, arrays)
    pixels = pixel_matrix(source_for(subset, arrays, Normalizer.from_stats(stats, "gaussian")), DOWNSAMPLE)
    log.info("pixel space: %d of %d cells x %d values", len(subset), len(cells), pixels.shape[1])
    with atomic_path(smk.output[0]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                pixels=pixels,
                pixels_pca=pixel_components(pixels, int(smk.params.seed)),
                cells=subset["Metadata_cell"].to_numpy(dtype=str),
                n_total=np.int64(len(cells)),
            )


run(snakemake, main)  # noqa: F821
