import numpy as np
import pandas as pd
import pytest
import torch

from workflow_scripts.data import Normalizer, ShardedArrays, per_cell_minmax
from workflow_scripts.models.paired_inpainting import PairedInpaintingNet
from workflow_scripts.training.pairs import PairedSource

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "channels, protein, structure",
    [(2, 1, [0]), (2, 0, [1]), (3, 1, [0, 2]), (4, 3, [0]), (5, 2, None), (7, 0, [6, 1, 3])],
)
@pytest.mark.parametrize("size", [64, 128])
def test_shapes(channels, protein, structure, size):
    model = PairedInpaintingNet(
        channels, size, protein_channel=protein, structure_channels=structure, width_mult=0.125
    ).eval()
    batch = {"source": torch.rand(2, channels, size, size), "target": torch.rand(2, channels, size, size)}
    pred = model(batch)["prediction"]
    assert pred.shape == (2, 1, size, size)
    assert model.reconstruct(batch).shape == (2, 1, size, size)
    target = model.reconstruction_target(batch)
    assert torch.equal(target, batch["target"][:, protein : protein + 1])
    expected_structure = structure if structure is not None else [c for c in range(channels) if c != protein]
    assert torch.equal(model.target_structure(batch), batch["target"][:, expected_structure])
    terms = model.loss_terms(batch, model(batch))
    assert set(terms) == {"loss", "mse"}
    assert torch.isclose(terms["loss"], ((pred - target) ** 2).mean())

    maps = model.feature_maps(batch["source"])
    assert list(maps) == model.layer_names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    w = model.widths
    assert maps["conv1"].shape == (2, w[0], size, size)
    assert maps["conv2"].shape == (2, w[1], size // 2, size // 2)
    for i in (3, 4, 5):
        assert maps[f"conv{i}"].shape == (2, w[i - 1], size // 4, size // 4)
    assert all((m >= 0).all() for m in maps.values())  # after ReLU
    assert torch.equal(model.feature_maps(batch)["conv5"], maps["conv5"])  # a pair batch: its source


def test_no_structure_channels():
    model = PairedInpaintingNet(1, 32, protein_channel=0, structure_channels=[], width_mult=0.125).eval()
    assert model.marker is None
    batch = {"source": torch.rand(3, 1, 32, 32), "target": torch.rand(3, 1, 32, 32)}
    assert model(batch)["prediction"].shape == (3, 1, 32, 32)


def test_prediction_uses_both_cells():
    torch.manual_seed(0)
    model = PairedInpaintingNet(3, 32, protein_channel=1, structure_channels=[0, 2], width_mult=0.125).eval()
    batch = {"source": torch.rand(2, 3, 32, 32), "target": torch.rand(2, 3, 32, 32)}
    base = model(batch)["prediction"]
    # B's protein channel is the target, never an input.
    hidden = {**batch, "target": batch["target"].clone()}
    hidden["target"][:, 1] = 0.0
    assert torch.equal(model(hidden)["prediction"], base)
    for key, channel in (("source", 1), ("target", 0)):
        changed = {k: v.clone() for k, v in batch.items()}
        changed[key][:, channel] = torch.rand(2, 32, 32)
        assert not torch.allclose(model(changed)["prediction"], base)


def test_widths_and_optimizer():
    full = PairedInpaintingNet(3, 64, protein_channel=0, structure_channels=[1, 2])
    assert full.widths == [96, 256, 384, 384, 256]
    assert full.marker_widths == [16, 32, 32]
    quarter = PairedInpaintingNet(3, 64, protein_channel=0, structure_channels=[1, 2], width_mult=0.25)
    assert quarter.widths == [24, 64, 96, 96, 64]
    assert quarter.marker_widths == [4, 8, 8]
    tiny = PairedInpaintingNet(3, 64, protein_channel=0, structure_channels=[1], width_mult=0.01)
    assert min(tiny.widths + tiny.marker_widths + tiny.decoder_widths) == 4
    opt = quarter.configure_optimizers(1e-4, 0.0)["model"]
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert opt.param_groups[0]["lr"] == 1e-4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"protein_channel": 3, "structure_channels": [0]}, "protein_channel"),
        ({"protein_channel": 0, "structure_channels": [0, 1]}, "protein channel"),
        ({"protein_channel": 0, "structure_channels": [1, 1]}, "repeats"),
        ({"protein_channel": 0, "structure_channels": [5]}, "structure_channels"),
        ({"protein_channel": 0, "structure_channels": [1], "width_mult": 0}, "width_mult"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairedInpaintingNet(3, 64, **kwargs)


def test_input_size_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        PairedInpaintingNet(2, 30, protein_channel=0, structure_channels=[1])


# ---------------------------------------------------------------------------- pairs


def _arrays(tmp_path, images: np.ndarray, shards: int = 2):
    """Split images over ``shards`` shard files; return the arrays and a table locating them."""
    paths, shard_col, row_col = {}, [], []
    for s, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        path = tmp_path / f"s{s}.npy"
        np.save(path, images[part])
        paths[f"s{s}"] = path
        shard_col += [f"s{s}"] * len(part)
        row_col += list(range(len(part)))
    table = pd.DataFrame({"Metadata_shard": shard_col, "Metadata_row": row_col})
    return ShardedArrays(paths), table


@pytest.fixture
def grouped(tmp_path):
    """20 cells whose pixels encode their table position; groups of 6, 5, 4, 3, 1 and one NaN."""
    n = 20
    images = np.zeros((n, 2, 8, 8), dtype=np.float32)
    images[:, 0] = np.arange(n)[:, None, None]
    images[:, 1, 0, 0] = 1.0  # non-constant channel for the min-max test
    images[:, 1] *= np.arange(1, n + 1)[:, None, None]
    arrays, table = _arrays(tmp_path, images)
    groups = ["a"] * 6 + ["b"] * 5 + ["c"] * 4 + ["d"] * 3 + ["lonely"] + [None]
    table["Metadata_group"] = groups
    table["Metadata_id"] = np.arange(n)
    return arrays, table


def test_pairs_same_group_never_self(grouped):
    arrays, table = grouped
    source = PairedSource(arrays, table, "Metadata_group", seed=3, per_cell_scaling=False)
    assert len(source) == 18
    assert source.n_unpaired == 2
    assert source.mask.tolist() == [True] * 18 + [False, False]
    assert source.n_groups == 4
    assert source.table["Metadata_id"].tolist() == list(range(18))
    groups = source.table["Metadata_group"].to_numpy()
    for epoch in range(5):
        source.set_epoch(epoch)
        partner = source.partners()
        assert (partner != np.arange(len(source))).all()
        assert (groups[partner] == groups).all()
        out = source.batch(np.arange(len(source)))
        ids_a = out["source"][:, 0, 0, 0].astype(int)
        ids_b = out["target"][:, 0, 0, 0].astype(int)
        assert ids_a.tolist() == list(range(18))
        assert (ids_b == partner).all()
        assert (table["Metadata_group"].to_numpy()[ids_b] == table["Metadata_group"].to_numpy()[ids_a]).all()


def test_pairs_reach_every_partner(grouped):
    arrays, table = grouped
    source = PairedSource(arrays, table, "Metadata_group", seed=0)
    seen = {i: set() for i in range(len(source))}
    for epoch in range(200):
        for i, p in enumerate(source.partners(epoch)):
            seen[i].add(int(p))
    groups = source.table["Metadata_group"].to_numpy()
    for i, partners in seen.items():
        assert partners == set(np.flatnonzero(groups == groups[i])) - {i}


def test_pairs_deterministic(grouped):
    arrays, table = grouped
    one = PairedSource(arrays, table, "Metadata_group", seed=7)
    two = PairedSource(arrays, table, "Metadata_group", seed=7)
    # Same (seed, epoch, index) -> same partner, whatever epochs were visited before.
    for epoch in (0, 5, 2):
        two.set_epoch(epoch)
    two.set_epoch(4)
    one.set_epoch(4)
    assert np.array_equal(one.partners(), two.partners())
    idx = np.array([3, 0, 17, 9])
    a, b = one.batch(idx), two.batch(idx)
    assert np.array_equal(a["target"], b["target"]) and np.array_equal(a["source"], b["source"])
    assert np.array_equal(one.partners(4)[idx], one.partners(4)[idx])
    # Other epochs and seeds draw other partners.
    assert not np.array_equal(one.partners(4), one.partners(5))
    other = PairedSource(arrays, table, "Metadata_group", seed=8)
    assert not np.array_equal(one.partners(4), other.partners(4))


def test_pairs_column_errors(grouped):
    arrays, table = grouped
    with pytest.raises(ValueError, match="Metadata_well"):
        PairedSource(arrays, table, "Metadata_well")
    singles = table.assign(Metadata_group=[f"g{i}" for i in range(len(table))])
    with pytest.raises(ValueError, match="Metadata_group"):
        PairedSource(arrays, singles, "Metadata_group")
    with pytest.raises(ValueError, match="Metadata_row"):
        PairedSource(arrays, table.drop(columns="Metadata_row"), "Metadata_group")
    with pytest.raises(ValueError, match="not both"):
        PairedSource(arrays, table, "Metadata_group", normalizer=Normalizer([0.0, 0.0], [1.0, 1.0]))


def test_pairs_scaling(grouped):
    arrays, table = grouped
    scaled = PairedSource(arrays, table, "Metadata_group")
    out = scaled.batch(np.arange(len(scaled)))
    for key in ("source", "target"):
        x = out[key]
        assert x.dtype == np.float32 and x.shape == (18, 2, 8, 8)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert (x[:, 0] == 0).all()  # constant channel -> 0
        assert (x[:, 1].max(axis=(1, 2)) == 1).all() and (x[:, 1].min(axis=(1, 2)) == 0).all()
    raw = scaled.raw(np.array([2, 5]))
    assert raw[:, 0, 0, 0].tolist() == [2.0, 5.0]
    normalised = PairedSource(
        arrays, table, "Metadata_group", per_cell_scaling=False, normalizer=Normalizer([1.0, 0.0], [2.0, 1.0])
    )
    assert np.allclose(normalised.batch(np.array([5]))["source"][:, 0], 2.0)


def test_per_cell_minmax():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 16, 16)) * rng.uniform(1, 100, size=(4, 3, 1, 1)) + 50
    x[1, 2] = 7.0
    y = per_cell_minmax(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert (y >= 0).all() and (y <= 1).all()
    assert (y[1, 2] == 0).all()
    mins, maxs = y.min(axis=(2, 3)), y.max(axis=(2, 3))
    mask = np.ones((4, 3), bool)
    mask[1, 2] = False
    assert np.allclose(mins[mask], 0) and np.allclose(maxs[mask], 1)
    # Affine-invariant per channel.
    assert np.allclose(per_cell_minmax(3 * x + 11), y, atol=1e-5)


# ---------------------------------------------------------------------------- training


def _pattern_cells(n_groups=4, per_group=12, size=32, seed=0):
    """Per group a fixed protein pattern (stripes of a group-specific frequency); the
    structure channel is a nucleus blob at a random place, the same pattern is modulated by a
    random gain so the cells of a group are not identical."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images, groups = [], []
    for g in range(n_groups):
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (g + 1) * yy / size)
        for _ in range(per_group):
            cy, cx = rng.uniform(8, size - 8, size=2)
            nucleus = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
            protein = pattern * rng.uniform(0.8, 1.2) + 0.05 * rng.normal(size=(size, size))
            images.append(np.stack([nucleus, protein]))
            groups.append(f"protein{g}")
    return np.asarray(images, dtype=np.float32), groups


def test_training_reduces_loss(tmp_path):
    torch.manual_seed(0)
    images, groups = _pattern_cells()
    arrays, table = _arrays(tmp_path, images)
    table["Metadata_group"] = groups
    val_rows = table.index % 4 == 0
    train = PairedSource(arrays, table[~val_rows], "Metadata_group", seed=0)
    val = PairedSource(arrays, table[val_rows], "Metadata_group", seed=1)
    model = PairedInpaintingNet(2, 32, protein_channel=1, structure_channels=[0], width_mult=0.125)
    optimizers = model.configure_optimizers(3e-3, 0.0)
    autocast = torch.autocast("cpu", enabled=False)

    def validate():
        model.eval()
        batch = {k: torch.from_numpy(v) for k, v in val.batch(np.arange(len(val))).items()}
        with torch.no_grad():
            terms = model.loss_terms(batch, model(batch))
        return float(terms["loss"]), float(model.reconstruction_target(batch).var(unbiased=False))

    before, target_var = validate()
    generator = np.random.default_rng(0)
    losses = []
    for epoch in range(16):
        train.set_epoch(epoch)
        model.train()
        order = generator.permutation(len(train))
        for start in range(0, len(order), 12):
            batch = {k: torch.from_numpy(v) for k, v in train.batch(order[start : start + 12]).items()}
            terms = model.training_step(batch, optimizers, autocast)
            losses.append(float(terms["loss"]))
    after, _ = validate()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert after < 0.5 * before
    # Better than the best constant prediction: the network reads the group's pattern off A.
    assert after < 0.25 * target_var
