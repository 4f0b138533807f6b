"""Rule screen_<name>: the screen profiles and metrics of a model's (or the baselines') tables.

Per feature table: the layout applied to the cells, the profiling recipe (wells, per-plate
normalisation against the controls, feature selection, optional sphering and Harmony), the
screening metrics after each step (JSON), the final well profiles and their consensus.
"""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.anndata_io import table_to_h5ad
from workflow_scripts.io import write_json, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.screen.run import screen_table, well_ids

log = logging.getLogger("screen_profiles")


def main(smk):
    """Profile and score every feature table of the job.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: ``input.features`` and, in the same order, ``output.metrics``,
        ``output.wells``, ``output.consensus`` (and ``output.h5ad``, two per table, with
        ``profiles.h5ad``); params ``layout``, ``profiles``, ``seed``.
    """
    outputs = zip(smk.input.features, smk.output.metrics, smk.output.wells, smk.output.consensus)
    h5ad = iter(smk.output.h5ad)
    for features, metrics, wells, treatments in outputs:
        model, layer = Path(metrics).parent.name, Path(metrics).stem
        record, final, consensus = screen_table(
            pd.read_parquet(features),
            smk.params.layout,
            smk.params.profiles,
            seed=int(smk.params.seed),
            dataset=smk.wildcards.dataset,
        )
        write_json(metrics, {"model": model, "layer": layer, **record})
        write_parquet(wells, final)
        write_parquet(treatments, consensus)
        if smk.output.h5ad:  # profiles.h5ad: the same tables for scanpy
            table_to_h5ad(final.assign(Metadata_well_id=well_ids(final)), next(h5ad), index="Metadata_well_id")
            table_to_h5ad(consensus, next(h5ad), index="Metadata_perturbation")
        last = record["steps"][record["final_step"]]
        log.info(
            "%s/%s: %s, activity mAP %.3f (%.0f%% active), plate mAP %.3f (chance %.3f)",
            *(model, layer, record["final_step"], last["activity_map"], 100 * last["activity_fraction"]),
            *(last["plate_map"], last["plate_chance"]),
        )


run(snakemake, main)  # noqa: F821
