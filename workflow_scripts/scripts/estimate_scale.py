"""Rule estimate_scale: the typical nucleus diameter of a dataset, and the sizes that follow.

The diameter is estimated on a sample of the dataset's fields; the segmentation and crop sizes
derived from it go to results/<ds>/qc/scale.json.
"""

import _bootstrap  # noqa: F401  (puts the package on sys.path)

from workflow_scripts.io import write_json
from workflow_scripts.runner import run
from workflow_scripts.scale import dataset_scale, sample_fields


def main(smk):
    """Sample the nuclear channel of the dataset's fields and write its scale record."""
    nuclear, names = sample_fields(list(smk.input.fields), int(smk.params.nucleus_channel), int(smk.params.n_fields))
    record = dataset_scale(
        smk.wildcards.dataset,
        nuclear,
        names,
        segmentation=dict(smk.params.segmentation),
        crop=dict(smk.params.crop),
    )
    write_json(smk.output.scale, record)


run(snakemake, main)  # noqa: F821
