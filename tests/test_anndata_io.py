"""AnnData export: files that anndata itself reads back with the same numbers and metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from workflow_scripts.anndata_io import table_to_h5ad, write_h5ad

REPO = Path(__file__).resolve().parents[1]
ANNDATA = Path(os.environ.get("CELLEMBED_ANNDATA_PATH", REPO / ".cache" / "anndata"))

READER = """
import json, sys
import anndata, numpy as np
a = anndata.read_h5ad(sys.argv[1])
obs = {c: [None if (isinstance(v, float) and v != v) else (v.item() if hasattr(v, "item") else v)
           for v in a.obs[c].tolist()] for c in a.obs.columns}
print(json.dumps({
    "shape": list(a.shape), "X": np.asarray(a.X).tolist(), "obs_names": list(a.obs_names),
    "var_names": list(a.var_names), "obs": obs,
    "dtypes": {c: str(a.obs[c].dtype) for c in a.obs.columns},
}))
"""


def read_with_anndata(path: Path) -> dict:
    """Read ``path`` with the reference reader (anndata, installed apart by .ci/run)."""
    if not (ANNDATA / "anndata" / "__init__.py").exists():
        pytest.skip(f"anndata is not installed in {ANNDATA} (.ci/run installs it there)")
    env = {**os.environ, "PYTHONPATH": f"{ANNDATA}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", READER, str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def feature_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Metadata_cell": ["f0_c1", "f0_c2", "f1_c1", "f1_c2"],
            "Metadata_class": ["mitotic", "interphase", "mitotic", None],
            "Metadata_plate": [1, 1, 2, 2],
            "Metadata_area": [120.5, np.nan, 98.0, 101.25],
            "Metadata_border": [True, False, False, True],
            "Metadata_well": pd.Categorical(["A01", "A01", "B02", "B02"]),
            "f0": [0.5, -1.0, 2.25, 3.0],
            "f1": [1.0, 0.0, -0.5, 7.5],
            "f2": [0.125, 0.25, 0.375, 0.5],
        }
    )


def test_anndata_reads_cells_back_with_features_metadata_and_names(tmp_path):
    path = tmp_path / "conv1.cells.h5ad"
    table_to_h5ad(feature_table(), path, index="Metadata_cell")
    a = read_with_anndata(path)
    assert a["shape"] == [4, 3]
    np.testing.assert_array_equal(np.array(a["X"]), feature_table()[["f0", "f1", "f2"]].to_numpy(np.float32))
    assert a["obs_names"] == ["f0_c1", "f0_c2", "f1_c1", "f1_c2"]
    assert a["var_names"] == ["f0", "f1", "f2"]
    obs = a["obs"]
    assert obs["Metadata_class"] == ["mitotic", "interphase", "mitotic", None]
    assert a["dtypes"]["Metadata_class"] == "category"
    assert obs["Metadata_plate"] == [1, 1, 2, 2]
    assert obs["Metadata_area"] == [120.5, None, 98.0, 101.25]
    assert obs["Metadata_border"] == [True, False, False, True]
    assert obs["Metadata_well"] == ["A01", "A01", "B02", "B02"]
    assert "Metadata_cell" not in obs  # it is the index


def test_profile_table_indexed_by_group(tmp_path):
    profiles = pd.DataFrame(
        {"Metadata_group": ["g1", "g2"], "Metadata_n_cells": [12, 7], "mu_0": [0.1, 0.2], "mu_1": [1.5, -2.0]}
    )
    path = tmp_path / "mu.h5ad"
    table_to_h5ad(profiles, path, index="Metadata_group")
    a = read_with_anndata(path)
    assert a["obs_names"] == ["g1", "g2"] and a["var_names"] == ["mu_0", "mu_1"]
    assert a["obs"]["Metadata_n_cells"] == [12, 7]
    np.testing.assert_allclose(a["X"], [[0.1, 1.5], [0.2, -2.0]], rtol=1e-7)


def test_file_follows_the_on_disk_format(tmp_path):
    """The encoding attributes anndata dispatches on (also checked without anndata)."""
    path = tmp_path / "t.h5ad"
    table_to_h5ad(feature_table(), path, index="Metadata_cell")
    with h5py.File(path, "r") as f:
        assert f.attrs["encoding-type"] == "anndata" and f.attrs["encoding-version"] == "0.1.0"
        assert f["X"].dtype == np.float32 and f["X"].shape == (4, 3)
        assert f["obs"].attrs["encoding-type"] == "dataframe"
        assert list(f["obs"].attrs["column-order"]) == [
            "Metadata_class",
            "Metadata_plate",
            "Metadata_area",
            "Metadata_border",
            "Metadata_well",
        ]
        assert f["obs/Metadata_class"].attrs["encoding-type"] == "categorical"
        assert list(f["obs/Metadata_class/codes"][:]) == [1, 0, 1, -1]
        assert [v.decode() for v in f["var/_index"][:]] == ["f0", "f1", "f2"]
        assert {k for k in f} == {"X", "obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns"}


def test_errors_name_the_file_and_leave_nothing(tmp_path):
    path = tmp_path / "bad.h5ad"
    table = feature_table()
    table.loc[1, "Metadata_cell"] = "f0_c1"
    with pytest.raises(ValueError, match=r"bad\.h5ad.*'f0_c1' occurs more than once"):
        table_to_h5ad(table, path, index="Metadata_cell")
    with pytest.raises(ValueError, match=r"bad\.h5ad.*index column 'Metadata_site'"):
        table_to_h5ad(feature_table(), path, index="Metadata_site")
    with pytest.raises(ValueError, match=r"expected \(2 observations, 3 variables\)"):
        write_h5ad(path, np.zeros((2, 2)), pd.DataFrame(index=["a", "b"]), ["x", "y", "z"])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    path = tmp_path / "half.h5ad"

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("workflow_scripts.anndata_io._dataframe", boom)
    with pytest.raises(OSError, match="No space left"):
        table_to_h5ad(feature_table(), path, index="Metadata_cell")
    assert list(tmp_path.iterdir()) == []
