"""One configured model trained end to end: what rule ``train_model`` runs.

:func:`train_job` splits the items by group, builds the batch streams the model family reads
(:func:`make_streams`), builds the model, fingerprints the config and data (a checkpoint of
another fingerprint is not resumed, :func:`fingerprint`) and trains
(:func:`~workflow_scripts.training.loop.fit`); :func:`write_outputs` writes the weights,
model.json, the history, the learning curve and the reconstructions figure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workflow_scripts.data import PerCellMinMax, ShardedArrays, make_normalizer, open_shards
from workflow_scripts.figures import plot_learning_curve, plot_reconstruction_grid
from workflow_scripts.io import write_csv
from workflow_scripts.models.registry import architecture, build_model, save_trained
from workflow_scripts.split import split_by_group
from workflow_scripts.tiles import stitch_tiles
from workflow_scripts.training.device import pick_device
from workflow_scripts.training.guided import Feedback, GuidedSource, read_feedback
from workflow_scripts.training.loop import TrainResult, TrainSettings, fit, resolve_precision
from workflow_scripts.training.pairs import PairedSource
from workflow_scripts.training.streams import TrainingSource, source_for

log = logging.getLogger(__name__)

#: Validation items shown in the reconstructions figure.
N_RECONSTRUCTIONS = 8


@dataclass(frozen=True)
class TrainingInputs:
    """The input files of rule ``train_model`` (``train_inputs`` in rules/common.smk).

    Parameters
    ----------
    cells : str
        The cell table (parquet).
    arrays : sequence of str
        The cell crop shards.
    feedback : str, optional
        The expert feedback CSV of a guided model.
    tiles : sequence of str
        The tile shards of a tile model.
    tile_tables : sequence of str
        Its tile tables (parquet).
    tile_stats : str, optional
        The tiles' per-channel statistics (JSON) of a tile model.
    """

    cells: str
    arrays: Sequence[str]
    feedback: str | None = None
    tiles: Sequence[str] = ()
    tile_tables: Sequence[str] = ()
    tile_stats: str | None = None


@dataclass(frozen=True)
class TrainingOutputs:
    """The output files of rule ``train_model``.

    Parameters
    ----------
    weights : str
        The best weights (safetensors).
    config : str
        model.json.
    history : str
        The history CSV.
    curve : str
        The learning-curve figure.
    recon : str
        The reconstructions figure.
    """

    weights: str
    config: str
    history: str
    curve: str
    recon: str


@dataclass
class TrainingJob:
    """One model to train, as the workflow configures it.

    Parameters
    ----------
    model : str
        The model's name (``models.<name>``).
    dataset : str
        The dataset's name.
    params : dict
        The resolved model entry (:func:`workflow_scripts.models.spec.resolve_model`).
    channels : list of dict
        Name and role of each channel.
    split : dict
        ``by`` (the group column) and ``val_fraction`` (:func:`split_table`).
    seed : int
        The workflow's seed.
    inputs : TrainingInputs
        The input files.
    checkpoint : str
        Where training saves its resume point.
    tensorboard : str, optional
        TensorBoard log folder.
    """

    model: str
    dataset: str
    params: dict
    channels: list
    split: dict
    seed: int
    inputs: TrainingInputs
    checkpoint: str
    tensorboard: str | None = None


@dataclass
class Streams:
    """The batch streams of a job and what they were made from.

    Parameters
    ----------
    train, val : TrainingSource
        The training and validation streams.
    normalizer : object
        The normalisation applied on read (its ``to_record`` goes to model.json).
    arrays : ShardedArrays
        The shards read.
    table : DataFrame
        The training split's items.
    feedback : Feedback, optional
        The expert feedback of a guided model.
    """

    train: TrainingSource
    val: TrainingSource
    normalizer: object
    arrays: ShardedArrays
    table: pd.DataFrame
    feedback: Feedback | None = None


@dataclass
class TrainedModel:
    """A trained model (best weights, on the CPU, in eval mode) and what to write about it.

    Parameters
    ----------
    job : TrainingJob
        The job.
    model : torch.nn.Module
        The model.
    result : TrainResult
        What :func:`~workflow_scripts.training.loop.fit` returned.
    streams : Streams
        The streams it trained on.
    record : dict
        model.json's content (besides the layers).
    """

    job: TrainingJob
    model: torch.nn.Module
    result: TrainResult
    streams: Streams
    record: dict


def split_table(table: pd.DataFrame, split: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split items into training and validation by whole groups (:func:`~workflow_scripts.split.split_by_group`).

    Parameters
    ----------
    table : DataFrame
        The items, with the column ``split["by"]``.
    split : dict
        ``by``: the group column; ``val_fraction``: the fraction of groups validated on.
    seed : int
        Seed of the split.

    Returns
    -------
    train, val : DataFrame
        The two parts, each in table order with a fresh index.

    Examples
    --------
    >>> table = pd.DataFrame({"Metadata_image": ["a", "a", "b", "c"], "x": [0, 1, 2, 3]})
    >>> train, val = split_table(table, {"by": "Metadata_image", "val_fraction": 0.3}, seed=0)
    >>> len(train) + len(val), set(train["Metadata_image"]) & set(val["Metadata_image"])
    (4, set())
    """
    is_val = split_by_group(table[split["by"]].astype(str), split["val_fraction"], seed)
    return table.loc[~is_val].reset_index(drop=True), table.loc[is_val].reset_index(drop=True)


