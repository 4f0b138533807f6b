"""Rule segmentation_qc: per-field segmentation QC of a dataset, its warnings, and the figure.

Per field: objects, foreground kept, contrast, own scale and flags.
"""

import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.figures import plot_segmentation_qc
from workflow_scripts.io import write_csv, write_json
from workflow_scripts.runner import run
from workflow_scripts.scale import segmentation_report

log = logging.getLogger("segmentation_qc")


def main(smk):
    """Tabulate the QC of every field of the dataset; write the table, summary and figure."""
    scale = json.loads(Path(smk.input.scale).read_text())
    records = [f for path in smk.input.qc for f in json.loads(Path(path).read_text()).get("fields", [])]
    table, summary = segmentation_report(
        smk.wildcards.dataset,
        records,
        scale,
        tolerance=float(smk.params.scale_tolerance),
        max_dropped_fraction=float(smk.params.max_dropped_fraction),
    )
    warnings = summary["warnings"]
    for text in warnings:
        log.warning("%s", text)
    write_csv(smk.output.fields, table)
    write_json(smk.output.summary, summary)
    plot_segmentation_qc(table, scale, warnings, smk.output.figure, dataset=smk.wildcards.dataset)
    log.info("%d fields, %d flagged, %d warnings", len(table), summary["n_flagged_fields"], len(warnings))


run(snakemake, main)  # noqa: F821
