"""The GPU data path on any device: resident items, the prefetching thread and augmentation on
the device give what the CPU path gives, bit for bit (the device is a test argument: the CPU
always, CUDA where there is one)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from tests.sources import ArraySource
from workflow_scripts.data import make_normalizer, open_shards
from workflow_scripts.models.vae import VAE
from workflow_scripts.training.device import (
    DeviceSource,
    Prefetcher,
    ResidentSource,
    prepare_sources,
    stream_batches,
)
from workflow_scripts.training.guided import Feedback, GuidedSource
from workflow_scripts.training.loop import TrainSettings, augment_batch, fit
from workflow_scripts.training.pairs import PairedSource
from workflow_scripts.training.streams import ResidentCapable, TrainingSource, source_for

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def cells(tmp_path):
    """30 gamma-noise crops (2 x 16 x 16) in two shards, over three fields and five groups."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, (30, 2, 16, 16)).astype(np.float32)
    np.save(tmp_path / "s0000.npy", x[:18])
    np.save(tmp_path / "s0001.npy", x[18:])
    table = pd.DataFrame(
        {
            "Metadata_shard": ["s0000"] * 18 + ["s0001"] * 12,
            "Metadata_row": np.r_[np.arange(18), np.arange(12)],
            "Metadata_image": [f"f{i % 3}" for i in range(30)],
            "Metadata_group": [f"g{i % 5}" for i in range(30)],
        }
    ).sample(frac=1.0, random_state=0)  # shard rows out of order
    return table, open_shards([tmp_path / "s0000.npy", tmp_path / "s0001.npy"])


def as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_same_batch(got, want):
    """Equal values, dtypes and shapes (NaN equal to NaN), the one batch a tensor on a device."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for key in want:
            assert_same_batch(got[key], want[key])
        return
    got, want = as_numpy(got), as_numpy(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=np.issubdtype(want.dtype, np.floating))


INDICES = [np.array([4, 0, 29, 7, 7, 13]), np.arange(30)[::-1], np.array([17])]


@pytest.mark.parametrize("kind", ["dataset", "cell", "field"])
def test_resident_batches_equal_batch(cells, device, kind):
    table, arrays = cells
    source = source_for(table, arrays, make_normalizer(kind, table, arrays))
    assert isinstance(source, ResidentCapable) and isinstance(source, TrainingSource)
    resident = source.resident(device)
    assert resident.items.device.type == device.type and resident.nbytes == source.resident_nbytes()
    chunked = ResidentSource.of(source, device, chunk_bytes=3 * 2 * 16 * 16 * 4)  # chunks of 3 items
    for index in INDICES:
        assert_same_batch(resident.batch(index), source.batch(index))
        assert_same_batch(chunked.batch(torch.from_numpy(index.copy()).to(device)), source.batch(index))
        assert resident.batch(index).device.type == device.type


@pytest.mark.parametrize("scaling", ["per_cell", "field", "raw"])
def test_resident_pairs_equal_batch_over_epochs(cells, device, scaling):
    table, arrays = cells
    options = {
        "per_cell": {},
        "field": {"per_cell_scaling": False, "normalizer": make_normalizer("field", table, arrays)},
        "raw": {"per_cell_scaling": False},
    }[scaling]
    paired = PairedSource(arrays, table, "Metadata_group", seed=3, **options)
    reference = PairedSource(arrays, table, "Metadata_group", seed=3, **options)
    resident = paired.resident(device)
    assert resident.nbytes == paired.resident_nbytes()
    partners = []
    for epoch in (1, 2, 1):
        resident.set_epoch(epoch)
        reference.set_epoch(epoch)
        partners.append(reference.partners().copy())
        for index in INDICES:
            assert_same_batch(resident.batch(index), reference.batch(index))
    assert not np.array_equal(partners[0], partners[1]) and np.array_equal(partners[0], partners[2])


def test_resident_guided_equals_batch(cells, device):
    table, arrays = cells
    n = len(table)
    labels = np.full(n, -1, np.int64)
    labels[[2, 5, 11]] = [0, 1, 0]
    anchors = np.full((n, 2), np.nan, np.float32)
    anchors[[5, 20]] = [[0.5, -1.0], [1.5, 2.0]]
    weights = np.linspace(0, 1, n).astype(np.float32)
    source = GuidedSource(
        source_for(table, arrays, make_normalizer("cell", table, arrays)),
        Feedback(labels, ["a", "b"], anchors, weights),
    )
    resident = source.resident(device)
    assert resident.nbytes == source.resident_nbytes()
    for index in INDICES:
        assert_same_batch(resident.batch(index), source.batch(index))
    # a guided source over one that cannot be resident is prefetched
    fallback = GuidedSource(
        ArraySource(np.zeros((n, 2, 4, 4), np.float32)), Feedback(labels, ["a", "b"], anchors, weights)
    )
    assert fallback.resident_nbytes() is None
    assert prepare_sources([fallback], device)[1][0].path == "prefetch"


def test_prefetch_same_batches_in_order(cells, device):
    table, arrays = cells
    for source in (
        source_for(table, arrays, make_normalizer("cell", table, arrays)),
        PairedSource(arrays, table, "Metadata_group", seed=1),
    ):
        indices = [np.arange(i, min(30, i + 7)) for i in range(0, 30, 7)] + [np.array([3, 1])]
        with Prefetcher(source, indices, device) as batches:
            got = list(batches)
        assert len(got) == len(indices)
        for batch, index in zip(got, indices):
            assert_same_batch(batch, source.batch(index))
            leaves = batch.values() if isinstance(batch, dict) else [batch]
            assert all(t.device.type == device.type for t in leaves)
        # the resident stream gives the same batches
        resident = source.resident(device)
        for batch, index in zip(stream_batches(resident, indices, device), indices, strict=True):
            assert_same_batch(batch, source.batch(index))


class Failing(ArraySource):
    def batch(self, index):
        if self.calls == 3:
            raise ValueError(f"shard s0007 is truncated (batch {self.calls})")
        return super().batch(index)


def test_prefetch_raises_the_sources_exception_in_order(device):
    source = Failing(np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2))
    indices = [np.array([i, i + 1]) for i in range(0, 10, 2)]
    got = []
    before = threading.active_count()
    with pytest.raises(ValueError, match=r"shard s0007 is truncated \(batch 3\)"):
        for batch in stream_batches(source, indices, device):
            got.append(batch)
    assert len(got) == 3  # the batches before the failing one arrive, in order
    for batch, index in zip(got, indices):
        assert_same_batch(batch, source.x[index])
    assert threading.active_count() == before  # the thread is gone


def test_prefetch_thread_stops_when_the_loop_ends_early(device):
    source = ArraySource(np.zeros((100, 1, 2, 2), np.float32))
    prefetcher = Prefetcher(source, [np.array([i]) for i in range(100)], device, depth=2)
    next(prefetcher)
    prefetcher.close()
    assert not prefetcher._thread.is_alive()
    assert source.calls <= 5  # one taken, two queued, one being prepared, one more at most
    with pytest.raises(StopIteration):
        next(prefetcher)


def legacy_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``augment_batch`` as it was before it ran on the device (CPU only)."""
    ops = torch.randint(0, 8, (x.shape[0],), generator=generator)
    out = x.clone()
    for op in range(1, 8):
        idx = torch.nonzero(ops == op).flatten()
        if len(idx) == 0:
            continue
        part = x[idx]
        if op >= 4:
            part = part.flip(-1)
        out[idx] = torch.rot90(part, op % 4, dims=(-2, -1))
    return out


