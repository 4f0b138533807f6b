"""Rule train_model: train one configured model; write weights, config, history and plots."""

import hashlib
import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
import torch

from workflow_scripts.data import Normalizer, open_shards, source_for
from workflow_scripts.io import write_csv
from workflow_scripts.models.registry import architecture, build_model, save_trained
from workflow_scripts.plots import plot_learning_curve, plot_reconstruction_grid
from workflow_scripts.runner import run
from workflow_scripts.split import split_by_group
from workflow_scripts.tiles import channel_stats
from workflow_scripts.train import TrainSettings, fit, pick_device

log = logging.getLogger("train_model")
N_RECONSTRUCTIONS = 8


def _split(table, split, seed):
    is_val = split_by_group(table[split["by"]].astype(str), split["val_fraction"], seed)
    return table.loc[~is_val].reset_index(drop=True), table.loc[is_val].reset_index(drop=True)


def main(smk):
    params = dict(smk.params.model)
    seed = int(smk.params.seed)
    torch.set_num_threads(max(1, int(smk.threads)))
    cells = pd.read_parquet(smk.input.cells)
    cell_arrays = open_shards(smk.input.arrays)
    channels = cell_arrays.item_shape[0]
    identity = Normalizer([0.0] * channels, [1.0] * channels)

    if params["input"] == "tiles":
        table = pd.concat([pd.read_parquet(p) for p in smk.input.tile_tables], ignore_index=True)
        arrays = open_shards(smk.input.tiles)
        stats = json.loads(Path(smk.input.tile_stats).read_text())
        train, val = _split(table, smk.params.split, seed)
    else:
        table, arrays = cells, cell_arrays
        train, val = _split(table, smk.params.split, seed)
        stats = channel_stats(source_for(train, arrays, identity).iter_raw())
    normalizer = Normalizer.from_stats(stats, params["likelihood"])
    log.info("%s: %d training and %d validation %s", smk.wildcards.model, len(train), len(val), params["input"])

    input_size = int(arrays.item_shape[-1])
    model = build_model(params["family"], channels, input_size, params)
    settings = TrainSettings(
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        patience=params["patience"],
        augment=params["augment"],
        seed=seed,
    )
    # The checkpoint is reused only for the same config and the same training items.
    ident = hashlib.sha256()
    ident.update(json.dumps({"params": params, "seed": seed, "split": smk.params.split}, sort_keys=True).encode())
    ident.update("\n".join(map(str, train["Metadata_shard"] + ":" + train["Metadata_row"].astype(str))).encode())
    device = pick_device()
    result = fit(
        model,
        source_for(train, arrays, normalizer),
        source_for(val, arrays, normalizer),
        settings,
        checkpoint=smk.params.checkpoint,
        fingerprint=ident.hexdigest(),
        device=device,
    )

    model.load_state_dict(result.best_state)
    model.to("cpu").eval()
    save_trained(
        model,
        result.best_state,
        smk.output.weights,
        smk.output.config,
        {
            "family": params["family"],
            "in_channels": channels,
            "input_size": input_size,
            "params": params,
            "architecture": architecture(params["family"], params),
            "normalization": normalizer.__dict__,
            "channels": list(smk.params.channels),
            "trained_on": {"dataset": smk.wildcards.dataset, "input": params["input"]},
            "n_train": int(len(train)),
            "n_val": int(len(val)),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "seed": seed,
            "device": device.type,
        },
    )
    write_csv(smk.output.history, result.history)
    plot_learning_curve(result.history, smk.output.curve, title=f"{smk.wildcards.model} ({params['family']})")

    val_source = source_for(val, arrays, normalizer)
    index = np.arange(min(N_RECONSTRUCTIONS, len(val_source)))
    with torch.no_grad():
        recon = model.reconstruct(torch.from_numpy(val_source.batch(index))).numpy()
    plot_reconstruction_grid(
        val_source.raw(index),
        normalizer.invert(recon),
        smk.output.recon,
        channel_names=[c["name"] for c in smk.params.channels],
        title=f"{smk.wildcards.model}: validation {params['input']} and reconstructions",
    )
    # Training finished and its outputs are written: the resume point is no longer needed.
    Path(smk.params.checkpoint).unlink(missing_ok=True)


run(snakemake, main)  # noqa: F821
