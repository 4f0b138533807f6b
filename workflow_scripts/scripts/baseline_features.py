"""Rule baseline_features: the baselines every model is compared with, through the same
metrics: hand-crafted (CellProfiler-style) features, a random-weights CNN, and the number of
cells in each cell's group."""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.data import Normalizer, make_normalizer, open_shards, source_for
from workflow_scripts.features import feature_table
from workflow_scripts.io import write_parquet
from workflow_scripts.runner import run

log = logging.getLogger("baseline_features")
BATCH = 1024


def _crop_source(smk, cells, arrays):
    """Crops as the baselines measure them (``baselines.normalize``): ``dataset`` = raw
    intensities (the hand-crafted features rescale per cell where they need to, and the random
    CNN z-scores each channel over all cells), ``cell`` or ``field`` = each crop scaled by its
    own or its field's robust range first (workflow_scripts.data)."""
    kind = smk.params.normalize
    normalizer = Normalizer.identity(arrays.item_shape[0]) if kind == "dataset" else make_normalizer(kind, cells, arrays)
    log.info("normalize: %s", kind)
    return source_for(cells, arrays, normalizer)


def _crops(source, start, stop):
    return source.batch(np.arange(start, min(stop, len(source))))


def handcrafted(smk, cells, arrays):
    from workflow_scripts.baselines import handcrafted_features

    names = [c["name"] for c in smk.params.channels]
    roles = [c["role"] for c in smk.params.channels]
    nucleus = roles.index("nucleus") if "nucleus" in roles else 0
    source = _crop_source(smk, cells, arrays)
    parts = [
        handcrafted_features(
            _crops(source, s, s + BATCH), names, nucleus_channel=nucleus, n_jobs=int(smk.threads)
        )
        for s in range(0, len(cells), BATCH)
    ]
    values = pd.concat(parts, ignore_index=True)
    # Standardised over the cells (pycytominer's "standardize"): the features live on very
    # different scales, and distances between cells should not be ruled by the largest.
    sd = values.std(axis=0, ddof=0).replace(0, 1.0)
    values = (values - values.mean(axis=0)) / sd
    meta = cells[[c for c in cells.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    table = pd.concat([meta, values.astype(np.float32)], axis=1)
    write_parquet(smk.output[0], table)
    log.info("hand-crafted: %d cells x %d features", len(table), values.shape[1])


def random_cnn(smk, cells, arrays):
    import torch

    from workflow_scripts.baselines import random_cnn_features

    torch.set_num_threads(int(smk.threads))
    source = _crop_source(smk, cells, arrays)
    crops = np.concatenate([_crops(source, s, s + BATCH) for s in range(0, len(cells), BATCH)])
    layers = random_cnn_features(crops, seed=int(smk.params.seed))
    for path in smk.output:
        layer = Path(path).stem
        write_parquet(path, feature_table(cells, np.asarray(layers[layer], np.float32), layer))
    log.info("random CNN: %s", {k: v.shape for k, v in layers.items()})


def cell_count(smk, cells, arrays):
    group = smk.params.group_by
    counts = cells.groupby(group)[group].transform("size").to_numpy(np.float32)[:, None]
    write_parquet(smk.output[0], feature_table(cells, counts, "count"))
    log.info("cell count per %s: %d groups", group, cells[group].nunique())


def main(smk):
    cells = pd.read_parquet(smk.input.cells)
    arrays = open_shards(smk.input.arrays)
    {"handcrafted": handcrafted, "random_cnn": random_cnn, "cellcount": cell_count}[smk.params.kind](
        smk, cells, arrays
    )


run(snakemake, main)  # noqa: F821
