"""Rule acquire_bbbc: BBBC-style zip archives + metadata CSVs -> extracted fields + raw/fields.csv."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.runner import run
from workflow_scripts.sources.bbbc import acquire_bbbc


def main(smk):
    """Download and unpack the dataset's archives and write ``raw/fields.csv``.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``output[0]`` (the field table, kept under ``results/<dataset>/raw`` even
        when the files land in the dataset's ``path``) and ``params``: ``root`` (destination
        of the files), ``options`` (``archives``, ``image_csv``, ``moa_csv``, ``channels``)
        and ``download`` (``workers``, ``retries``, ``backoff``, ``timeout``).
    """
    opts = dict(smk.params.options)
    dl = dict(smk.params.download)
    # fields.csv is written last, only once every download and extraction succeeded.
    acquire_bbbc(
        smk.params.root,
        archives=list(opts["archives"]),
        image_csv=list(opts["image_csv"]),
        moa_csv=opts.get("moa_csv"),
        channels={key: key for key in opts["channels"]},
        workers=int(dl["workers"]),
        retries=int(dl["retries"]),
        backoff=float(dl["backoff"]),
        timeout=float(dl["timeout"]),
        fields_path=smk.output[0],
    )


run(snakemake, main)  # noqa: F821
