"""The bad-input corpus, through the real pipeline: each bad field is either skipped and counted
(``on_bad_image: skip``, and always for fields without nuclei) or stops the run with an error
that names the file or key, the value and what was expected. Never a bare traceback, never a
silently wrong output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from tests.source_fixtures import synthetic_field_channels
from tests.test_workflow import REPO, snakemake
from workflow_scripts.crop import segment_and_crop

CHANNELS = {
    "nuc": {"name": "DNA", "role": "nucleus"},
    "tub": {"name": "tubulin", "role": "structure"},
    "prot": {"name": "protein", "role": "protein"},
}
PATTERN = r"(?P<class>[^/]+)/(?P<image>[^/]+)_(?P<channel>nuc|tub|prot)\.(?:tif|png|jpg)"
SIZE = 256


def write_good(folder, name, seed, index):
    planes = synthetic_field_channels(seed, size=SIZE, index=index)
    for key, plane in zip(("nuc", "tub", "prot"), (planes["nucleus"], planes["structure"], planes["protein"])):
        tifffile.imwrite(folder / f"{name}_{key}.tif", plane.astype(np.uint16) * 200)


def build_corpus(root):
    """Good fields in two classes (one with a non-ASCII name) plus one field per bad case."""
    good = root / "ok"
    bad = root / "bad"
    for folder in (good, bad):
        folder.mkdir(parents=True)
    for i in range(3):
        write_good(good, f"good{i}", 30, i)
    write_good(good, "zelle_ä_µ", 30, 3)  # non-ASCII file name: read like any other
    for i in range(3):
        write_good(bad, f"fine{i}", 31, i)  # the class of the bad fields keeps good ones too

    def others(name, skip=()):
        planes = synthetic_field_channels(32, size=SIZE, index=len(name))
        for key, plane in (("tub", planes["structure"]), ("prot", planes["protein"])):
            if key not in skip:
                tifffile.imwrite(bad / f"{name}_{key}.tif", plane.astype(np.uint16))

    # Truncated TIFF: the first half of a valid file.
    full = bad / "trunc_nuc.tif"
    tifffile.imwrite(full, (np.random.default_rng(0).random((SIZE, SIZE)) * 4000).astype(np.uint16))
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    others("trunc")
    # Corrupt PNG (valid signature, garbage after) and corrupt JPEG, as the two other channels.
    (bad / "corrupt_nuc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    others("corrupt")
    (bad / "jpeg_nuc.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 300)
    others("jpeg")
    # 0-byte file.
    (bad / "empty_nuc.tif").write_bytes(b"")
    others("empty")
    # Wrong number of channels: an RGB PNG where a single channel is expected is fine (max of
    # R, G, B), but a 2-plane TIFF for one channel cannot be resolved.
    tifffile.imwrite(bad / "planes_nuc.tif", np.zeros((2, SIZE, SIZE), np.uint16))
    others("planes")
    # Channel files of different shapes.
    tifffile.imwrite(bad / "shapes_nuc.tif", np.zeros((SIZE // 2, SIZE), np.uint16))
    others("shapes")
    # NaN and inf values.
    nan = synthetic_field_channels(33, size=SIZE)["nucleus"].astype(np.float32)
    nan[10:20, 10:20] = np.nan
    nan[30, 30] = np.inf
    tifffile.imwrite(bad / "nan_nuc.tif", nan)
    others("nan")
    # All-zero field, fully saturated field, a field with no nuclei (dark, flat): segmentation
    # finds nothing in any of them; they are counted, not errors.
    for name, value in (("zero", 0), ("saturated", 65535), ("dark", 7)):
        for key in ("nuc", "tub", "prot"):
            tifffile.imwrite(bad / f"{name}_{key}.tif", np.full((SIZE, SIZE), value, np.uint16))


def corpus_config(on_bad_image, **extra):
    config = {
        "seed": 0,
        "run_datasets": ["corpus"],
        "datasets": {
            "corpus": {
                "source": "local",
                "path": "data/corpus",
                "pattern": PATTERN,
                "channels": CHANNELS,
                "on_bad_image": on_bad_image,
                "shard_size": 8,
            }
        },
        "segmentation": {"min_area": 40, "overlay_fields": 1},
        "filter": {"min_area": 40, "min_cells_per_group": 1},
        "models": {"ae": {"family": "ae", "latent_dim": 4, "width": 4, "depth": 3, "epochs": 1}},
    }
    for key, value in extra.items():
        config.setdefault(key, {}).update(value)
    return config


def run_corpus(work, on_bad_image, check=True, **extra):
    (work / "config.yaml").write_text(yaml.safe_dump(corpus_config(on_bad_image, **extra), allow_unicode=True))
    return snakemake(work, "results/corpus/cells.parquet", "--configfile", str(work / "config.yaml"), check=check)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    build_corpus(work / "data" / "corpus")
    return work


@pytest.fixture(scope="module")
def skipped_run(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("skip")
    shutil.copytree(corpus / "data", work / "data")
    run_corpus(work, "skip")
    return work


def test_skip_mode_counts_every_bad_field_by_reason(skipped_run):
    qc = skipped_run / "results" / "corpus" / "qc"
    drops = pd.read_csv(qc / "drops.csv")
    count = {(r.stage, r.reason): r.count for r in drops.itertuples()}
    assert count[("load", "bad_image_unreadable")] == 4  # truncated TIFF, corrupt PNG, corrupt JPEG, 0 bytes
    assert count[("load", "bad_image_wrong_channels")] == 1
    assert count[("load", "bad_image_shape_mismatch")] == 1
    assert count[("load", "bad_image_non_finite")] == 1
    assert count[("segment", "fields_read")] == 4 + 3 + 3  # good + fine + zero/saturated/dark
    assert count[("segment", "no_nuclei_found")] == 3
    skipped = pd.read_csv(qc / "skipped_fields.csv", keep_default_na=False)  # an image named "nan"
    by_image = dict(zip(skipped["image"], skipped["reason"]))
    assert by_image == {
        "trunc": "unreadable",
        "corrupt": "unreadable",
        "jpeg": "unreadable",
        "empty": "unreadable",
        "planes": "wrong_channels",
        "shapes": "shape_mismatch",
        "nan": "non_finite",
    }
    messages = dict(zip(skipped["image"], skipped["message"]))
    assert "trunc_nuc.tif" in messages["trunc"] and "cannot read image" in messages["trunc"]
    assert "empty_nuc.tif" in messages["empty"] and "0 bytes" in messages["empty"]
    assert "2 planes for the single channel 'nuc'" in messages["planes"]
    assert "differ in shape" in messages["shapes"] and "(128, 256)" in messages["shapes"]
    assert "NaN or inf" in messages["nan"] and "101 values" in messages["nan"]


def test_skip_mode_keeps_the_good_fields_and_non_ascii_names(skipped_run):
    cells = pd.read_parquet(skipped_run / "results" / "corpus" / "cells.parquet")
    images = set(cells["Metadata_image"])
    assert {"good0", "good1", "good2", "fine0", "fine1", "fine2"} <= images
    assert any("zelle" in image for image in images)  # the non-ASCII field was read and segmented
    assert not images & {"trunc", "corrupt", "jpeg", "empty", "planes", "shapes", "nan", "zero", "saturated", "dark"}
    assert len(cells) > 40


def test_fail_mode_stops_naming_the_file_and_the_way_out(corpus, tmp_path):
    shutil.copytree(corpus / "data", tmp_path / "data")
    proc = run_corpus(tmp_path, "fail", check=False)
    assert proc.returncode != 0
    log = "\n".join(p.read_text() for p in (tmp_path / "logs" / "corpus" / "load_fields").glob("*.log"))
    text = proc.stderr + log
    assert "BadImageError" in text and "on_bad_image: skip" in text
    assert any(f"{name}_nuc" in text for name in ("trunc", "corrupt", "jpeg", "empty", "planes", "shapes", "nan"))
    # Nothing half-written under a final name: no field array of a failed shard.
    failed = [p.stem for p in (tmp_path / "results" / "corpus" / "fields").glob("*.npz")]
    shards = pd.read_parquet(tmp_path / "results" / "corpus" / "index.parquet")["shard"].unique()
    assert len(failed) < len(shards)


def test_crop_larger_than_the_field_is_an_error_naming_the_key(corpus, tmp_path):
    shutil.copytree(corpus / "data" / "corpus" / "ok", tmp_path / "data" / "corpus" / "ok")
    proc = run_corpus(tmp_path, "fail", check=False, crop={"size": 300, "resize_to": 64})
    assert proc.returncode != 0
    log = "\n".join(p.read_text() for p in (tmp_path / "logs" / "corpus" / "segment_and_crop").glob("*.log"))
    assert "crop.size 300 is larger than field" in log and "256 x 256" in log and "crop.edge: pad" in log


def test_more_than_65535_nuclei_keep_distinct_labels():
    """Labels are int32: a field with 75,625 objects is not wrapped around at 65,535."""
    image = np.zeros((3, 1100, 1100), np.uint16)
    for dy in (1, 2):
        for dx in (1, 2):
            image[0, dy::4, dx::4] = 1000
    crops, table, labels = segment_and_crop(
        image,
        nucleus_channel=0,
        segmentation={"sigma": 0, "fill_holes": 0, "min_area": 1, "split_touching": False},
        crop={"size": 8, "resize_to": 8},
    )
    assert labels.dtype == np.int32 and labels.max() == 275 * 275
    assert table["Metadata_label"].nunique() == len(table) == len(crops) > 65_535


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop": {"size": "large"}}, r"crop.size = 'large': 'large' is not of type 'integer'"),
        ({"crop": {"size": 0}}, r"crop.size = 0: 0 is less than the minimum of 8"),
        (
            {"segmentation": {"sigma": -1.0}},
            r"segmentation.sigma = -1.0: -1.0 is less than or equal to the minimum of 0",
        ),
        ({"filter": {"min_cells_per_group": -3}}, r"filter.min_cells_per_group.*-3 is less than the minimum"),
        ({"crop": {"sizes": 64}}, r"crop.*'sizes' was unexpected"),
        ({"tiling": {"size": 64, "overlap": 64}}, r"tiling.overlap"),
        ({"seed": "zero"}, r"seed.*'zero' is not of type 'integer'"),
    ],
)
def test_config_errors_name_the_key_and_the_value(tmp_path, change, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "-n", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert re.search(message, text, flags=re.S), text[-3000:]
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"path": "data/nowhere"}, r"does not exist"),
        ({"channels": {**CHANNELS, "gfp": {"name": "GFP", "role": "other"}}}, r"gfp"),
    ],
)
def test_dataset_errors_name_the_path_or_channel(corpus, tmp_path, dataset, message):
    shutil.copytree(corpus / "data" / "corpus" / "ok", tmp_path / "data" / "corpus" / "ok")
    config = corpus_config("fail")
    config["datasets"]["corpus"].update(dataset)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    proc = snakemake(
        tmp_path, "results/corpus/index.parquet", "--configfile", str(tmp_path / "config.yaml"), check=False
    )
    assert proc.returncode != 0
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log")) if (tmp_path / "logs").exists() else ""
    text = proc.stdout + proc.stderr + log
    assert re.search(message, text, flags=re.S), text[-3000:]


def test_write_failure_leaves_nothing_under_a_final_name_and_a_rerun_completes(corpus, tmp_path):
    """A real write failure: the file-size limit (``ulimit -f``, EFBIG like a full disk) stops
    the field array mid-write. The failed job leaves no output under its final name and no
    temporary file; the same command without the limit then completes."""
    shutil.copytree(corpus / "data" / "corpus" / "ok", tmp_path / "data" / "corpus" / "ok")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(corpus_config("fail"), allow_unicode=True))
    target = "results/corpus/cells.parquet"
    cmd = (
        f"ulimit -f 256; exec {sys.executable} -m snakemake -s {REPO / 'Snakefile'} -d {tmp_path} --cores 2 "
        f"{target} --configfile {tmp_path / 'config.yaml'}"
    )
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "corpus" / "load_fields" / "s0000.log").read_text()
    assert "File too large" in log or "No space" in log
    results = tmp_path / "results" / "corpus"
    assert not (results / "fields" / "s0000.npz").exists()
    assert [p.name for p in results.rglob("*") if ".tmp" in p.name or p.name.startswith(".")] == []
    snakemake(tmp_path, target, "--configfile", str(tmp_path / "config.yaml"))
    assert len(pd.read_parquet(tmp_path / target)) > 20
