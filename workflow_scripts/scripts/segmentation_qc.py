"""Rule segmentation_qc: per-field segmentation QC of a dataset (objects, foreground kept,
contrast, own scale, flags), its warnings, and the report figure."""

import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_csv, write_json
from workflow_scripts.plots import plot_segmentation_qc
from workflow_scripts.runner import run
from workflow_scripts.scale import dataset_warnings, field_flags

log = logging.getLogger("segmentation_qc")

COLUMNS = [
    "Metadata_image",
    "n_objects",
    "n_crops",
    "diameter",
    "snr",
    "foreground_px",
    "kept_px",
    "kept_fraction",
    "n_too_small",
    "n_too_large",
    "background_corrected",
    "flags",
]


def main(smk):
    scale = json.loads(Path(smk.input.scale).read_text())
    records = [f for path in smk.input.qc for f in json.loads(Path(path).read_text()).get("fields", [])]
    rows = []
    for qc in records:
        flags = field_flags(
            qc,
            scale["diameter"],
            tolerance=float(smk.params.scale_tolerance),
            max_dropped_fraction=float(smk.params.max_dropped_fraction),
        )
        foreground = qc["foreground_px"]
        rows.append(
            {
                "Metadata_image": qc["image"],
                **{k: qc[k] for k in ("n_objects", "n_crops", "diameter", "snr", "foreground_px", "kept_px")},
                "kept_fraction": qc["kept_px"] / foreground if foreground else float("nan"),
                "n_too_small": qc["n_too_small"],
                "n_too_large": qc["n_too_large"],
                "background_corrected": qc["background_corrected"],
                "flags": ";".join(flags),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    info = {"diameter": scale["diameter"], "source": scale["source"]}
    warnings = dataset_warnings(smk.wildcards.dataset, table, scale["segmentation"], info)
    for text in warnings:
        log.warning("%s", text)
    write_csv(smk.output.fields, table)
    flagged = table[table["flags"] != ""]
    write_json(
        smk.output.summary,
        {
            "dataset": smk.wildcards.dataset,
            "diameter": scale["diameter"],
            "diameter_source": scale["source"]["diameter"],
            "n_fields": int(len(table)),
            "n_objects": int(table["n_objects"].sum()),
            "kept_fraction": float(table["kept_px"].sum() / max(table["foreground_px"].sum(), 1.0)),
            "n_flagged_fields": int(len(flagged)),
            "flag_counts": {
                flag: int(table["flags"].str.split(";").apply(lambda f, flag=flag: flag in f).sum())
                for flag in ("low_contrast", "no_nuclei", "size_filters", "scale_mismatch")
            },
            "warnings": warnings,
        },
    )
    plot_segmentation_qc(table, scale, warnings, smk.output.figure, dataset=smk.wildcards.dataset)
    log.info("%d fields, %d flagged, %d warnings", len(table), len(flagged), len(warnings))


run(snakemake, main)  # noqa: F821
