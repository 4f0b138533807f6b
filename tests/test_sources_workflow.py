"""Every source type through the real workflow to features, metrics and the report, in one
Snakemake run over five datasets: real images from a local folder, pre-cropped cells, a URL
manifest, the Human Protein Atlas and a BBBC archive set, the downloads served by a local
HTTP server with injected faults."""

import hashlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from tests.http_server import serve
from tests.source_fixtures import bbbc_fixture, composite_jpeg, hpa_gene_xml, hpa_image_url, synthetic_field_channels
from tests.test_workflow import REPO, planned_jobs, snakemake
from workflow_scripts.crop import segment_and_crop
from workflow_scripts.sources.synthetic import generate_field

GENES = {"ENSG00000134057": "CCNB1", "ENSG00000105968": "H2AZ2"}
CHANNEL_FILES = {"nucleus": "nuc", "structure": "tub", "protein": "prot"}


def _crops_dataset(root):
    """Cells cropped from synthetic fields, saved one 16-bit TIFF per channel per cell in one
    folder per class, at 48 px (the workflow resizes them to 64)."""
    for index in range(4):
        image, truth, fields, _ = generate_field(3, index, size=256, cells_per_field=14.0)
        crops, table, _ = segment_and_crop(
            image, nucleus_channel=0, segmentation={"min_area": 40}, crop={"size": 48, "resize_to": 48}
        )
        cls = fields["Metadata_class"] if isinstance(fields, dict) else str(fields["Metadata_class"].iloc[0])
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k, crop in enumerate(crops):
            for c, suffix in enumerate(("nuc", "tub", "prot")):
                tifffile.imwrite(folder / f"f{index}_cell{k:03d}_{suffix}.tif", crop[c].astype(np.uint16))


def _manifest_files():
    files = {}
    for index, cls in enumerate(["mitotic", "mitotic", "interphase", "interphase"]):
        planes = synthetic_field_channels(11, size=256, index=index)
        for name, suffix in CHANNEL_FILES.items():
            out = io.BytesIO()
            tifffile.imwrite(out, (planes[name].astype(np.uint16) * 200))
            files[f"screen/plate1/{cls}/field{index}_{suffix}.tif"] = out.getvalue()
    return files


def _hpa_files(base):
    files = {}
    for g, (ensg, symbol) in enumerate(GENES.items()):
        images = [{"plate": 700 + g, "well": w, "field": 1, "antibody": f"HPA00{g}123"} for w in ("A1", "B2", "C3")]
        files[f"{ensg}.xml"] = hpa_gene_xml(ensg, symbol, images)
        for i, image in enumerate(images):
            planes = synthetic_field_channels(20 + g, size=256, index=i)
            url = hpa_image_url(image)
            files[url.split("://", 1)[1].split("/", 1)[1]] = composite_jpeg(
                planes["nucleus"], planes["protein"], planes["structure"]
            )
    return files


