import os
import stat

import numpy as np
import pandas as pd
import pytest

from workflow_scripts import io


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "t.parquet"
    io.write_parquet(target, pd.DataFrame({"Metadata_a": [1], "f": [2.0]}))
    assert pd.read_parquet(target).shape == (1, 2)
    io.write_npy(tmp_path / "a.npy", np.arange(3))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    io.write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(2)})
    assert (tmp_path / "a.json").read_text().count("1.5") == 1
    # Not mkstemp's 0600: the usual 0666 minus the umask.
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~io._UMASK


def test_metadata_and_feature_columns():
    t = pd.DataFrame(columns=["Metadata_cell", "conv1_0", "Metadata_x", "conv1_1"])
    assert io.metadata_columns(t) == ["Metadata_cell", "Metadata_x"]
    assert io.feature_columns(t) == ["conv1_0", "conv1_1"]


def test_read_fields_maps_stored_shards_and_reads_the_rest(tmp_path):
    """Shards written by write_fields come back memory-mapped with the written values (stacked,
    per-field and Fortran-ordered arrays alike); a compressed .npz is read the ordinary way;
    a truncated shard is an error naming the zip problem, not silent zeros."""
    rng = np.random.default_rng(0)
    stacked = rng.integers(0, 4000, (3, 2, 40, 50), dtype=np.uint16)
    truth = rng.integers(0, 9, (3, 40, 50)).astype(np.int32)
    io.write_fields(tmp_path / "a.npz", stacked, ["a", "b", "c"], truth)
    images, labels = io.read_fields(tmp_path / "a.npz")
    assert isinstance(images, np.memmap) and isinstance(labels, np.memmap)
    np.testing.assert_array_equal(images, stacked)
    np.testing.assert_array_equal(labels, truth)
    assert not images.flags.writeable

    mixed = [stacked[0], rng.random((2, 30, 20)).astype(np.float32)]
    io.write_fields(tmp_path / "b.npz", mixed, ["a", "b"])
    images, labels = io.read_fields(tmp_path / "b.npz")
    assert labels is None and [im.shape for im in images] == [(2, 40, 50), (2, 30, 20)]
    for got, want in zip(images, mixed, strict=True):
        np.testing.assert_array_equal(got, want)

    fortran = np.asfortranarray(stacked[:, 0])
    np.savez(tmp_path / "f.npz", images=fortran)
    np.testing.assert_array_equal(io.read_fields(tmp_path / "f.npz")[0], fortran)
    np.savez_compressed(tmp_path / "c.npz", images=stacked)
    images, _ = io.read_fields(tmp_path / "c.npz")
    assert not isinstance(images, np.memmap)
    np.testing.assert_array_equal(images, stacked)

    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="zip"):
        io.read_fields(tmp_path / "cut.npz")
