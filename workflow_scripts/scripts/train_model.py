"""Rule train_model: train one configured model; write weights, config, history and plots."""

import hashlib
import json
import logging
from pathlib import Path

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import numpy as np
import pandas as pd
import torch

from workflow_scripts.data import PerCellMinMax, make_normalizer, open_shards, source_for
from workflow_scripts.feedback import GuidedSource, read_feedback
from workflow_scripts.io import write_csv
from workflow_scripts.models.registry import architecture, build_model, save_trained
from workflow_scripts.pairs import PairedSource
from workflow_scripts.plots import plot_learning_curve, plot_reconstruction_grid
from workflow_scripts.runner import run
from workflow_scripts.split import split_by_group
from workflow_scripts.train import TrainSettings, fit, pick_device, resolve_precision

log = logging.getLogger("train_model")
N_RECONSTRUCTIONS = 8


def _split(table, split, seed):
    is_val = split_by_group(table[split["by"]].astype(str), split["val_fraction"], seed)
    return table.loc[~is_val].reset_index(drop=True), table.loc[is_val].reset_index(drop=True)


def _sources(params, smk, seed):
    """Training and validation sources, the normaliser, and what a source item is."""
    cells = pd.read_parquet(smk.input.cells)
    if params["input"] == "tiles":
        table = pd.concat([pd.read_parquet(p) for p in smk.input.tile_tables], ignore_index=True)
        arrays = open_shards(smk.input.tiles)
        stats = json.loads(Path(smk.input.tile_stats).read_text())
    else:
        table, arrays = cells, open_shards(smk.input.arrays)
        stats = None
    train, val = _split(table, smk.params.split, seed)
    kind = params["normalize"]
    if kind == "cell" and params["family"] == "paired_inpainting":
        normalizer = PerCellMinMax()  # the reference's per-cell scaling
    else:
        normalizer = make_normalizer(kind, train, arrays, likelihood=params.get("likelihood", "gaussian"), stats=stats)
    if params.get("pair_within"):
        # Paired inpainting, contrastive views from two cells of a group: pairs within the
        # training (validation) split only.
        column = params["pair_within"]
        make = lambda t: PairedSource(arrays, t, column, seed=seed, per_cell_scaling=False, normalizer=normalizer)  # noqa: E731
        train_source, val_source = make(train), make(val)
        log.info("pairs within %s: %d unpaired training cells left out", column, train_source.n_unpaired)
        return train_source, val_source, normalizer, arrays, train
    train_source, val_source = source_for(train, arrays, normalizer), source_for(val, arrays, normalizer)
    if params.get("guided"):
        train_source, val_source = _guided(params, smk, train, val, train_source, val_source)
    return train_source, val_source, normalizer, arrays, train


def _guided(params, smk, train, val, train_source, val_source):
    """Wrap the sources so batches carry the feedback of their cells (workflow_scripts.feedback)."""
    name = smk.wildcards.model
    if params["input"] != "cells":
        raise ValueError(f"models.{name}.guided: feedback names cells; expected input: cells, got {params['input']!r}")
    if not params.get("feedback"):
        raise ValueError(f"models.{name}.guided: true needs models.{name}.feedback (a CSV exported by the explorer)")
    both = pd.concat([train, val], ignore_index=True)
    feedback = read_feedback(smk.input.feedback, both)
    params["guided_labels"] = len(feedback.classes)
    params["feedback_classes"] = feedback.classes
    log.info(
        "feedback %s: %d labelled cells (%s), %d anchored",
        smk.input.feedback,
        feedback.n_labelled,
        ", ".join(feedback.classes) or "no labels",
        feedback.n_anchored,
    )
    n = len(train)
    return (
        GuidedSource(train_source, feedback.subset(np.arange(n))),
        GuidedSource(val_source, feedback.subset(np.arange(n, len(both)))),
    )


def _shown(model) -> str:
    """What ``model.reconstruct`` returns, for the figure title (a contrastive model has no
    decoder and shows one augmented view)."""
    return getattr(model, "reconstruction_name", "reconstructions")


def _reconstruction_figure(model, val_source, normalizer, smk, params):
    index = np.arange(min(N_RECONSTRUCTIONS, len(val_source)))
    batch = val_source.batch(index)
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()} if isinstance(batch, dict) else torch.from_numpy(batch)
    names = [c["name"] for c in smk.params.channels]
    with torch.no_grad():
        recon = model.reconstruct(tensors).float().numpy()
    if hasattr(model, "reconstruction_target"):
        # Inpainting: the true protein channel of cell B beside its prediction.
        with torch.no_grad():
            original = model.reconstruction_target(tensors).float().numpy()
        names = [names[model.protein_channel]]
        title = f"{smk.wildcards.model}: protein of validation cells and its inpainting"
    elif normalizer.invertible:
        original, recon = val_source.raw(index), normalizer.invert(recon)
        title = f"{smk.wildcards.model}: validation {params['input']} and {_shown(model)}"
    else:  # per-cell or per-field scaling: both sides as the model saw them
        original = batch if not isinstance(batch, dict) else batch["source"] if "source" in batch else batch["x"]
        title = f"{smk.wildcards.model}: validation {params['input']} (normalize: {params['normalize']}) and {_shown(model)}"
    plot_reconstruction_grid(original, recon, smk.output.recon, channel_names=names, title=title)


def main(smk):
    params = dict(smk.params.model)
    seed = int(smk.params.seed)
    torch.set_num_threads(max(1, int(smk.threads)))
    train_source, val_source, normalizer, arrays, train = _sources(params, smk, seed)
    log.info(
        "%s: %d training and %d validation %s, normalize: %s",
        smk.wildcards.model,
        len(train_source),
        len(val_source),
        params["input"],
        params["normalize"],
    )

    channels, input_size = arrays.item_shape[0], int(arrays.item_shape[-1])
    model = build_model(params["family"], channels, input_size, params, list(smk.params.channels), seed=seed)
    settings = TrainSettings(
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        patience=params["patience"],
        augment=params["augment"],
        seed=seed,
        compile=params["compile"],
        tensorboard_dir=smk.params.tensorboard,
        precision=params["precision"],
        schedule=params["schedule"],
    )
    # The checkpoint is reused only for the same config and the same training items.
    ident = hashlib.sha256()
    ident.update(json.dumps({"params": params, "seed": seed, "split": smk.params.split}, sort_keys=True).encode())
    ident.update("\n".join(train["Metadata_shard"] + ":" + train["Metadata_row"].astype(str)).encode())
    if params.get("guided"):
        ident.update(Path(smk.input.feedback).read_bytes())
    device = pick_device()
    result = fit(
        model,
        train_source,
        val_source,
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
            "normalization": normalizer.to_record(),
            "channels": list(smk.params.channels),
            "trained_on": {"dataset": smk.wildcards.dataset, "input": params["input"]},
            "n_train": len(train_source),
            "n_val": len(val_source),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "seed": seed,
            "device": device.type,
            "precision": resolve_precision(params["precision"], device),
            # resident (crops held on the training device) or prefetch (background thread)
            "data_path": result.extra.get("data_path"),
            "n_parameters": sum(p.numel() for p in model.parameters()),
        },
    )
    write_csv(smk.output.history, result.history)
    plot_learning_curve(result.history, smk.output.curve, title=f"{smk.wildcards.model} ({params['family']})")
    _reconstruction_figure(model, val_source, normalizer, smk, params)
    # Training finished and its outputs are written: the resume point is no longer needed.
    Path(smk.params.checkpoint).unlink(missing_ok=True)


run(snakemake, main)  # noqa: F821
