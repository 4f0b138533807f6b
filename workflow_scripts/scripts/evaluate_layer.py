"""Rules evaluate_<model>: every metric of each layer's feature table, one JSON per layer.

The tables are a model's layers or a baseline's.
"""

import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd
import torch

from workflow_scripts.io import write_json
from workflow_scripts.metrics.suite import evaluate_layer, load_pixel_space
from workflow_scripts.runner import run

log = logging.getLogger("evaluate_layer")


def main(smk):
    """Evaluate each input feature table on the dataset's pixel space; write its metrics JSON.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The rule's ``input`` (``pixels``, ``features``), ``output`` (one JSON per table, at
        ``<model>/<layer>.json``), ``params`` (``metrics``, ``seed``) and ``wildcards``.
    """
    cfg, seed = dict(smk.params.metrics), int(smk.params.seed)
    # The MLP and MI critics are tiny: one torch thread is faster than two (measured).
    torch.set_num_threads(1)
    space = load_pixel_space(smk.input.pixels, seed)
    for features_path, output in zip(smk.input.features, smk.output):
        model, layer = Path(output).parent.name, Path(output).stem
        result = evaluate_layer(
            pd.read_parquet(features_path),
            space,
            cfg,
            seed=seed,
            dataset=smk.wildcards.dataset,
            model=model,
            layer=layer,
            source=features_path,
        )
        accuracy = [result[probe]["accuracy_mean"] for probe in ("logreg_grouped", "logreg_stratified")]
        log.info("%s/%s: grouped acc %.3f, stratified acc %.3f", model, layer, *accuracy)
        write_json(output, result)


run(snakemake, main)  # noqa: F821
