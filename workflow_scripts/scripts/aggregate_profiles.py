"""Rule aggregate_profiles: per-group profiles (median or mean) of every feature table.

Parquet with Metadata_* columns first (ready for pycytominer and copairs); with
``profiles.h5ad`` also AnnData files of the cells and of the profiles (for scanpy).
"""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.anndata_io import table_to_h5ad
from workflow_scripts.io import write_parquet
from workflow_scripts.metrics.retrieval import group_profiles
from workflow_scripts.runner import run

log = logging.getLogger("aggregate_profiles")


def main(smk):
    """Write the profiles of each input feature table (and the AnnData files, if asked).

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input`` (feature tables), ``output`` (``profiles``, one per table;
        ``h5ad``, two per table or none) and ``params`` (``by``, ``how``).
    """
    by, how = smk.params.by, smk.params.how
    h5ad = iter(smk.output.h5ad)
    for source, target in zip(smk.input, smk.output.profiles):
        table = pd.read_parquet(source)
        profiles = group_profiles(table, by, how, source=source)
        write_parquet(target, profiles)
        if smk.output.h5ad:
            table_to_h5ad(table, next(h5ad), index="Metadata_cell")
            table_to_h5ad(profiles, next(h5ad), index=by)
    suffix = " + .h5ad" if smk.output.h5ad else ""
    log.info("%d tables aggregated by %s (%s)%s", len(smk.output.profiles), by, how, suffix)


run(snakemake, main)  # noqa: F821
