"""Rule pca_features: the raw-pixel PCA baseline (model ``pca``, layer ``pixels``)."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from workflow_scripts.data import make_normalizer, open_shards, pixel_matrix
from workflow_scripts.features import feature_table
from workflow_scripts.io import write_parquet
from workflow_scripts.runner import run
from workflow_scripts.split import split_by_group
from workflow_scripts.training.streams import source_for

log = logging.getLogger("pca_features")


def main(smk):
    """Fit the pixel PCA on the training split and write every cell's components."""
    cells = pd.read_parquet(smk.input.cells)
    arrays = open_shards(smk.input.arrays)
    seed = int(smk.params.seed)
    # Fitted on the training split only, like the learned models; per-channel z-scores of the
    # training split (baselines.normalize: dataset), or each crop / field scaled on its own.
    is_val = split_by_group(cells[smk.params.split["by"]].astype(str), smk.params.split["val_fraction"], seed)
    train = cells.loc[~is_val]
    normalizer = make_normalizer(smk.params.normalize, train, arrays)
    train_pixels = pixel_matrix(source_for(train, arrays, normalizer))
    k = min(int(smk.params.n_components), train_pixels.shape[0] - 1, train_pixels.shape[1])
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(train_pixels)
    del train_pixels
    source = source_for(cells, arrays, normalizer)
    parts = [
        pca.transform(pixel_matrix(source, items=range(start, min(start + 1024, len(cells))))).astype(np.float32)
        for start in range(0, len(cells), 1024)
    ]
    values = np.concatenate(parts)
    log.info("normalize: %s", smk.params.normalize)
    log.info("PCA: %d components explain %.1f%% of the variance", k, 100 * pca.explained_variance_ratio_.sum())
    write_parquet(smk.output[0], feature_table(cells, values, "pixels"))


run(snakemake, main)  # noqa: F821
