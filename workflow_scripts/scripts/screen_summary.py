"""Rule screen_summary: every table's screening metrics after each step, as a table and a panel."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.figures import plot_screen_steps
from workflow_scripts.io import write_csv
from workflow_scripts.metrics.report import read_results
from workflow_scripts.runner import run
from workflow_scripts.screen.run import summary_rows


def main(smk):
    """Write ``metrics/screen.csv`` and the report's screen panel.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input`` (the tables' screen JSON), ``output`` (``table``, ``plot``),
        ``params.families`` and ``wildcards.dataset``.
    """
    table = summary_rows(read_results(smk.input), dict(smk.params.families))
    write_csv(smk.output.table, table)
    plot_screen_steps(table, smk.output.plot, title=f"{smk.wildcards.dataset}: screening metrics by profiling step")


run(snakemake, main)  # noqa: F821
