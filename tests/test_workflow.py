"""The workflow through Snakemake itself: dry runs, a whole tiny run, staleness, the report."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_scripts.io import feature_columns
from workflow_scripts.models.spec import FAMILIES, feature_layers, layer_names, resolve_model

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def planned_jobs(proc):
    """Rule -> count from the job-stats table of a (dry) run."""
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:")[1] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_default_config_dry_run(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    jobs = planned_jobs(snakemake(tmp_path, "-n"))
    # Jobs at shard granularity: 64 fields / 16 per shard = 4 segmentation jobs, not 64.
    assert jobs["synthesize_fields"] == 4 and jobs["segment_and_crop"] == 4
    assert jobs["train_model"] == 3  # the quick preset: vae, paired inpainting, contrastive
    assert {"extract_features_vae", "extract_features_pci", "extract_features_simclr"} <= set(jobs)
    # One evaluation job per model, covering all its layers, and one for all the baselines.
    assert {rule for rule in jobs if rule.startswith("evaluate_")} == {
        "evaluate_baselines",
        "evaluate_vae",
        "evaluate_pci",
        "evaluate_simclr",
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["models"]["vae"].update(dropout=0.5), "dropout"),
        (lambda c: c["models"]["vae"].update(epochs="ten"), "ten"),
        (lambda c: c["crop"].update(size=-4), "-4"),
        (lambda c: c.update(segmentaton={}), "segmentaton"),
        (lambda c: c["datasets"]["synthetic"].update(source="ftp"), "ftp"),
        (lambda c: c["tiling"].update(overlap=64), "tiling.overlap"),
    ],
)
def test_bad_config_rejected_naming_key(tmp_path, edit, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY, workdir / "config.yaml")
    snakemake(workdir)
    return workdir


@pytest.mark.slow
def test_tiny_run_outputs(tiny_run):
    res = tiny_run / "results" / "tiny"
    cells = pd.read_parquet(res / "cells.parquet")
    for column in (
        "Metadata_dataset",
        "Metadata_image",
        "Metadata_cell",
        "Metadata_x",
        "Metadata_y",
        "Metadata_area",
        "Metadata_class",
        "Metadata_group",
        "Metadata_trajectory",
    ):
        assert column in cells.columns, column
    assert cells["Metadata_cell"].is_unique
    assert cells["Metadata_trajectory"].notna().mean() > 0.9  # ground truth matched to segmented nuclei
    crops = np.load(res / "cells" / "s0000.npy", mmap_mode="r")
    assert crops.shape[1:] == (3, 64, 64)

    drops = pd.read_csv(res / "qc" / "drops.csv")
    kept = drops.query("reason == 'kept' and unit == 'cells'")["count"].item()
    assert kept == len(cells)

    config = yaml.safe_load(TINY.read_text())
    assert {params["family"] for params in config["models"].values()} == set(FAMILIES)  # every family, end to end
    tables = 1 + 1 + 4 + 1  # baselines: pca/pixels, handcrafted/all, random_cnn/conv1..4, cellcount/count
    for model, entry in config["models"].items():
        params = resolve_model(model, entry)
        mdir = res / "models" / model
        for name in ("weights.safetensors", "model.json", "history.csv", "learning_curve.png", "reconstructions.png"):
            assert (mdir / name).stat().st_size > 0, (model, name)
        assert not (mdir / "checkpoint.pt").exists()
        record = json.loads((mdir / "model.json").read_text())
        assert record["family"] == params["family"] and record["layers"] == layer_names(params["family"], params)
        layers = feature_layers(params["family"], params, config["features"]["pooling"])
        assert any(name.endswith("_max") for name in layers)
        for layer in layers:
            table = pd.read_parquet(res / "features" / model / f"{layer}.parquet")
            assert list(table["Metadata_cell"]) == list(cells["Metadata_cell"])  # one row per cell
            values = table.filter(like=f"{layer}_").to_numpy()
            assert values.shape[1] > 0 and np.isfinite(values).all()
        tables += len(layers)
    history = pd.read_csv(res / "models" / "vae" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert json.loads((res / "models" / "tileae" / "model.json").read_text())["normalization"]["clip"] is True
    assert json.loads((res / "models" / "pci" / "model.json").read_text())["normalization"]["kind"] == "per_cell_minmax"
    # normalize: the choice and the transform it implies are recorded with the weights.
    for model, kind in (("vae", "affine"), ("scvae", "per_field_robust"), ("infomax", "per_cell_robust")):
        record = json.loads((res / "models" / model / "model.json").read_text())
        assert record["normalization"]["kind"] == kind
        assert record["params"]["normalize"] == config["models"][model]["normalize"]
    assert "normalize: cell" in (tiny_run / "logs" / "tiny" / "pca_features.log").read_text()
    assert (res / "models" / "tileae" / "stitched.png").stat().st_size > 1000
    gan_history = pd.read_csv(res / "models" / "gan" / "history.csv")
    assert {"train_d_loss", "train_g_loss", "train_mi_loss", "train_gp"} <= set(gan_history.columns)
    infomax_history = pd.read_csv(res / "models" / "infomax" / "history.csv")
    assert {"train_mi", "val_mi", "train_kl"} <= set(infomax_history.columns)
    stats = json.loads((res / "tiles" / "stats.json").read_text())
    assert stats["n_train_tiles"] > 0 and stats["n_val_tiles"] > 0

    summary = pd.read_csv(res / "metrics" / "summary.csv")
    assert list(summary.columns[:6]) == ["model", "layer", "kind", "normalize", "n_cells", "n_features"]
    normalize = summary.groupby("model")["normalize"].first()
    assert (normalize["vae"], normalize["scvae"], normalize["pca"], normalize["handcrafted"]) == (
        "dataset",
        "field",
        "cell",
        "cell",
    )
    assert normalize.get("cellcount", "") in ("", None) or pd.isna(normalize["cellcount"])
    for column in (
        "logreg_accuracy_grouped",
        "logreg_f1_grouped",
        "logreg_accuracy_stratified",
        "mlp_accuracy_grouped",
        "knn5_accuracy_grouped",
        "map",
        "profile_map",
        "mutual_information",
        "trustworthiness",
        "continuity",
        "trustworthiness_auc",
        "continuity_auc",
        "lcmc_auc",
        "backbone_spearman",
        "backbone_tortuosity",
        "mig",
        "sap",
    ):
        assert column in summary.columns, column
    assert len(summary) == tables
    assert summary.iloc[0][["model", "layer"]].tolist() == ["pca", "pixels"]
    baselines = summary[summary["kind"] == "baseline"]
    assert set(baselines["model"]) == {"pca", "handcrafted", "random_cnn", "cellcount"}
    assert set(summary.loc[summary["kind"] != "baseline", "kind"]) == set(FAMILIES)
    bounded = [
        "logreg_accuracy_grouped",
        "mlp_accuracy_grouped",
        "map",
        "trustworthiness",
        "continuity",
        "trustworthiness_auc",
        "lcmc_auc",
        "mig",
        "sap",
    ]
    assert summary[bounded].apply(lambda s: s.dropna().between(-1e-9, 1)).all().all()
    # Every layer has every metric except where a baseline cannot have one (1-D cell count: no MIG/SAP).
    learned = summary[summary["kind"] != "baseline"]
    assert learned[bounded + ["mutual_information", "backbone_spearman"]].notna().all().all()
    layer_json = json.loads((res / "metrics" / "vae" / "mu.json").read_text())
    assert len(layer_json["curves"]["ks"]) >= 3 and set(layer_json["curves"]["auc"]) == {
        "trustworthiness",
        "continuity",
        "lcmc",
    }
    assert np.array(layer_json["logreg_grouped"]["confusion"]).sum() == layer_json["n_cells"]
    # The grouped protocol actually used: 8 fields of 4 classes, n_splits 2 -> 2 folds, 2 fields per class.
    assert layer_json["protocol"] == layer_json["logreg_grouped"]["protocol"]
    assert layer_json["protocol"]["name"] == "stratified_group" and layer_json["protocol"]["folds"] == 2
    assert set(layer_json["protocol"]["groups_per_class"].values()) == {2}
    html = (res / "metrics" / "comparison.html").read_text()
    assert html.count("font-weight:bold") >= 10 and "handcrafted" in html
    assert "stratified group, 2 folds of whole groups, every class in every training fold" in html
    for name in (
        "embeddings/best_umap.png",
        "embeddings/best_tsne.png",
        "embeddings/handcrafted_umap.png",
        "embeddings/handcrafted_tsne.png",
        "qc/segmentation_overlay.png",
        "metrics/summary.png",
        "metrics/all_metrics.png",
    ):
        assert (res / name).stat().st_size > 1000, name
    coords = pd.read_parquet(res / "embeddings" / "best_layer.parquet")
    assert coords["local_quality"].between(0, 1).all() and {"UMAP_1", "TSNE_1"} <= set(coords.columns)
    profile = pd.read_parquet(res / "profiles" / "vae" / "mu.parquet")
    assert len(profile) == cells["Metadata_group"].nunique()
    assert profile["Metadata_n_cells"].sum() == len(cells) and "Metadata_class" in profile.columns
    assert (res / "profiles" / "handcrafted" / "all.parquet").exists()
    # profiles.h5ad: AnnData files of the cells and of the profiles, same numbers as the tables.
    with h5py.File(res / "profiles" / "vae" / "mu.h5ad", "r") as f:
        assert f.attrs["encoding-type"] == "anndata"
        np.testing.assert_allclose(f["X"][:], profile[feature_columns(profile)].to_numpy(np.float32))
        assert [v.decode() for v in f["obs/_index"][:]] == profile["Metadata_group"].astype(str).tolist()
    features = pd.read_parquet(res / "features" / "vae" / "mu.parquet")
    with h5py.File(res / "profiles" / "vae" / "mu.cells.h5ad", "r") as f:
        assert f["X"].shape == (len(features), len(feature_columns(features)))


@pytest.mark.slow
def test_complete_run_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_training_change_reruns_training_not_segmentation(tiny_run):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["models"]["vae"]["lr"] = 0.0005
    changed = tiny_run / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(tiny_run, "-n", "--configfile", str(changed)))
    assert jobs.get("train_model") == 1  # only the changed model
    assert jobs.get("extract_features_vae") == 1
    assert not [rule for rule in jobs if rule.startswith("extract_features_") and rule != "extract_features_vae"]
    assert [rule for rule in jobs if rule.startswith("evaluate_")] == ["evaluate_vae"]
    assert jobs.get("summarize_metrics") == 1
    assert "handcrafted_features" not in jobs and "random_cnn_features" not in jobs
    for upstream in ("synthesize_fields", "segment_and_crop", "filter_cells", "pca_features", "tile_fields"):
        assert upstream not in jobs, upstream


@pytest.mark.slow
def test_report_builds_and_renders_in_chromium(tiny_run):
    """The report is built, then opened in headless Chromium: its sections render (they exist
    only after the page's JavaScript ran) and a screenshot is kept in the run folder."""
    from PIL import Image

    from tests.browser import render, report_sections, require_chromium, visible_text

    snakemake(tiny_run, "--report", "report.html")
    report = tiny_run / "report.html"
    assert report.stat().st_size > 10_000
    require_chromium()
    shot = tiny_run / "report_screenshot.png"
    dom = render(report, screenshot=shot)
    assert sorted(report_sections(dom)) == ["Embeddings", "Explorer", "Metrics", "QC", "Training"]
    raw = report.read_text(errors="replace")
    assert "segmentation_qc.png" in raw and "segmentation_overlay.png" in raw  # scale and per-field QC shown
    text = visible_text(dom)
    assert "cellembed" in text and "Loading Snakemake Report" not in text
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(set(image.convert("L").getdata())) > 20  # something was drawn
    artifacts = REPO / "tests" / "artifacts"  # gitignored: kept for a human to look at after a run
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "report_screenshot.png")


