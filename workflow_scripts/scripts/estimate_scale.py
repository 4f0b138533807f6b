"""Rule estimate_scale: the typical nucleus diameter of a dataset, from a sample of its fields,
and the segmentation and crop sizes that follow from it (results/<ds>/qc/scale.json)."""

import logging

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np

from workflow_scripts.io import read_fields, write_json
from workflow_scripts.runner import run
from workflow_scripts.scale import AUTO, estimate_scale, resolve_crop, resolve_segmentation

log = logging.getLogger("estimate_scale")


def main(smk):
    channel = int(smk.params.nucleus_channel)
    want = int(smk.params.n_fields)
    per_shard = max(1, -(-want // max(len(smk.input.fields), 1)))  # ceil: fill the sample
    nuclear, names = [], []
    for path in smk.input.fields:
        images, _ = read_fields(path)
        ids = np.load(path)["image_ids"]
        # fields spread over the shard, not just its first ones
        for i in np.unique(np.linspace(0, len(images) - 1, min(per_shard, len(images))).round().astype(int)):
            if len(nuclear) < want:
                nuclear.append(np.asarray(images[i][channel]))
                names.append(str(ids[i]))
    if not nuclear:
        raise ValueError(f"dataset {smk.wildcards.dataset}: no field to estimate the nucleus scale from")
    min_snr = smk.params.segmentation.get("min_snr", AUTO)  # auto: estimate_scale's default
    scale = estimate_scale(nuclear, **({} if min_snr == AUTO else {"min_snr": float(min_snr)}))
    params, info = resolve_segmentation(dict(smk.params.segmentation), scale)
    crop = resolve_crop(dict(smk.params.crop), info["diameter"])
    record = {
        "dataset": smk.wildcards.dataset,
        "diameter": info["diameter"],
        "estimated_diameter": scale["diameter"],
        "threshold_level": scale["threshold_level"],
        "sample": [{"image": n, "diameter": d} for n, d in zip(names, scale["field_diameters"], strict=True)],
        "segmentation": params,
        "source": info["source"],
        "crop": crop,
    }
    write_json(smk.output.scale, record)
    log.info(
        "dataset %s: nucleus diameter %.1f px (%s; estimated %.1f px over %d fields); segmentation %s; crop %s",
        smk.wildcards.dataset,
        info["diameter"],
        info["source"]["diameter"],
        scale["diameter"],
        len(nuclear),
        params,
        crop,
    )
    if scale["n_without_signal"] and np.isfinite(scale["diameter"]):
        log.info(
            "dataset %s: %d sampled field(s) hold no nuclear signal (left out of the estimate): %s",
            smk.wildcards.dataset,
            scale["n_without_signal"],
            ", ".join(n for n, d in zip(names, scale["field_diameters"], strict=True) if not np.isfinite(d)),
        )
    if not np.isfinite(scale["diameter"]):
        log.warning(
            "dataset %s: no nucleus found in the %d sampled fields (%s); the scale falls back to %.0f px. "
            "Check the nucleus channel, or set segmentation.diameter.",
            smk.wildcards.dataset,
            len(nuclear),
            ", ".join(names[:5]),
            info["diameter"],
        )


run(snakemake, main)  # noqa: F821
