"""Rule baseline_features: hand-crafted features, a random CNN or cell counts (no training)."""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.baselines import cell_count_table, handcrafted_table, random_cnn_tables
from workflow_scripts.data import Normalizer, make_normalizer, open_shards
from workflow_scripts.io import feature_columns, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.training.streams import source_for

log = logging.getLogger("baseline_features")


def _crop_source(smk, cells, arrays):
    """Read crops as the baselines measure them (``baselines.normalize``).

    ``dataset``: raw (hand-crafted features rescale per cell, the random CNN z-scores each
    channel over all cells); ``cell`` or ``field``: scaled by the crop's or field's robust range.
    """
    kind = smk.params.normalize
    normalizer = (
        Normalizer.identity(arrays.item_shape[0]) if kind == "dataset" else make_normalizer(kind, cells, arrays)
    )
    log.info("normalize: %s", kind)
    return source_for(cells, arrays, normalizer)


def _handcrafted(smk, cells, arrays):
    table = handcrafted_table(cells, _crop_source(smk, cells, arrays), smk.params.channels, n_jobs=int(smk.threads))
    write_parquet(smk.output[0], table)
    log.info("hand-crafted: %d cells x %d features", len(table), len(feature_columns(table)))


def _random_cnn(smk, cells, arrays):
    tables = random_cnn_tables(cells, _crop_source(smk, cells, arrays), seed=int(smk.params.seed))
    for path in smk.output:  # one table per requested layer, named by its stem
        write_parquet(path, tables[Path(path).stem])
    log.info("random CNN: %s", {layer: len(feature_columns(table)) for layer, table in tables.items()})


def _cell_count(smk, cells, arrays):
    write_parquet(smk.output[0], cell_count_table(cells, smk.params.group_by))
    log.info("cell count per %s: %d groups", smk.params.group_by, cells[smk.params.group_by].nunique())


def main(smk):
    """Write the feature table(s) of the baseline ``smk.params.kind``."""
    cells = pd.read_parquet(smk.input.cells)
    arrays = open_shards(smk.input.arrays)
    kinds = {"handcrafted": _handcrafted, "random_cnn": _random_cnn, "cellcount": _cell_count}
    kinds[smk.params.kind](smk, cells, arrays)


run(snakemake, main)  # noqa: F821
