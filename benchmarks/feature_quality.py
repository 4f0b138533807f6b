"""Feature quality: every model family (quick preset), the baselines and each normalisation,
scored the same way on the default synthetic dataset.

For each ``normalize`` value asked for, the default pipeline runs up to the feature tables
(``snakemake --until extract_features_<model> pca_features handcrafted_features
random_cnn_features``) in its own working folder, with one model per family and that
normalisation for the models and the baselines alike (``models.<family>.normalize`` and
``baselines.normalize``); everything else is the repository's ``config.yaml``. Then every
feature table (each layer of each model) is scored here with the workflow's own metrics:

- grouped logistic-regression accuracy and macro-F1 (``metrics.classification.logreg_accuracy``:
  whole fields held out, every class in every training fold; the protocol is recorded);
- mAP of retrieving same-class cells by cosine similarity of z-scored features
  (``metrics.retrieval.mean_average_precision``).

It writes ``benchmarks/out/feature_quality.json``; ``python benchmarks/report.py`` renders the
table of the best layer of each method into BENCHMARKS.md. About 30 min per normalisation on
2 CPU cores (training dominates).

    python benchmarks/feature_quality.py                          # all families, dataset and cell
    python benchmarks/feature_quality.py --families vae contrastive --normalize cell
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, run_record  # noqa: E402

from workflow_scripts.metrics.classification import logreg_accuracy  # noqa: E402
from workflow_scripts.metrics.retrieval import mean_average_precision  # noqa: E402
from workflow_scripts.models.spec import FAMILIES  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
BASELINES = {"pca": "pca_features", "handcrafted": "handcrafted_features", "random_cnn": "random_cnn_features"}


def run_features(workdir: Path, families: list[str], normalize: str, cores: int, limit_s: float) -> float:
    """The pipeline up to the feature tables of ``families`` and the baselines; wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["models"] = {family: {"family": family, "normalize": normalize} for family in families}
    config.setdefault("baselines", {})["normalize"] = normalize
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rules = [f"extract_features_{family}" for family in families] + list(BASELINES.values())
    snakemake = shutil.which("snakemake") or "snakemake"
    cmd = [snakemake, "--cores", str(cores), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--keep-going", "--until", *rules]
    t0 = time.perf_counter()
    with open(workdir / "snakemake.out", "w") as out:
        proc = subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=limit_s, check=False)
    if proc.returncode != 0:  # --keep-going: the tables that were made are still scored
        tail = (workdir / "snakemake.out").read_text()[-3000:]
        print(f"snakemake failed (exit {proc.returncode}); see {workdir}/snakemake.out:\n{tail}", flush=True)
    return time.perf_counter() - t0


def _train_seconds(workdir: Path, dataset: str, model: str) -> float | None:
    path = workdir / "logs" / dataset / "train_model" / f"{model}.bench.tsv"
    if not path.exists():
        return None
    with open(path) as fh:
        return float(next(csv.DictReader(fh, delimiter="\t"))["s"])


def score_table(path: Path, label: str, group_by: str, n_splits: int, seed: int) -> dict:
    """Grouped logistic regression (accuracy, macro-F1, protocol) and cell retrieval mAP."""
    table = pd.read_parquet(path)
    features = table[[c for c in table.columns if not c.startswith("Metadata_")]].to_numpy(np.float64)
    labels = table[label].astype(str).to_numpy()
    groups = table[group_by].astype(str).to_numpy()
    result = logreg_accuracy(features, labels, groups=groups, n_splits=n_splits, seed=seed)
    sd = features.std(axis=0)
    z = (features[:, sd > 0] - features[:, sd > 0].mean(axis=0)) / sd[sd > 0]
    usable = np.abs(z).sum(axis=1) > 0  # a row of zeros has no cosine similarity
    return {
        "n_cells": len(table),
        "n_features": int(features.shape[1]),
        "accuracy": result["accuracy_mean"],
        "accuracy_sd": result["accuracy_sd"],
        "f1_macro": result["f1_macro_mean"],
        "map": float(mean_average_precision(z[usable], labels[usable])["map"]) if z.shape[1] else None,
        "protocol": result["protocol"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--normalize", nargs="+", default=["dataset", "cell"], choices=["dataset", "cell", "field"])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--limit-s", type=float, default=4 * 3600.0, help="stop a pipeline run after this long")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folders")
    parser.add_argument("--out", type=Path, default=OUT / "feature_quality.json")
    parser.add_argument(
        "--merge", action="store_true", help="keep the rows of --out for the methods and normalisations not run now"
    )
    args = parser.parse_args(argv)

    started, load_start = time.time(), load_average()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    dataset = next(iter(config["datasets"]))
    metrics = config.get("metrics", {})
    label, group_by = metrics.get("label", "Metadata_class"), metrics.get("group_by", "Metadata_group")
    n_splits, seed = int(metrics.get("n_splits", 5)), int(config.get("seed", 0))
    base = args.workdir or Path(tempfile.mkdtemp(prefix="feature_quality_"))
    rows, runs = [], {}
    for normalize in args.normalize:
        workdir = base / normalize
        wall = run_features(workdir, args.families, normalize, args.cores, args.limit_s)
        runs[normalize] = {"wall_s": wall}
        print(f"normalize={normalize}: features in {wall:.0f} s", flush=True)
        features = workdir / "results" / dataset / "features"
        methods = [(family, "learned") for family in args.families] + [(name, "baseline") for name in BASELINES]
        for method, kind in methods:
            train_s = _train_seconds(workdir, dataset, method) if kind == "learned" else None
            for path in sorted((features / method).glob("*.parquet")):
                row = {"method": method, "kind": kind, "normalize": normalize, "layer": path.stem, "train_s": train_s}
                row |= score_table(path, label, group_by, n_splits, seed)
                rows.append(row)
                print(
                    f"  {method:18s} {path.stem:10s} acc {row['accuracy']:.3f}  F1 {row['f1_macro']:.3f}  "
                    f"mAP {row['map'] if row['map'] is None else round(row['map'], 3)}",
                    flush=True,
                )
    if not args.keep and args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    if args.merge and args.out.exists():
        done = {(r["method"], r["normalize"]) for r in rows}
        rows = [r for r in json.loads(args.out.read_text())["rows"] if (r["method"], r["normalize"]) not in done] + rows
    record = run_record("feature_quality.py", argv, started, load_start, load_average(), machine_info())
    record |= {
        "dataset": {"name": dataset, **config["datasets"][dataset]},
        "label": label,
        "group_by": group_by,
        "runs": runs,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