def make_streams(job: TrainingJob) -> Streams:
    """Build the training and validation streams of a job.

    The items are the cells or (``input: tiles``) the tiles, split by :func:`split_table`.
    The normaliser is that of ``normalize`` fitted on the training split
    (:func:`~workflow_scripts.data.make_normalizer`; the tiles' statistics for tiles), except
    that paired inpainting with ``normalize: cell`` scales each cell by its own min and max as
    the reference does. Then:

    * ``pair_within``: pairs of cells of that column's groups
      (:class:`~workflow_scripts.training.pairs.PairedSource`), within each split;
    * ``guided``: batches that carry the expert feedback of their cells
      (:class:`~workflow_scripts.training.guided.GuidedSource`);
    * otherwise plain streams (:func:`~workflow_scripts.training.streams.source_for`).

    Parameters
    ----------
    job : TrainingJob
        The job.

    Returns
    -------
    Streams
        The streams, the normaliser, the shards, the training items and any feedback.

    Raises
    ------
    ValueError
        For a guided model without feedback or on tiles, and for bad data (missing columns,
        no pairable cells, a bad feedback file).
    """
    params = job.params
    table, arrays, stats = _items(job.inputs, params["input"])
    train, val = split_table(table, job.split, job.seed)
    normalizer = _normalizer(params, train, arrays, stats)
    if params.get("pair_within"):
        # Paired inpainting, contrastive views from two cells of a group: pairs within the
        # training (validation) split only.
        column = params["pair_within"]
        train_source, val_source = (
            PairedSource(arrays, part, column, seed=job.seed, per_cell_scaling=False, normalizer=normalizer)
            for part in (train, val)
        )
        log.info("pairs within %s: %d unpaired training cells left out", column, train_source.n_unpaired)
        return Streams(train_source, val_source, normalizer, arrays, train)
    train_source, val_source = source_for(train, arrays, normalizer), source_for(val, arrays, normalizer)
    streams = Streams(train_source, val_source, normalizer, arrays, train)
    if params.get("guided"):
        _guide(streams, job, val)
    return streams


def _items(inputs: TrainingInputs, kind: str) -> tuple[pd.DataFrame, ShardedArrays, dict | None]:
    """Read the items a model trains on: their table, their shards and (tiles) their statistics."""
    if kind == "tiles":
        table = pd.concat([pd.read_parquet(p) for p in inputs.tile_tables], ignore_index=True)
        return table, open_shards(inputs.tiles), json.loads(Path(inputs.tile_stats).read_text())
    return pd.read_parquet(inputs.cells), open_shards(inputs.arrays), None


