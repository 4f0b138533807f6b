"""Rule segmentation_overlay: outlines of the segmented nuclei on the first fields."""

import json
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np

from workflow_scripts.figures import plot_segmentation_overlays
from workflow_scripts.io import read_fields
from workflow_scripts.runner import run
from workflow_scripts.segment import segment_nuclei


def main(smk):
    """Segment the first ``n_fields`` fields of a shard and draw their outlines.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's job: ``input.fields``, ``input.scale``, ``params.n_fields``,
        ``params.nucleus_channel``, ``params.channels`` (name and role per channel), and
        the figure as ``output[0]``.
    """
    images, _ = read_fields(smk.input.fields)
    images = images[: int(smk.params.n_fields)]
    names = [str(n) for n in np.load(smk.input.fields)["image_ids"][: len(images)]]
    params = json.loads(Path(smk.input.scale).read_text())["segmentation"]  # sizes of the dataset's scale
    nucleus = int(smk.params.nucleus_channel)
    labels = [segment_nuclei(img[nucleus], **params) for img in images]
    plot_segmentation_overlays(
        list(images),
        labels,
        names,
        smk.output[0],
        nucleus_channel=nucleus,
        channel_names=[c["name"] for c in smk.params.channels],
        channel_roles=[c["role"] for c in smk.params.channels],
    )


run(snakemake, main)  # noqa: F821
