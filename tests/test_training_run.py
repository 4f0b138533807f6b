"""One configured model trained end to end (workflow_scripts.training.job): the split, the batch
streams chosen for each family and input, the checkpoint fingerprint, the reconstructions
figure's panels, and the outputs rule train_model writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.sources import ArraySource
from workflow_scripts.data import Normalizer, PerCellMinMax, PerCellRobust, PerFieldRobust
from workflow_scripts.models.spec import resolve_model
from workflow_scripts.split import split_by_group
from workflow_scripts.training.guided import GuidedSource
from workflow_scripts.training.job import (
    N_RECONSTRUCTIONS,
    TrainingInputs,
    TrainingJob,
    TrainingOutputs,
    fingerprint,
    make_streams,
    reconstruction_panels,
    split_table,
    train_job,
    trained_params,
    write_outputs,
)
from workflow_scripts.training.pairs import PairedSource
from workflow_scripts.training.streams import BatchSource, TrainingSource, as_training_source

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SPLIT = {"by": "Metadata_image", "val_fraction": 0.3}
CHANNELS = [
    {"name": "dna", "role": "nucleus"},
    {"name": "er", "role": "structure"},
    {"name": "prot", "role": "protein"},
]
SMALL = {"epochs": 1, "batch_size": 8}
VAE = {"family": "vae", "latent_dim": 4, "width": 4, "depth": 2, **SMALL}


@pytest.fixture
def files(tmp_path):
    """40 cells (3 x 32 x 32) in two shards over six fields and four groups; 30 tiles; a feedback CSV."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, (40, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "s0000.npy", x[:25])
    np.save(tmp_path / "s0001.npy", x[25:])
    cells = pd.DataFrame(
        {
            "Metadata_cell": [f"c{i}" for i in range(40)],
            "Metadata_shard": ["s0000"] * 25 + ["s0001"] * 15,
            "Metadata_row": np.r_[np.arange(25), np.arange(15)],
            "Metadata_image": [f"f{i % 6}" for i in range(40)],
            "Metadata_group": [f"g{i % 4}" for i in range(40)],
        }
    )
    cells.to_parquet(tmp_path / "cells.parquet")
    np.save(tmp_path / "t0000.npy", rng.gamma(2.0, 50.0, (30, 3, 32, 32)).astype(np.float32))
    tiles = pd.DataFrame(
        {
            "Metadata_shard": ["t0000"] * 30,
            "Metadata_row": np.arange(30),
            "Metadata_image": [f"f{i % 6}" for i in range(30)],
        }
    )
    tiles.to_parquet(tmp_path / "tiles0.parquet")
    stats = {
        "mean": [90.0, 100.0, 110.0],
        "std": [60.0, 70.0, 80.0],
        "p01": [5.0, 6.0, 7.0],
        "p99": [300.0, 310.0, 320.0],
    }
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    (tmp_path / "fb.csv").write_text("Metadata_cell,label,anchor_x,anchor_y\nc1,a,,\nc2,b,1,2\nc7,a,3,4\nc30,,0,1\n")
    return tmp_path


def make_job(files, entry: dict, name: str = "m") -> TrainingJob:
    params = resolve_model(name, entry)
    inputs = TrainingInputs(
        cells=str(files / "cells.parquet"),
        arrays=[str(files / "s0000.npy"), str(files / "s0001.npy")],
        feedback=params.get("feedback"),
        tiles=[str(files / "t0000.npy")] if params["input"] == "tiles" else (),
        tile_tables=[str(files / "tiles0.parquet")] if params["input"] == "tiles" else (),
        tile_stats=str(files / "stats.json") if params["input"] == "tiles" else None,
    )
    return TrainingJob(name, "ds", params, CHANNELS, SPLIT, 3, inputs, str(files / f"{name}.ckpt"))


# ---- split ------------------------------------------------------------------------------------


def test_split_table_keeps_groups_whole_and_every_row_once(files):
    cells = pd.read_parquet(files / "cells.parquet")
    train, val = split_table(cells, SPLIT, 3)
    assert len(train) + len(val) == len(cells) and len(val) > 0 and len(train) > 0
    assert not set(train["Metadata_image"]) & set(val["Metadata_image"])
    assert list(train.index) == list(range(len(train))) and list(val.index) == list(range(len(val)))
    is_val = split_by_group(cells["Metadata_image"].astype(str), 0.3, 3)
    assert train["Metadata_cell"].tolist() == cells.loc[~is_val, "Metadata_cell"].tolist()
    assert split_table(cells.iloc[::-1], SPLIT, 3)[1]["Metadata_image"].nunique() == val["Metadata_image"].nunique()


# ---- the streams of each family and input -----------------------------------------------------


