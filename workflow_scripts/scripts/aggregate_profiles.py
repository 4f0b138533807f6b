"""Rule aggregate_profiles: per-group profiles (median or mean) of every feature table, as
Parquet with Metadata_* columns first (ready for pycytominer and copairs); with
``profiles.h5ad`` also AnnData files of the cells and of the profiles (for scanpy)."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.anndata_io import table_to_h5ad
from workflow_scripts.io import feature_columns, write_parquet
from workflow_scripts.metrics.retrieval import aggregate_profiles
from workflow_scripts.runner import run

log = logging.getLogger("aggregate_profiles")


def main(smk):
    by, how = smk.params.by, smk.params.how
    h5ad = iter(smk.output.h5ad)
    for source, target in zip(smk.input, smk.output.profiles):
        table = pd.read_parquet(source)
        if by not in table.columns:
            raise ValueError(f"{source}: profiles.by column {by!r} is missing")
        # Keep the metadata that is constant within a group (class, plate, treatment, ...).
        meta = [c for c in table.columns if c.startswith("Metadata_") and c != by]
        constant = [c for c in meta if (table.groupby(by)[c].nunique(dropna=False) <= 1).all()]
        profiles = aggregate_profiles(table, [by], feature_columns(table), how=how, count_column="Metadata_n_cells")
        first = table.groupby(by, sort=True)[constant].first().reset_index()
        profiles = first.merge(profiles, on=by, how="right")
        meta_cols = [c for c in profiles.columns if c.startswith("Metadata_")]
        profiles = profiles[meta_cols + [c for c in profiles.columns if c not in meta_cols]]
        write_parquet(target, profiles)
        if smk.output.h5ad:
            table_to_h5ad(table, next(h5ad), index="Metadata_cell")
            table_to_h5ad(profiles, next(h5ad), index=by)
    log.info("%d tables aggregated by %s (%s)%s", len(smk.output.profiles), by, how, " + .h5ad" if smk.output.h5ad else "")


run(snakemake, main)  # noqa: F821