def test_lint_and_format_clean():
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile"), "-d", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(["snakefmt", "--check", str(REPO)], capture_output=True, text=True, timeout=300)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_resumes(tmp_path):
    """Kill Snakemake and its training job with SIGKILL mid-training; the same command (after
    --unlock) resumes from the last completed epoch instead of starting over."""
    import os
    import signal
    import time

    config = yaml.safe_load(TINY.read_text())
    config["models"] = {
        "vae": {"family": "vae", "latent_dim": 8, "width": 32, "depth": 3, "epochs": 12, "batch_size": 16}
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/tiny/models/vae/weights.safetensors"
    log = tmp_path / "logs" / "tiny" / "train_model" / "vae.log"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path),
        "--cores",
        "2",
        target,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and "epoch 3/12" in log.read_text():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = tmp_path / "results" / "tiny" / "models" / "vae" / "checkpoint.pt"
    import torch

    done = torch.load(checkpoint, weights_only=True)["epoch"]
    # "epoch 3/12" is logged just before epoch 3's checkpoint is written: epoch 2's is there.
    assert 2 <= done < 12
    assert not (tmp_path / target).exists()

    snakemake(tmp_path, "--unlock")
    # Only the killed (incomplete) job is redone: synthesis, segmentation, filtering and tiling
    # finished before the kill and are not planned again.
    planned = planned_jobs(snakemake(tmp_path, target, "-n"))
    assert {rule for rule in planned if rule != "total"} == {"train_model"}, planned
    snakemake(tmp_path, target)  # the profile's rerun-incomplete rebuilds the killed job
    text = log.read_text()
    assert f"after epoch {done}" in text and "resuming from checkpoint" in text
    assert f"epoch {done}/12" not in text  # completed epochs are not trained again
    history = pd.read_csv(tmp_path / "results" / "tiny" / "models" / "vae" / "history.csv")
    assert list(history["epoch"]) == list(range(1, 13))
    assert not checkpoint.exists()


