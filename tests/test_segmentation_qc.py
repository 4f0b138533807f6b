"""Segmentation QC through the real workflow: a local folder of real DSB 2018 fields plus one
field of camera noise, with no segmentation key set; then the same folder with a max_area
below its nuclei. The run must estimate the scale, keep the real nuclei, give the noise no
nuclei, and say so: per-field table, summary JSON, log warnings naming dataset, fields and key."""

import json
import shutil

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from tests.test_workflow import REPO, snakemake

DSB = REPO / "tests" / "data" / "dsb2018_subset"
# three fields of one experiment (median nucleus area 1,500-1,800 px, ~45 px across)
REAL = ["02903040e19ddf92", "1a75de9e11303142", "4c032609d377bd98"]


def _folder(root):
    data = root / "fields"
    data.mkdir()
    for name in REAL:
        shutil.copy(DSB / "images" / f"{name}.png", data / f"real_{name}.png")
    noise = np.random.default_rng(0).normal(12, 3, (360, 360)).clip(0, 255).astype(np.uint8)
    Image.fromarray(noise).save(data / "empty_camera_noise.png")
    return data


def _config(root, data, **segmentation):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {
        "dsb": {
            "source": "local",
            "path": str(data),
            "pattern": r"(?P<class>[a-z]+)_(?P<image>[^/]+)\.png",
            "channels": {"0": {"name": "DNA", "role": "nucleus"}},
        }
    }
    config["segmentation"].update(segmentation)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(root, config):
    assert config == root / "config.yaml"  # the workflow's configfile in its working directory
    proc = snakemake(root, "results/dsb/qc/segmentation_qc.json")
    fields = pd.read_csv(root / "results/dsb/qc/segmentation_fields.csv")
    fields["flags"] = fields["flags"].fillna("")
    summary = json.loads((root / "results/dsb/qc/segmentation_qc.json").read_text())
    scale = json.loads((root / "results/dsb/qc/scale.json").read_text())
    return proc, fields.set_index("Metadata_image"), summary, scale


def test_scale_qc_and_warnings_on_real_fields_and_noise(tmp_path):
    data = _folder(tmp_path)
    proc, fields, summary, scale = _run(tmp_path, _config(tmp_path, data))

    truth = [np.bincount(np.asarray(Image.open(DSB / "labels" / f"{n}.png")).ravel())[1:] for n in REAL]
    true_d = np.median([np.median(np.sqrt(4 * a[a > 0] / np.pi)) for a in truth])
    assert 0.75 * true_d < scale["diameter"] < 1.25 * true_d  # estimated, not config.yaml's
    assert scale["source"]["diameter"] == "auto" and scale["source"]["min_area"] == "auto"
    assert abs(scale["crop"]["size"] - 3.5 * scale["diameter"]) <= 0.1 * scale["crop"]["size"] + 1
    assert (tmp_path / "results/dsb/qc/segmentation_qc.png").stat().st_size > 10_000

    noise = fields.loc["camera_noise"]
    assert noise["n_objects"] == 0 and noise["flags"] == "low_contrast" and noise["snr"] < 5
    for name in REAL:
        assert fields.loc[name, "flags"] == "" and fields.loc[name, "n_objects"] >= 15
        assert fields.loc[name, "kept_fraction"] > 0.9
    assert summary["flag_counts"]["low_contrast"] == 1 and summary["n_flagged_fields"] == 1
    (warning,) = summary["warnings"]
    assert "dataset dsb" in warning and "camera_noise" in warning and "segmentation.min_snr" in warning
    log = (tmp_path / "logs/dsb/segmentation_qc.log").read_text()
    assert "WARNING" in log and "camera_noise" in log


def test_a_max_area_below_the_nuclei_warns_with_the_key(tmp_path):
    data = _folder(tmp_path)
    proc, fields, summary, scale = _run(tmp_path, _config(tmp_path, data, max_area=300))
    assert scale["segmentation"]["max_area"] == 300 and scale["source"]["max_area"] == "config"
    assert summary["flag_counts"]["size_filters"] == len(REAL)
    warning = next(w for w in summary["warnings"] if "size filters" in w)
    assert "segmentation.max_area" in warning and "dataset dsb" in warning
    assert all(name in warning for name in REAL)
    assert (fields.loc[REAL, "kept_fraction"] < 0.5).all()
