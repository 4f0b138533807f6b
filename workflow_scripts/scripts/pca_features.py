"""Rule pca_features: the raw-pixel PCA baseline (model ``pca``, layer ``pixels``)."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from workflow_scripts.data import Normalizer, open_shards, pixel_matrix, raw_channel_stats, source_for
from workflow_scripts.features import feature_table
from workflow_scripts.io import write_parquet
from workflow_scripts.runner import run
from workflow_scripts.split import split_by_group

log = logging.getLogger("pca_features")


def main(smk):
    cells = pd.read_parquet(smk.input.cells)
    arrays = open_shards(smk.input.arrays)
    seed = int(smk.params.seed)
    # Fitted on the training split only, like the learned models; per-channel z-scores.
    is_val = split_by_group(cells[smk.params.split["by"]].astype(str), smk.params.split["val_fraction"], seed)
    stats = raw_channel_stats(cells.loc[~is_val], arrays)
    normalizer = Normalizer.from_stats(stats, "gaussian")
    train_pixels = pixel_matrix(source_for(cells.loc[~is_val], arrays, normalizer))
    k = min(int(smk.params.n_components), train_pixels.shape[0] - 1, train_pixels.shape[1])
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(train_pixels)
    del train_pixels
    parts = []
    for start in range(0, len(cells), 1024):
        chunk = pixel_matrix(source_for(cells.iloc[start : start + 1024], arrays, normalizer))
        parts.append(pca.transform(chunk).astype(np.float32))
    values = np.concatenate(parts)
    log.info("PCA: %d components explain %.1f%% of the variance", k, 100 * pca.explained_variance_ratio_.sum())
    write_parquet(smk.output[0], feature_table(cells, values, "pixels"))


run(snakemake, main)  # noqa: F821