@pytest.mark.slow
def test_explorer_pages_open_and_work_in_a_real_browser(tiny_run):
    """Each model's explorer page opens from disk in headless Chromium (Selenium): hovering a
    point shows its thumbnail and metadata, a box drag selects cells, they are labelled and
    exported as CSV (shown and downloaded). A screenshot goes to tests/artifacts/."""
    from tests.explorer_browser import drive_explorer

    res = tiny_run / "results" / "tiny"
    pages = sorted((res / "explorer").glob("*/*.html"))
    config = yaml.safe_load(TINY.read_text())
    assert {p.parent.name for p in pages} == set(config["models"])
    assert all(p.stat().st_size < 50e6 for p in pages)
    artifacts = REPO / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    seen = drive_explorer(res / "explorer" / "vae" / "mu.html", artifacts / "explorer_screenshot.png", tiny_run / "dl")
    cells = pd.read_parquet(res / "cells.parquet").set_index("Metadata_cell")
    assert seen["cell"] in cells.index
    assert f"cell: {seen['cell']}" in seen["tooltip"]
    assert f"class: {cells.loc[seen['cell'], 'Metadata_class']}" in seen["tooltip"]
    assert seen["thumbnail_px"] == 32  # the crop's composite, decoded by the browser
    assert seen["selected"] >= 1 and seen["feedback_rows"] == seen["selected"]
    lines = seen["csv"].strip().splitlines()
    assert lines[0] == "Metadata_cell,label,anchor_x,anchor_y,weight"
    assert len(lines) == 1 + seen["selected"] and all(",mitotic,,,1" in line for line in lines[1:])
    assert seen["downloaded"] == seen["csv"]
    assert (artifacts / "explorer_screenshot.png").stat().st_size > 10_000