def _normalizer(params: dict, train: pd.DataFrame, arrays: ShardedArrays, stats: dict | None):
    """Return the normaliser of ``params["normalize"]`` fitted on the training items."""
    kind = params["normalize"]
    if kind == "cell" and params["family"] == "paired_inpainting":
        return PerCellMinMax()  # the reference's per-cell scaling
    return make_normalizer(kind, train, arrays, likelihood=params.get("likelihood", "gaussian"), stats=stats)


def _guide(streams: Streams, job: TrainingJob, val: pd.DataFrame) -> None:
    """Wrap both streams so that batches carry the feedback of their cells."""
    name, params = job.model, job.params
    if params["input"] != "cells":
        raise ValueError(f"models.{name}.guided: feedback names cells; expected input: cells, got {params['input']!r}")
    if not params.get("feedback"):
        raise ValueError(f"models.{name}.guided: true needs models.{name}.feedback (a CSV exported by the explorer)")
    both = pd.concat([streams.table, val], ignore_index=True)
    feedback = read_feedback(job.inputs.feedback, both)
    log.info(
        "feedback %s: %d labelled cells (%s), %d anchored",
        job.inputs.feedback,
        feedback.n_labelled,
        ", ".join(feedback.classes) or "no labels",
        feedback.n_anchored,
    )
    n = len(streams.table)
    streams.train = GuidedSource(streams.train, feedback.subset(np.arange(n)))
    streams.val = GuidedSource(streams.val, feedback.subset(np.arange(n, len(both))))
    streams.feedback = feedback


def trained_params(params: dict, feedback: Feedback | None) -> dict:
    """Complete a model entry with what training learns from the data.

    A guided model records its feedback classes: ``guided_labels`` (their number, which sizes
    the label head) and ``feedback_classes``.

    Parameters
    ----------
    params : dict
        The resolved model entry.
    feedback : Feedback, optional
        The expert feedback (None: the entry as it is).

    Returns
    -------
    dict
        The entry to build, fingerprint and record the model with.

    Examples
    --------
    >>> trained_params({"family": "vae", "guided_labels": 0}, None)
    {'family': 'vae', 'guided_labels': 0}
    """
    if feedback is None:
        return params
    return {**params, "guided_labels": len(feedback.classes), "feedback_classes": feedback.classes}


def fingerprint(
    params: dict, seed: int, split: dict, train: pd.DataFrame, feedback: str | os.PathLike | None = None
) -> str:
    """Identify a training run: the same for the same config and training items, else not.

    A checkpoint is resumed only by a run of the same fingerprint.

    Parameters
    ----------
    params : dict
        The model entry (:func:`trained_params`).
    seed : int
        The seed.
    split : dict
        The split config.
    train : DataFrame
        The training items (``Metadata_shard``, ``Metadata_row``), in order.
    feedback : str or path, optional
        The feedback CSV of a guided model: its bytes count too.

    Returns
    -------
    str
        A SHA-256 hex digest.

    Examples
    --------
    >>> items = pd.DataFrame({"Metadata_shard": ["s0", "s0"], "Metadata_row": [0, 1]})
    >>> a = fingerprint({"lr": 0.001}, 0, {"by": "Metadata_image"}, items)
    >>> a == fingerprint({"lr": 0.001}, 0, {"by": "Metadata_image"}, items.copy())
    True
    >>> a == fingerprint({"lr": 0.01}, 0, {"by": "Metadata_image"}, items)
    False
    """
    ident = hashlib.sha256()
    ident.update(json.dumps({"params": params, "seed": seed, "split": split}, sort_keys=True).encode())
    ident.update("\n".join(train["Metadata_shard"] + ":" + train["Metadata_row"].astype(str)).encode())
    if feedback is not None:
        ident.update(Path(feedback).read_bytes())
    return ident.hexdigest()


def train_settings(params: dict, seed: int, tensorboard: str | None = None) -> TrainSettings:
    """Read the training settings of a model entry.

    Parameters
    ----------
    params : dict
        The resolved model entry.
    seed : int
        The seed.
    tensorboard : str, optional
        TensorBoard log folder.

    Returns
    -------
    TrainSettings
        The settings.
    """
    return TrainSettings(
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        patience=params["patience"],
        augment=params["augment"],
        seed=seed,
        compile=params["compile"],
        tensorboard_dir=tensorboard,
        precision=params["precision"],
        schedule=params["schedule"],
    )


