"""Rule download_manifest: every file of a URL manifest, verified, into the dataset folder."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.download import download_all, read_manifest
from workflow_scripts.io import write_json
from workflow_scripts.runner import run

log = logging.getLogger("download_manifest")


def main(smk):
    """Download every file of the manifest and write a JSON record of the download.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input.manifest``, ``output[0]`` (the record) and ``params``: ``root``
        (destination) and ``download`` (``workers``, ``retries``, ``backoff``,
        ``timeout``).
    """
    entries = read_manifest(smk.input.manifest)
    opts = dict(smk.params.download)
    report = download_all(
        entries,
        smk.params.root,
        workers=int(opts["workers"]),
        retries=int(opts["retries"]),
        backoff=float(opts["backoff"]),
        timeout=float(opts["timeout"]),
    )
    report.raise_for_failures()  # download_all has logged each failure and the summary
    log.info("%s", report.summary())
    write_json(
        smk.output[0],
        {
            "manifest": str(smk.input.manifest),
            "root": str(smk.params.root),
            "files": len(entries),
            "downloaded": len(report.done),
            "already_complete": len(report.skipped),
        },
    )


run(snakemake, main)  # noqa: F821
