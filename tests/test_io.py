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
