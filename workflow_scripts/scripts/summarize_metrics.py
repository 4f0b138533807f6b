"""Rule summarize_metrics: one row per (model, layer) and a bar chart."""

import json

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_csv
from workflow_scripts.metrics.summary import summary_row
from workflow_scripts.plots import plot_metric_bars
from workflow_scripts.runner import run


def main(smk):
    rows = [summary_row(json.load(open(path))) for path in smk.input]
    summary = pd.DataFrame(rows)
    write_csv(smk.output.table, summary)
    plot_metric_bars(
        summary,
        "logreg_accuracy_grouped",
        smk.output.plot,
        title=f"{smk.wildcards.dataset}: logistic regression, groups held out",
    )


run(snakemake, main)  # noqa: F821
