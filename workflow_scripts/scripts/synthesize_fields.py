"""Rule synthesize_fields: one shard of the built-in synthetic dataset."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np

from workflow_scripts.io import write_fields, write_parquet
from workflow_scripts.runner import run
from workflow_scripts.sources.synthetic import generate_shard


def main(smk):
    """Simulate one shard of the synthetic dataset and write its fields and tables.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``wildcards.dataset``, ``output`` (``fields``, ``table``, ``objects``)
        and ``params``: ``seed``, ``indices`` (the shard's field indices) and ``options``
        (keywords of :func:`~workflow_scripts.sources.synthetic.generate_field`).
    """
    shard = generate_shard(int(smk.params.seed), list(smk.params.indices), **smk.params.options)
    fields = shard["fields"].copy()
    fields.insert(0, "Metadata_dataset", smk.wildcards.dataset)
    write_fields(
        smk.output.fields,
        shard["images"],
        np.asarray(fields["Metadata_image"], dtype=str),
        truth_labels=shard["truth_labels"],
    )
    write_parquet(smk.output.table, fields)
    write_parquet(smk.output.objects, shard["objects"])


run(snakemake, main)  # noqa: F821 (injected by Snakemake)