@pytest.fixture(scope="module")
def sources_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("sources")
    shutil.copytree(REPO / "tests" / "data" / "example_human", work / "data" / "human")
    _crops_dataset(work / "data" / "crops")
    manifest_files = _manifest_files()
    bbbc = bbbc_fixture(n_plates=2, sites=(1, 2), size=192, seed=4)
    served = {**manifest_files, **_hpa_files(None), **{f"bbbc/{k}": v for k, v in bbbc.items()}}
    first = "screen/plate1/mitotic/field0_nuc.tif"
    faults = {first: ["drop"], "screen/plate1/interphase/field2_prot.tif": ["500", "503"]}
    with serve(served, faults=faults) as server:
        rows = [
            {
                "url": server.url_for(path),
                "path": path.split("/", 1)[1],
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
            for path, data in manifest_files.items()
        ]
        pd.DataFrame(rows).to_csv(work / "manifest.csv", index=False)
        (work / "genes.txt").write_text("ensembl_id,symbol\n" + "".join(f"{e},{s}\n" for e, s in GENES.items()))
        chan3 = {
            "nuc": {"name": "DNA", "role": "nucleus"},
            "tub": {"name": "tubulin", "role": "structure"},
            "prot": {"name": "protein", "role": "protein"},
        }
        fast = {"workers": 3, "retries": 4, "backoff": 0.01, "timeout": 10}
        config = {
            "seed": 2,
            "datasets": {
                "human": {
                    "source": "local",
                    "path": "data/human",
                    "pattern": r"(?P<image>.+)d(?P<channel>[0-2])\.tif",
                    "class": "image",
                    "channels": {
                        "0": {"name": "DNA", "role": "nucleus"},
                        "1": {"name": "PH3", "role": "protein"},
                        "2": {"name": "cellbody", "role": "structure"},
                    },
                },
                "cropped": {
                    "source": "crops",
                    "path": "data/crops",
                    "pattern": r"(?P<class>[^/]+)/(?P<image>f\d)_cell\d+_(?P<channel>nuc|tub|prot)\.tif",
                    "channels": chan3,
                },
                "screen": {
                    "source": "manifest",
                    "manifest": "manifest.csv",
                    "path": "downloads/screen",
                    "pattern": r"(?P<plate>[^/]+)/(?P<class>[^/]+)/(?P<image>field\d)_(?P<channel>nuc|tub|prot)\.tif",
                    "channels": chan3,
                    "download": fast,
                },
                "atlas": {
                    "source": "hpa",
                    "genes": "genes.txt",
                    "path": "downloads/atlas",
                    "base_url": server.url,
                    "image_base_url": server.url,
                    "max_images_per_gene": 2,
                    "download": fast,
                },
                "bbbc": {
                    "source": "bbbc",
                    "archives": [server.url_for(f"bbbc/{k}") for k in bbbc if k.endswith(".zip")],
                    "image_csv": [server.url_for("bbbc/BBBC021_v1_image.csv")],
                    "moa_csv": server.url_for("bbbc/BBBC021_v1_moa.csv"),
                    "channels": {
                        "DAPI": {"name": "DNA", "role": "nucleus"},
                        "Tubulin": {"name": "tubulin", "role": "structure"},
                        "Actin": {"name": "actin", "role": "protein"},
                    },
                    "class": "compound",
                    "download": fast,
                },
            },
            "segmentation": {"min_area": 40, "overlay_fields": 1},
            "crop": {"edge": "pad"},
            "filter": {"min_area": 40, "min_cells_per_group": 1},
            "split": {"by": "Metadata_cell"},
            "models": {"ae": {"family": "ae", "latent_dim": 4, "width": 4, "depth": 3, "epochs": 1, "batch_size": 32}},
            "metrics": {
                "neighbors": [5, 10],
                "summary_k": 5,
                "max_cells": 400,
                "n_splits": 2,
                "curve_sizes": 3,
                "mlp_epochs": 2,
                "mi_epochs": 2,
                "knn": [5],
            },
            "baselines": {"random_cnn": False},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        proc = snakemake(work, "--configfile", str(work / "config.yaml"))
        yield {"work": work, "server": server, "proc": proc, "manifest": manifest_files, "first": first}


DATASETS = ("human", "cropped", "screen", "atlas", "bbbc")


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_source_reaches_features_and_metrics(sources_run, dataset):
    res = sources_run["work"] / "results" / dataset
    summary = pd.read_csv(res / "metrics" / "summary.csv")
    assert set(summary["model"]) == {"pca", "handcrafted", "cellcount", "ae"}
    assert (summary["n_cells"] >= 10).all()
    assert summary["trustworthiness"].between(0, 1).all()
    table = pd.read_parquet(res / "features" / "ae" / "conv1.parquet")
    assert table["Metadata_dataset"].eq(dataset).all()
    assert table["Metadata_cell"].is_unique
    features = table[[c for c in table.columns if not c.startswith("Metadata_")]].to_numpy()
    assert features.shape[1] == 4 and np.isfinite(features).all() and features.std(axis=0).max() > 0
    assert (res / "embeddings" / "best_umap.png").stat().st_size > 0


def test_source_metadata_travels_to_features(sources_run):
    res = sources_run["work"] / "results"
    atlas = pd.read_parquet(res / "atlas" / "features" / "ae" / "conv1.parquet")
    assert set(atlas["Metadata_class"]) == set(GENES.values())
    assert atlas["Metadata_image"].nunique() == 4  # max_images_per_gene: 2 of 3 per gene
    bbbc = pd.read_parquet(res / "bbbc" / "features" / "ae" / "conv1.parquet")
    assert set(bbbc["Metadata_class"]) <= {"DMSO", "taxol", "docetaxel", "nocodazole"}
    assert bbbc.loc[bbbc["Metadata_class"] == "taxol", "Metadata_moa"].eq("Microtubule stabilizers").all()
    assert bbbc.loc[bbbc["Metadata_class"] == "DMSO", "Metadata_moa"].isna().all()
    screen = pd.read_parquet(res / "screen" / "features" / "ae" / "conv1.parquet")
    assert set(screen["Metadata_class"]) == {"mitotic", "interphase"}
    assert set(screen["Metadata_plate"]) == {"plate1"}
    cropped = pd.read_parquet(res / "cropped" / "cells.parquet")
    assert set(cropped["Metadata_group"]) == {"f0", "f1", "f2", "f3"}
    human = pd.read_parquet(res / "human" / "cells.parquet")
    assert len(human) > 150  # the real field holds about 300 nuclei


def test_downloads_land_in_the_dataset_path(sources_run):
    """An HPA dataset with ``path``: the images land there, the field table stays with the
    workflow's outputs, and the index reads the images from the path."""
    work = sources_run["work"]
    fields = pd.read_csv(work / "results" / "atlas" / "raw" / "fields.csv")
    assert not (work / "results" / "atlas" / "raw" / "CCNB1").exists()
    assert all((work / "downloads" / "atlas" / path).is_file() for path in fields["file_blue"])
    index = pd.read_parquet(work / "results" / "atlas" / "index.parquet")
    assert len(index) == len(fields) == 4


def test_manifest_downloads_verified_and_resumed(sources_run):
    work, server = sources_run["work"], sources_run["server"]
    for path, data in sources_run["manifest"].items():
        assert (work / "downloads" / "screen" / path.split("/", 1)[1]).read_bytes() == data
    ranges = [r for p, r in server.requests if p == sources_run["first"]]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:].rstrip("-")) > 0  # the dropped transfer resumed, not restarted
    assert not list((work / "downloads").rglob("*.part"))
    report = json.loads((work / "results" / "screen" / "acquire" / "download.json").read_text())
    assert report["files"] == 12 and report["downloaded"] == 12


