"""Rule acquire_hpa: Human Protein Atlas gene XML -> composite images -> raw/fields.csv."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.runner import run
from workflow_scripts.sources.hpa import acquire_hpa


def main(smk):
    """Download the fields of the dataset's genes and write ``raw/fields.csv``.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input.genes`` (gene list), ``output[0]`` (the field table, kept under
        ``results/<dataset>/raw`` even when the images land in the dataset's ``path``) and
        ``params``: ``root`` (destination of the files), ``options`` (``base_url``,
        ``image_base_url``, ``max_genes``, ``max_images_per_gene``) and ``download``
        (``workers``, ``retries``, ``backoff``, ``timeout``).
    """
    opts = dict(smk.params.options)
    dl = dict(smk.params.download)
    # fields.csv is written last, only once every download succeeded: it marks completion.
    acquire_hpa(
        smk.input.genes,
        smk.params.root,
        base_url=opts.get("base_url", "https://www.proteinatlas.org"),
        image_base_url=opts.get("image_base_url"),
        max_genes=opts.get("max_genes"),
        max_images_per_gene=opts.get("max_images_per_gene"),
        workers=int(dl["workers"]),
        retries=int(dl["retries"]),
        backoff=float(dl["backoff"]),
        timeout=float(dl["timeout"]),
        fields_path=smk.output[0],
    )


run(snakemake, main)  # noqa: F821
