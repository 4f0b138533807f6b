"""Rule train_model: train one configured model; write weights, config, history and plots."""

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import torch

from workflow_scripts.runner import run
from workflow_scripts.training.job import TrainingInputs, TrainingJob, TrainingOutputs, train_job, write_outputs


def main(smk):
    """Train the configured model; write its weights, model.json, history and figures.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The job of rule ``train_model`` (rules/train.smk): its inputs, params and outputs.
    """
    torch.set_num_threads(max(1, int(smk.threads)))
    inputs = TrainingInputs(
        cells=smk.input.cells,
        arrays=list(smk.input.arrays),
        feedback=smk.input.get("feedback"),
        tiles=list(smk.input.get("tiles", [])),
        tile_tables=list(smk.input.get("tile_tables", [])),
        tile_stats=smk.input.get("tile_stats"),
    )
    job = TrainingJob(
        model=smk.wildcards.model,
        dataset=smk.wildcards.dataset,
        params=dict(smk.params.model),
        channels=list(smk.params.channels),
        split=smk.params.split,
        seed=int(smk.params.seed),
        inputs=inputs,
        checkpoint=smk.params.checkpoint,
        tensorboard=smk.params.tensorboard,
    )
    trained = train_job(job)
    outputs = TrainingOutputs(
        weights=smk.output.weights,
        config=smk.output.config,
        history=smk.output.history,
        curve=smk.output.curve,
        recon=smk.output.recon,
    )
    write_outputs(trained, outputs)


run(snakemake, main)  # noqa: F821
