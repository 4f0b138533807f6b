"""Rule extract_features_<model>: pooled per-layer features of every kept cell."""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd
import torch

from workflow_scripts.data import normalizer_from_record, open_shards
from workflow_scripts.features import extract_features, feature_table
from workflow_scripts.io import write_parquet
from workflow_scripts.models.registry import load_trained
from workflow_scripts.models.spec import split_feature_layer
from workflow_scripts.runner import run
from workflow_scripts.training.device import pick_device
from workflow_scripts.training.streams import source_for

log = logging.getLogger("extract_features")


def main(smk):
    """Write one feature table per (layer, pooling) of the trained model."""
    torch.set_num_threads(max(1, int(smk.threads)))
    model, record = load_trained(smk.input.weights, smk.input.config)
    cells = pd.read_parquet(smk.input.cells)
    source = source_for(cells, open_shards(smk.input.arrays), normalizer_from_record(record["normalization"]))
    # Feature tables are (layer, pooling) pairs: conv3 (first pooling), conv3_max, ...
    tables = {name: split_feature_layer(name, list(smk.params.pooling)) for name in smk.params.layers}
    values = extract_features(
        model, source, sorted(set(tables.values())), batch_size=int(smk.params.batch_size), device=pick_device()
    )
    for name, key in tables.items():
        path = Path(smk.params.out_dir) / f"{name}.parquet"
        write_parquet(path, feature_table(cells, values[key], name))
        log.info("%s: %d cells x %d features", path, *values[key].shape)


run(snakemake, main)  # noqa: F821
