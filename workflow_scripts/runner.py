"""Thin glue for the scripts the rules run: log to the rule's log file, name failures."""

from __future__ import annotations

import logging
import sys


def run(snakemake, main) -> None:
    """Call ``main(snakemake)`` with logging sent to the rule's log file (and stderr).

    An exception is written to the log with its traceback and re-raised, so Snakemake marks
    the job failed and removes its outputs.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    try:
        main(snakemake)
    except Exception:
        logging.getLogger(main.__module__).exception("rule %s failed", snakemake.rule)
        raise