def test_plain_streams_for_a_vae_with_the_configured_normaliser(files):
    for normalize, kind in (("cell", PerCellRobust), ("field", PerFieldRobust), ("dataset", Normalizer)):
        streams = make_streams(make_job(files, {**VAE, "normalize": normalize}))
        assert type(streams.train) is BatchSource and type(streams.val) is BatchSource
        assert isinstance(streams.normalizer, kind) and streams.feedback is None
        assert len(streams.train) + len(streams.val) == 40 and len(streams.train) == len(streams.table)


def test_paired_streams_for_inpainting_and_contrastive(files):
    streams = make_streams(make_job(files, {"family": "paired_inpainting", **SMALL}))
    assert type(streams.train) is PairedSource and type(streams.val) is PairedSource
    # normalize: cell means the reference's per-cell min-max scaling for paired inpainting
    assert isinstance(streams.normalizer, PerCellMinMax) and streams.train.normalizer is streams.normalizer
    assert streams.train.group_column == "Metadata_group" and not streams.train.per_cell_scaling
    dataset = make_streams(make_job(files, {"family": "paired_inpainting", "normalize": "dataset", **SMALL}))
    assert isinstance(dataset.normalizer, Normalizer)
    contrastive = {"family": "contrastive", "width": 4, "depth": 2, "embed_dim": 8, "proj_dim": 4, **SMALL}
    assert type(make_streams(make_job(files, contrastive)).train) is PairedSource
    unpaired = make_streams(make_job(files, {**contrastive, "pair_within": None}))
    assert type(unpaired.train) is BatchSource and isinstance(unpaired.normalizer, PerCellRobust)


def test_guided_streams_carry_the_feedback_of_their_cells(files):
    job = make_job(files, {**VAE, "guided": True, "feedback": str(files / "fb.csv")})
    streams = make_streams(job)
    assert type(streams.train) is GuidedSource and type(streams.train.source) is BatchSource
    assert streams.feedback.classes == ["a", "b"]
    train, val = split_table(pd.read_parquet(files / "cells.parquet"), SPLIT, 3)
    labelled = {"c1": 0, "c2": 1, "c7": 0}
    for part, source in ((train, streams.train), (val, streams.val)):
        labels = source.batch(np.arange(len(part)))["label"]
        assert labels.tolist() == [labelled.get(cell, -1) for cell in part["Metadata_cell"]]
    params = trained_params(job.params, streams.feedback)
    assert params["guided_labels"] == 2 and params["feedback_classes"] == ["a", "b"]
    assert list(params)[: len(job.params)] == list(job.params)  # the entry's keys keep their order
    assert job.params["guided_labels"] == 0  # the configured entry is left as it is


def test_guided_needs_feedback_on_cells(files):
    with pytest.raises(ValueError, match=r"models\.m\.guided: true needs models\.m\.feedback"):
        make_streams(make_job(files, {**VAE, "guided": True}))
    tiles = {**VAE, "input": "tiles", "normalize": "dataset", "guided": True, "feedback": str(files / "fb.csv")}
    with pytest.raises(ValueError, match="feedback names cells; expected input: cells"):
        make_streams(make_job(files, tiles))


def test_tile_streams_use_the_tiles_and_their_statistics(files):
    streams = make_streams(make_job(files, {**VAE, "input": "tiles", "normalize": "dataset"}))
    assert type(streams.train) is BatchSource and len(streams.train) + len(streams.val) == 30
    assert set(streams.train.shards) == {"t0000"}
    assert streams.normalizer.offset == [90.0, 100.0, 110.0] and streams.normalizer.scale == [60.0, 70.0, 80.0]


# ---- the fingerprint ----------------------------------------------------------------------------


def test_fingerprint_changes_with_config_and_training_items_only(files):
    cells = pd.read_parquet(files / "cells.parquet")
    params = resolve_model("m", VAE)
    train, val = split_table(cells, SPLIT, 3)
    base = fingerprint(params, 3, SPLIT, train)
    assert base == fingerprint(dict(reversed(list(params.items()))), 3, dict(SPLIT), train.copy())
    assert base != fingerprint({**params, "lr": 0.01}, 3, SPLIT, train)
    assert base != fingerprint(params, 4, SPLIT, train)
    assert base != fingerprint(params, 3, {**SPLIT, "val_fraction": 0.4}, train)
    assert base != fingerprint(params, 3, SPLIT, train.iloc[1:])
    moved = train.assign(Metadata_row=train["Metadata_row"].where(train.index != 0, 99))
    assert base != fingerprint(params, 3, SPLIT, moved)
    # a new cell in a validation field changes the validation items, not the fingerprint
    extra = cells.iloc[:1].assign(Metadata_cell="new", Metadata_image=val["Metadata_image"].iloc[0])
    grown_train, grown_val = split_table(pd.concat([cells, extra], ignore_index=True), SPLIT, 3)
    assert len(grown_val) == len(val) + 1 and fingerprint(params, 3, SPLIT, grown_train) == base
    # the feedback file's bytes count
    with_feedback = fingerprint(params, 3, SPLIT, train, files / "fb.csv")
    assert with_feedback != base and with_feedback == fingerprint(params, 3, SPLIT, train, files / "fb.csv")
    (files / "fb.csv").write_text((files / "fb.csv").read_text() + "c9,b,,\n")
    assert fingerprint(params, 3, SPLIT, train, files / "fb.csv") != with_feedback