def _planned(proc) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a (dry) run lists."""
    text = proc.stdout + proc.stderr
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if head:
            wildcards = re.search(r"wildcards: ([^\n]+)", block)
            jobs.append((head.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


@pytest.mark.slow
def test_feedback_from_the_explorer_retrains_only_the_guided_model(tiny_run, tmp_path):
    """Cells labelled in the explorer become a guided VAE's feedback. Adding the guided model
    trains it alone (the finished models are not touched); editing the feedback file then
    re-plans only that model's training and what depends on it."""
    from tests.explorer_browser import drive_explorer

    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    seen = drive_explorer(
        work / "results" / "tiny" / "explorer" / "vae" / "mu.html", tmp_path / "shot.png", tmp_path / "dl"
    )
    (work / "feedback.csv").write_text(seen["downloaded"])
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["models"]["guided"] = {**config["models"]["vae"], "guided": True, "feedback": "feedback.csv"}
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    proc = snakemake(work)
    trained = {w for rule, w in _planned(proc) if rule == "train_model"}
    assert trained == {"dataset=tiny, model=guided"}, trained
    record = json.loads((work / "results" / "tiny" / "models" / "guided" / "model.json").read_text())
    assert record["params"]["guided"] and record["params"]["feedback_classes"] == ["mitotic"]
    log = (work / "logs" / "tiny" / "train_model" / "guided.log").read_text()
    assert f"{seen['selected']} labelled cells (mitotic)" in log
    summary = pd.read_csv(work / "results" / "tiny" / "metrics" / "summary.csv")
    assert "guided" in set(summary["model"])
    html = (work / "results" / "tiny" / "metrics" / "comparison.html").read_text()
    assert "Expert feedback: guided (guided) against vae (unguided)" in html

    with open(work / "feedback.csv", "a") as out:
        out.write(
            f"{pd.read_parquet(work / 'results' / 'tiny' / 'cells.parquet')['Metadata_cell'].iloc[-1]},interphase,,,1\n"
        )
    planned = _planned(snakemake(work, "-n"))
    models = {re.search(r"model=(\w+)", w).group(1) for rule, w in planned if "model=" in w}
    assert models == {"guided"}, planned
    rules = {rule for rule, _ in planned}
    assert "train_model" in rules and "extract_features_guided" in rules and "evaluate_guided" in rules
    assert not rules & {"synthesize_fields", "segment_and_crop", "evaluate_vae", "extract_features_vae"}
