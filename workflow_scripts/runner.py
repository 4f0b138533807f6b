"""Thin glue for the scripts the rules run: log to the rule's log file, name failures."""

from __future__ import annotations

import logging
import os
import sys
import traceback

#: Errors that report bad input, configuration or files: their message names the file, key or
#: value and what was expected, so the user sees that message and no traceback (which is kept
#: in ``<log>.traceback``, for a bug report). Anything else is a bug and shows its traceback.
USER_ERRORS = (ValueError, OSError)


def _limit_threads(threads) -> None:
    """Keep the job to its ``threads``.

    OpenCV, the BLAS and OpenMP pools (numpy, scipy, scikit-learn), numba (UMAP) and torch each
    start one thread per core by default, and Snakemake runs several jobs side by side on the
    cores it was given (``snakemake`` sets these for ``shell:`` rules only, not for ``script:``
    rules). Scripts that want other torch threads set them after this.
    """
    threads = max(1, int(threads or 1))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)  # pools created from now on
    try:  # scikit-learn's dependency, in every environment that has scikit-learn
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(limits=threads)  # pools already loaded (numpy's BLAS at import)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def run(snakemake, main) -> None:
    """Call ``main(snakemake)`` with logging sent to the rule's log file (and stderr).

    A failure exits non-zero, so Snakemake marks the job failed and removes its outputs.

    Parameters
    ----------
    snakemake : snakemake.script.Snakemake
        The object Snakemake gives a ``script:`` rule (``log``, ``threads``, ``rule``, ...).
    main : callable
        The script's entry point, called with ``snakemake``.

    Raises
    ------
    SystemExit
        With status 1 after a :data:`USER_ERRORS` error, logged without its traceback.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    file_handler = None
    if snakemake.log:
        file_handler = logging.FileHandler(snakemake.log[0], mode="w")
        handlers.append(file_handler)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger(main.__module__)
    _limit_threads(getattr(snakemake, "threads", 1))
    try:
        main(snakemake)
    except USER_ERRORS as exc:
        where = ""
        if file_handler is not None:
            # Beside the log, not in it: Snakemake shows a failed job's log to the user.
            trace = f"{snakemake.log[0]}.traceback"
            with open(trace, "w") as out:
                out.write(traceback.format_exc())
            where = f" (traceback for a bug report: {trace})"
        log.error("rule %s failed: %s: %s%s", snakemake.rule, type(exc).__name__, exc, where)
        sys.exit(1)
    except Exception:
        log.exception("rule %s failed", snakemake.rule)
        raise