def train_job(job: TrainingJob) -> TrainedModel:
    """Train the model of a job; return it with its best weights loaded, on the CPU.

    Parameters
    ----------
    job : TrainingJob
        The job.

    Returns
    -------
    TrainedModel
        The model (eval mode), the training result, its streams and model.json's record.
    """
    streams = make_streams(job)
    params = trained_params(job.params, streams.feedback)
    log.info(
        "%s: %d training and %d validation %s, normalize: %s",
        job.model,
        len(streams.train),
        len(streams.val),
        params["input"],
        params["normalize"],
    )
    channels, input_size = streams.arrays.item_shape[0], int(streams.arrays.item_shape[-1])
    model = build_model(params["family"], channels, input_size, params, list(job.channels), seed=job.seed)
    # The checkpoint is reused only for the same config and the same training items.
    feedback = job.inputs.feedback if params.get("guided") else None
    ident = fingerprint(params, job.seed, job.split, streams.table, feedback)
    device = pick_device()
    settings = train_settings(params, job.seed, job.tensorboard)
    result = fit(
        model, streams.train, streams.val, settings, checkpoint=job.checkpoint, fingerprint=ident, device=device
    )
    model.load_state_dict(result.best_state)
    model.to("cpu").eval()
    record = _record(job, params, model, streams, result, device)
    return TrainedModel(job, model, result, streams, record)


def _record(job: TrainingJob, params: dict, model, streams: Streams, result: TrainResult, device) -> dict:
    """Build model.json's content: what was trained, on what, and how it went."""
    return {
        "family": params["family"],
        "in_channels": streams.arrays.item_shape[0],
        "input_size": int(streams.arrays.item_shape[-1]),
        "params": params,
        "architecture": architecture(params["family"], params),
        "normalization": streams.normalizer.to_record(),
        "channels": list(job.channels),
        "trained_on": {"dataset": job.dataset, "input": params["input"]},
        "n_train": len(streams.train),
        "n_val": len(streams.val),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "seed": job.seed,
        "device": device.type,
        "precision": resolve_precision(params["precision"], device),
        # resident (crops held on the training device) or prefetch (background thread)
        "data_path": result.extra.get("data_path"),
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }


def write_outputs(trained: TrainedModel, outputs: TrainingOutputs) -> None:
    """Write a trained model's weights, model.json, history and figures; drop its checkpoint.

    Parameters
    ----------
    trained : TrainedModel
        What :func:`train_job` returned.
    outputs : TrainingOutputs
        Where to write.
    """
    job, model = trained.job, trained.model
    save_trained(model, trained.result.best_state, outputs.weights, outputs.config, trained.record)
    write_csv(outputs.history, trained.result.history)
    plot_learning_curve(trained.result.history, outputs.curve, title=f"{job.model} ({trained.record['family']})")
    original, recon, names, title = reconstruction_panels(
        model,
        trained.streams.val,
        trained.streams.normalizer,
        name=job.model,
        channel_names=[c["name"] for c in job.channels],
        kind=job.params["input"],
        normalize=job.params["normalize"],
    )
    role = {c["name"]: c["role"] for c in job.channels}
    roles = [role[n] for n in names]
    plot_reconstruction_grid(original, recon, outputs.recon, channel_names=names, channel_roles=roles, title=title)
    # Training finished and its outputs are written: the resume point is no longer needed.
    Path(job.checkpoint).unlink(missing_ok=True)


