"""Rule summarize_metrics: one row per (model, layer) and a bar chart."""

import json

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import write_csv
from workflow_scripts.metrics.summary import RANKING_TITLES, ranking_metric, summary_row
from workflow_scripts.plots import plot_metric_bars
from workflow_scripts.runner import run


def main(smk):
    rows = [summary_row(json.load(open(path))) for path in smk.input]
    summary = pd.DataFrame(rows)
    write_csv(smk.output.table, summary)
    metric = ranking_metric(summary)
    plot_metric_bars(summary, metric, smk.output.plot, title=f"{smk.wildcards.dataset}: {RANKING_TITLES[metric]}")


run(snakemake, main)  # noqa: F821
