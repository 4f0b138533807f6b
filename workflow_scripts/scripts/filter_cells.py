"""Rule filter_cells: QC per cell, minimum cells per group; every drop counted."""

import json
import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.filtering import filter_cells
from workflow_scripts.io import write_csv, write_parquet
from workflow_scripts.runner import run

log = logging.getLogger("filter_cells")


def main(smk):
    """Filter the cells of all shards; write the kept cells, the drop counts and skipped fields."""
    tables = [pd.read_parquet(path) for path in smk.input.tables]
    tables = [t for t in tables if len(t)]
    cells = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    qc = [json.load(open(path)) for path in smk.input.qc]
    skipped = pd.DataFrame(
        [f for r in qc for f in r.get("fields_skipped", [])], columns=["image", "reason", "message"]
    )
    write_csv(smk.output.skipped, skipped)
    for row in skipped.itertuples():
        log.warning("skipped field %s (%s): %s", row.image, row.reason, row.message)
    kept, drops = filter_cells(cells, qc, **smk.params.filter)
    if len(kept) == 0:
        raise ValueError(
            f"dataset {smk.wildcards.dataset}: no cells left after segmentation and filtering. "
            f"Drop counts:\n{drops.to_string(index=False)}"
        )
    write_csv(smk.output.drops, drops)
    write_parquet(smk.output.cells, kept)
    log.info("kept %d cells\n%s", len(kept), drops.to_string(index=False))


run(snakemake, main)  # noqa: F821