@pytest.mark.parametrize("n", [0, 1, 5, 64])
def test_augment_on_device_equals_augment_on_cpu(device, n):
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    on_cpu = legacy_augment(x, torch.Generator().manual_seed(7))
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(7)), on_cpu)
    generator = torch.Generator().manual_seed(7)
    on_device = augment_batch(x.to(device).contiguous(memory_format=torch.channels_last), generator)
    assert on_device.device.type == device.type and torch.equal(on_device.cpu(), on_cpu)
    # one draw of n integers, as before: the next draws agree too
    reference = torch.Generator().manual_seed(7)
    legacy_augment(x, reference)
    assert torch.equal(torch.randint(0, 8, (4,), generator=generator), torch.randint(0, 8, (4,), generator=reference))


def test_prepare_sources_by_budget_and_forced(cells, device):
    table, arrays = cells
    source = source_for(table, arrays, make_normalizer("dataset", table, arrays))
    nbytes = source.resident_nbytes()
    assert nbytes == 30 * 2 * 16 * 16 * 4
    (one, two), plans = prepare_sources([source, source], device, "auto", budget=int(1.5 * nbytes))
    assert isinstance(one, DeviceSource) and two is source  # the budget holds one of them
    assert [p.path for p in plans] == ["resident", "prefetch"] and plans[0].nbytes == nbytes
    assert prepare_sources([source], device, "prefetch")[0][0] is source
    assert isinstance(prepare_sources([source], device, "resident", budget=0)[0][0], DeviceSource)
    assert prepare_sources([ArraySource(np.zeros((3, 1, 2, 2)))], device, "auto")[1][0].path == "prefetch"
    with pytest.raises(ValueError, match="cannot be held on a device"):
        prepare_sources([ArraySource(np.zeros((3, 1, 2, 2)))], device, "resident")
    with pytest.raises(ValueError, match="data_path: 'gpu' is not one of"):
        prepare_sources([source], device, "gpu")


def test_fit_same_history_and_weights_resident_or_prefetched(cells, device):
    table, arrays = cells
    normalizer = make_normalizer("dataset", table, arrays)
    train, val = source_for(table[:22], arrays, normalizer), source_for(table[22:], arrays, normalizer)
    results = {}
    for path in ("resident", "prefetch", "auto"):
        torch.manual_seed(0)
        model = VAE(2, 16, latent_dim=4, width=4, depth=2)
        settings = TrainSettings(epochs=2, batch_size=8, lr=3e-3, seed=5, data_path=path, precision="fp32")
        results[path] = fit(model, train, val, settings, device=device)
    assert results["resident"].extra["data_path"] == "resident" and results["resident"].extra["resident_mb"] > 0
    assert results["prefetch"].extra == {"data_path": "prefetch", "val_data_path": "prefetch", "resident_mb": 0.0}
    assert results["auto"].extra["data_path"] == "resident"  # 45 kB fit any budget
    exact = device.type == "cpu"  # CUDA kernels may sum in another order from run to run
    for path in ("prefetch", "auto"):
        a, b = results["resident"], results[path]
        columns = [c for c in a.history.columns if c not in ("seconds", "data_wait_fraction")]
        if exact:
            pd.testing.assert_frame_equal(a.history[columns], b.history[columns], check_exact=True)
        else:
            pd.testing.assert_frame_equal(a.history[columns], b.history[columns], rtol=1e-4)
        for key in a.best_state:
            if exact:
                assert torch.equal(a.best_state[key], b.best_state[key]), key
            else:
                torch.testing.assert_close(a.best_state[key], b.best_state[key], rtol=1e-4, atol=1e-5)
    assert (results["prefetch"].history["data_wait_fraction"] > 0).all()
