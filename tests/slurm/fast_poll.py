"""`python tests/slurm/fast_poll.py ARGS...` runs `snakemake ARGS...` with one change for the
tests: the SLURM executor plugin checks its jobs' states (sacct) at least every MAX_SECONDS.

snakemake-executor-plugin-slurm 2.x waits `--slurm-init-seconds-before-status-checks` after a
round of status checks in which a job finished, and 10 s longer after each round in which none
did (up to 180 s), hard-coded. A job of 30 s is then noticed about 33 s after it started, one
of 38 s after 64 s: on the small test workflow that slack, not the work, took most of the time.
Everything else (sbatch, the jobs, sacct) is the plugin's own; the jobs themselves run the
plain `python -m snakemake`.
"""

import sys

import snakemake_executor_plugin_slurm as slurm_plugin
from snakemake.cli import main
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

MAX_SECONDS = 2


def _capped(self, seconds):
    self._next_seconds_between_status_checks = None if seconds is None else min(seconds, MAX_SECONDS)


slurm_plugin.Executor.next_seconds_between_status_checks = property(
    RemoteExecutor.next_seconds_between_status_checks.fget, _capped
)

if __name__ == "__main__":
    sys.argv[0] = "snakemake"
    sys.exit(main())
