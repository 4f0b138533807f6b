"""Rule summarize_metrics: the metric summary of a dataset's models, layers and baselines.

One row per (model, layer) and baseline, a ranking bar chart, one panel per metric, and an
HTML comparison table with the best value of each metric marked.
"""

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.figures import plot_confusion_matrices, plot_message, plot_metric_bars, plot_metric_grid
from workflow_scripts.io import atomic_path, write_csv
from workflow_scripts.metrics.report import NO_CONFUSION, build_report, read_results
from workflow_scripts.metrics.summary import LOWER_IS_BETTER, metric_columns
from workflow_scripts.runner import run


def main(smk):
    """Write the summary table, the ranking and metric charts, the page and the confusion figure.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input.metrics`` (the layers' metrics JSON) and ``input.screen`` (their
        screen records, for a dataset with a layout), ``output`` (``table``, ``plot``,
        ``grid``, ``html``, ``confusion``), ``params`` (``families``, ``normalize``,
        ``guided``) and ``wildcards`` (``dataset``).
    """
    dataset = smk.wildcards.dataset
    report = build_report(
        read_results(smk.input.metrics),
        dataset,
        families=dict(smk.params.families),
        normalize=dict(smk.params.normalize),
        guided=dict(smk.params.guided),
        screen=read_results(smk.input.screen),
    )
    summary = report.summary
    write_csv(smk.output.table, summary)
    plot_metric_bars(summary, report.metric, smk.output.plot, title=report.ranking_title)
    plot_metric_grid(summary, metric_columns(summary), smk.output.grid, lower_is_better=LOWER_IS_BETTER, title=dataset)
    with atomic_path(smk.output.html) as tmp:
        tmp.write_text(report.html)
    if report.confusion:
        plot_confusion_matrices(report.confusion, smk.output.confusion)
    else:
        plot_message(NO_CONFUSION, smk.output.confusion)


run(snakemake, main)  # noqa: F821