def reconstruction_panels(
    model, val_source: TrainingSource, normalizer, *, name: str, channel_names: list[str], kind: str, normalize: str
) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Compute what the reconstructions figure shows: the first validation items and their outputs.

    Up to :data:`N_RECONSTRUCTIONS` items. An inpainting model shows the true protein channel
    of cell B beside its prediction; others show the items beside ``model.reconstruct`` (a
    contrastive model, which has no decoder, shows one augmented view), both in raw intensities
    where the normalisation has an inverse, else both as the model saw them.

    Parameters
    ----------
    model : CellModel
        The trained model (CPU, eval mode).
    val_source : TrainingSource
        The validation stream (numpy batches).
    normalizer : object
        Its normalisation (``invertible``, ``invert``).
    name : str
        The model's name, for the title.
    channel_names : list of str
        The name of each channel.
    kind : str
        What an item is (``cells`` or ``tiles``), for the title.
    normalize : str
        The ``normalize`` value, for the title where the items are shown normalised.

    Returns
    -------
    original, recon : ndarray of shape (n, C, H, W)
        The two rows of panels.
    names : list of str
        The channel names.
    title : str
        The figure's title.
    """
    index = np.arange(min(N_RECONSTRUCTIONS, len(val_source)))
    batch = val_source.batch(index)
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()} if isinstance(batch, dict) else torch.from_numpy(batch)
    names = list(channel_names)
    with torch.no_grad():
        recon = model.reconstruct(tensors).float().numpy()
    if hasattr(model, "reconstruction_target"):
        # Inpainting: the true protein channel of cell B beside its prediction.
        with torch.no_grad():
            original = model.reconstruction_target(tensors).float().numpy()
        title = f"{name}: protein of validation cells and its inpainting"
        return original, recon, [names[model.protein_channel]], title
    shown = getattr(model, "reconstruction_name", "reconstructions")
    if normalizer.invertible:
        return val_source.raw(index), normalizer.invert(recon), names, f"{name}: validation {kind} and {shown}"
    # Per-cell or per-field scaling: both sides as the model saw them.
    original = batch if not isinstance(batch, dict) else batch["source"] if "source" in batch else batch["x"]
    return original, recon, names, f"{name}: validation {kind} (normalize: {normalize}) and {shown}"


def stitched_validation_fields(
    model, normalizer, table: pd.DataFrame, arrays: ShardedArrays, stats: dict, n_fields: int, overlap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild the first validation fields of a tile model from its reconstructed tiles.

    Parameters
    ----------
    model : torch.nn.Module
        The trained tile model (``reconstruct``), in eval mode.
    normalizer : workflow_scripts.data.Normalizer
        Its input normalisation (from ``model.json``).
    table : pandas.DataFrame
        The tile tables (``Metadata_image``, ``Metadata_tile_y``, ``Metadata_tile_x``, the
        split column).
    arrays : workflow_scripts.data.ShardedArrays
        The tiles.
    stats : dict
        The split's record (``train_groups``, ``split_by``) from the tile statistics.
    n_fields : int
        Fields to rebuild, the first validation ones in table order.
    overlap : int
        ``tiling.overlap``.

    Returns
    -------
    tuple of numpy.ndarray
        Originals and reconstructions, (n_fields, C, H, W) each: raw intensities where the
        normalisation has an inverse, else both as the model saw them.
    """
    train_groups = set(stats["train_groups"])
    groups = table[stats["split_by"]].astype(str)
    images = list(dict.fromkeys(img for img, grp in zip(table["Metadata_image"], groups) if grp not in train_groups))
    originals, recons = [], []
    for image in images[:n_fields]:
        tiles = table[table["Metadata_image"] == image].reset_index(drop=True)
        source = source_for(tiles, arrays, normalizer)
        origins = tiles[["Metadata_tile_y", "Metadata_tile_x"]].to_numpy()
        size = arrays.item_shape[-1]
        height, width = origins[:, 0].max() + size, origins[:, 1].max() + size
        with torch.no_grad():
            rec = np.concatenate(
                [
                    model.reconstruct(torch.from_numpy(source.batch(np.arange(s, min(s + 64, len(source)))))).numpy()
                    for s in range(0, len(source), 64)
                ]
            )
        shown = source.raw if normalizer.invertible else source.batch
        originals.append(stitch_tiles(shown(np.arange(len(source))), origins, height, width, overlap=overlap))
        recons.append(stitch_tiles(normalizer.invert(rec), origins, height, width, overlap=overlap))
        log.info("field %s: %d tiles stitched", image, len(tiles))
    return np.stack(originals), np.stack(recons)