def test_complete_sources_run_has_nothing_to_do(sources_run):
    work = sources_run["work"]
    n_requests = len(sources_run["server"].requests)
    proc = snakemake(work, "--configfile", str(work / "config.yaml"), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, planned_jobs(proc)
    assert len(sources_run["server"].requests) == n_requests


def test_new_image_in_local_folder_reindexes(sources_run):
    work = sources_run["work"]
    extra = work / "data" / "human" / "copy_of_fieldd0.tif"
    shutil.copy(work / "data" / "human" / "AS_09125_050116030001_D03f00d0.tif", extra)
    try:
        proc = snakemake(work, "--configfile", str(work / "config.yaml"), "-n")
        jobs = planned_jobs(proc)
        assert jobs.get("index_dataset") == 1 and "acquire_hpa" not in jobs and "download_manifest" not in jobs
    finally:
        extra.unlink()


def test_report_lists_every_dataset(sources_run):
    work = sources_run["work"]
    snakemake(work, "--configfile", str(work / "config.yaml"), "--report", str(work / "report.html"))
    html = (work / "report.html").read_text(errors="replace")
    for dataset in DATASETS:
        assert f"results/{dataset}/metrics/summary.csv" in html or dataset in html


EXAMPLE_FILES = {
    "local_folder.yaml": ["data/screen1/", "data/screen1/metadata.csv"],
    "crops.yaml": ["data/yeast/images/"],
    "manifest.yaml": ["data/manifest.csv"],
    "hpa.yaml": ["data/hpa_genes.csv"],
    "bbbc021.yaml": [],
    "example_human.yaml": [],
    "all_families.yaml": [],
    "full_gpu.yaml": [],
    "guided.yaml": ["feedback.csv"],
    "screen.yaml": [],
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_FILES))
def test_example_configs_validate_and_plan(tmp_path, example):
    """Every documented example is a valid config whose DAG builds (dry run) once its input
    files exist; its datasets replace config.yaml's synthetic one."""
    assert sorted(p.name for p in (REPO / "config" / "examples").glob("*.yaml")) == sorted(EXAMPLE_FILES)
    for rel in EXAMPLE_FILES[example]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not rel.endswith("/"):
            path.write_text("image\n")
        else:
            path.mkdir(exist_ok=True)
    shutil.copytree(REPO / "tests" / "data" / "example_human", tmp_path / "tests" / "data" / "example_human")
    config = yaml.safe_load((REPO / "config" / "examples" / example).read_text())
    proc = snakemake(tmp_path, "--configfile", str(REPO / "config.yaml"), str(REPO / "config" / "examples" / example), "-n")
    jobs = planned_jobs(proc)
    wanted = config.get("run_datasets")
    synthetic = [name for name in wanted or [] if config["datasets"][name]["source"] == "synthetic"]
    if wanted and synthetic:  # its own synthetic datasets only: one synthesis job per shard
        assert jobs.get("synthesize_fields", 0) > 0 and "index_dataset" not in jobs
    elif wanted:
        assert "synthesize_fields" not in jobs
        assert jobs.get("index_dataset") == len(wanted)
    else:
        assert jobs.get("synthesize_fields", 0) > 0
    screens = [n for n in wanted or [] if config["datasets"][n].get("layout") or config["datasets"][n].get("plates")]
    if screens:  # a plate layout plans the profiles stage and the screening metrics
        assert jobs.get("screen_summary") == len(screens) and jobs.get("screen_baselines") == len(screens)