# ---- the reconstructions figure ---------------------------------------------------------------


class Doubling(torch.nn.Module):
    """Reconstructs an image as twice itself."""

    def reconstruct(self, x):
        return 2 * (x["x"] if isinstance(x, dict) else x)


class Inpainting(torch.nn.Module):
    protein_channel = 2

    def reconstruct(self, x):
        return x["target"][:, 2:3] + 1

    def reconstruction_target(self, x):
        return x["target"][:, 2:3]


def test_reconstruction_panels_raw_where_invertible_else_as_the_model_saw_them(files):
    names = [c["name"] for c in CHANNELS]
    dataset = make_streams(make_job(files, {**VAE, "normalize": "dataset"}))
    original, recon, shown, title = reconstruction_panels(
        Doubling(), dataset.val, dataset.normalizer, name="m", channel_names=names, kind="cells", normalize="dataset"
    )
    index = np.arange(min(N_RECONSTRUCTIONS, len(dataset.val)))
    np.testing.assert_array_equal(original, dataset.val.raw(index))
    np.testing.assert_allclose(recon, dataset.normalizer.invert(2 * dataset.val.batch(index)), rtol=1e-6)
    assert shown == names and title == "m: validation cells and reconstructions"

    cell = make_streams(make_job(files, {**VAE, "guided": True, "feedback": str(files / "fb.csv")}))
    original, recon, _, title = reconstruction_panels(
        Doubling(), cell.val, cell.normalizer, name="m", channel_names=names, kind="cells", normalize="cell"
    )
    np.testing.assert_array_equal(original, cell.val.batch(index)["x"])
    np.testing.assert_array_equal(recon, 2 * original)
    assert title == "m: validation cells (normalize: cell) and reconstructions"


def test_reconstruction_panels_of_inpainting_show_the_protein(files):
    streams = make_streams(make_job(files, {"family": "paired_inpainting", **SMALL}))
    original, recon, shown, title = reconstruction_panels(
        Inpainting(),
        streams.val,
        streams.normalizer,
        name="p",
        channel_names=["dna", "er", "prot"],
        kind="cells",
        normalize="cell",
    )
    assert shown == ["prot"] and title == "p: protein of validation cells and its inpainting"
    assert original.shape[1] == 1 and np.array_equal(recon, original + 1)


# ---- batch streams ----------------------------------------------------------------------------


def test_as_training_source_completes_a_minimal_source(files):
    minimal = ArraySource(np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2))
    assert not isinstance(minimal, TrainingSource)
    stream = as_training_source(minimal)
    assert isinstance(stream, TrainingSource) and len(stream) == 3
    stream.set_epoch(5)
    np.testing.assert_array_equal(stream.batch(np.array([2])), minimal.x[[2]])
    paired = make_streams(make_job(files, {"family": "paired_inpainting", **SMALL})).train
    assert as_training_source(paired) is paired
    # a guided stream passes the epoch on to the stream it wraps
    feedback = make_streams(make_job(files, {**VAE, "guided": True, "feedback": str(files / "fb.csv")})).feedback
    guided = GuidedSource(paired, feedback.subset(np.arange(len(paired))))
    guided.set_epoch(7)
    assert paired.epoch == 7


# ---- end to end -------------------------------------------------------------------------------


def test_train_job_writes_every_output_and_drops_the_checkpoint(files):
    job = make_job(files, {**VAE, "guided": True, "feedback": str(files / "fb.csv")}, name="g")
    trained = train_job(job)
    assert not trained.model.training and next(trained.model.parameters()).device.type == "cpu"
    assert (files / "g.ckpt").exists()  # the resume point, until the outputs are written
    outputs = TrainingOutputs(
        *(str(files / name) for name in ("w.safetensors", "model.json", "h.csv", "c.png", "r.png"))
    )
    write_outputs(trained, outputs)
    record = json.loads((files / "model.json").read_text())
    assert record["params"]["guided_labels"] == 2 and record["params"]["feedback_classes"] == ["a", "b"]
    assert record["n_train"] + record["n_val"] == 40 and record["trained_on"] == {"dataset": "ds", "input": "cells"}
    assert record["normalization"]["kind"] == "per_cell_robust" and record["best_epoch"] == 1
    assert len(pd.read_csv(files / "h.csv")) == 1
    assert all((files / name).stat().st_size > 0 for name in ("w.safetensors", "c.png", "r.png"))
    assert not (files / "g.ckpt").exists()
