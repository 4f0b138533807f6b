"""Rule tile_stats: per-channel normalisation statistics from the training split only."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd

from workflow_scripts.data import open_shards, raw_channel_stats
from workflow_scripts.io import write_json
from workflow_scripts.runner import run
from workflow_scripts.split import split_by_group


def main(smk):
    """Write the per-channel statistics of the training tiles and the split they come from."""
    table = pd.concat([pd.read_parquet(p) for p in smk.input.tables], ignore_index=True)
    is_val = split_by_group(table[smk.params.split["by"]].astype(str), smk.params.split["val_fraction"], int(smk.params.seed))
    train = table.loc[~is_val]
    stats = raw_channel_stats(train, open_shards(smk.input.tiles))
    stats.update(
        {
            "split_by": smk.params.split["by"],
            "n_train_tiles": int(len(train)),
            "n_val_tiles": int(is_val.sum()),
            "train_groups": sorted(map(str, np.unique(train[smk.params.split["by"]].astype(str)))),
        }
    )
    write_json(smk.output[0], stats)


run(snakemake, main)  # noqa: F821
