"""Segmentation quality of the defaults on real, hand-labelled nuclei.

Scores nuclear segmentation with no segmentation key set (config.yaml as shipped: the nucleus
diameter estimated, every size derived from it) against hand-made masks:

* ``dsb2018_fluorescence`` (264 images, 11,751 nuclei, median nucleus area 40 to 7,000 px;
  from ../shared/data or tests/data): each image is a dataset of its own, as it would be for
  a user who brings it (the scale is estimated on the image, ``diameter: auto``), and, for
  comparison, all 264 as one dataset (one scale estimated on 16 images spread over the set,
  as rule estimate_scale does; mixed magnifications are then flagged, not fixed);
* the stardist test image (125 nuclei);
* the previous fixed defaults (sigma 2, min_area 60, max_area 3000, min_distance 5, ...) on
  the same images, as the baseline.

Reports object F1 at IoU >= 0.5 (pooled over images: 2 TP / (predicted + true)), precision,
recall, foreground Dice, per bin of the image's median nucleus area (< 150, 150-400,
400-1,500, > 1,500 px), and how close the scale estimate is to the hand-labelled median
diameter. Writes benchmarks/out/segmentation_quality.json and prints a Markdown section.

    python benchmarks/segmentation_quality.py            # about 2 minutes on 2 cores
    python benchmarks/segmentation_quality.py --data ../shared/data/dsb2018_fluorescence
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, run_record  # noqa: E402

from workflow_scripts.scale import STAGE_KEYS, estimate_scale, resolve_segmentation  # noqa: E402
from workflow_scripts.segment import segment_nuclei  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
BINS = [(0, 150), (150, 400), (400, 1500), (1500, float("inf"))]
# The fixed values config.yaml held before the scale was estimated.
OLD_DEFAULTS = dict(sigma=2.0, fill_holes=300, min_area=60, max_area=3000, split_touching=True, min_distance=5)
CANDIDATES = (
    ROOT.parent / "shared" / "data" / "dsb2018_fluorescence",
    ROOT / "tests" / "data" / "dsb2018_fluorescence",
    ROOT / "tests" / "data" / "dsb2018_subset",
)


def counts(labels: np.ndarray, truth: np.ndarray) -> dict:
    """True positives at IoU >= 0.5 (a match above 0.5 is unique), objects, nuclei, and the
    pixels for the foreground Dice."""
    p = labels.ravel().astype(np.int64)
    t = truth.ravel().astype(np.int64)
    n_p, n_t = int(p.max()) + 1, int(t.max()) + 1
    inter = np.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t)
    area_p, area_t = inter.sum(1), inter.sum(0)
    overlap = inter[1:, 1:]
    union = area_p[1:, None] + area_t[None, 1:] - overlap
    return {
        "tp": int(((overlap > 0) & (2 * overlap > union)).sum()),
        "predicted": int((area_p[1:] > 0).sum()),
        "true": int((area_t[1:] > 0).sum()),
        "both_px": int(np.count_nonzero((p > 0) & (t > 0))),
        "pred_px": int(np.count_nonzero(p)),
        "true_px": int(np.count_nonzero(t)),
    }


def scores(rows: pd.DataFrame) -> dict:
    tp, pred, true = rows["tp"].sum(), rows["predicted"].sum(), rows["true"].sum()
    return {
        "images": int(len(rows)),
        "nuclei": int(true),
        "f1": float(2 * tp / max(pred + true, 1)),
        "precision": float(tp / max(pred, 1)),
        "recall": float(tp / max(true, 1)),
        "dice": float(2 * rows["both_px"].sum() / max(rows["pred_px"].sum() + rows["true_px"].sum(), 1)),
    }


def by_bin(rows: pd.DataFrame) -> dict:
    out = {"all": scores(rows)}
    for lo, hi in BINS:
        name = f"{lo}-{hi:g}" if np.isfinite(hi) else f">{lo}"
        out[name] = scores(rows[(rows["median_area"] >= lo) & (rows["median_area"] < hi)])
    return out


def load_dsb(folder: Path):
    sizes = pd.read_csv(folder / "sizes.csv")
    for row in sizes.itertuples():
        image = np.asarray(Image.open(folder / "images" / f"{row.image}.png"))
        truth = np.asarray(Image.open(folder / "labels" / f"{row.image}.png"))
        yield row.image, int(row.median_area), image, truth


def run(folder: Path, segmentation: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-image counts: each image its own dataset; the old fixed defaults; the whole set as
    one dataset."""
    images = list(load_dsb(folder))
    own, old, pooled = [], [], []
    sample = [images[i][2] for i in np.linspace(0, len(images) - 1, min(16, len(images))).round().astype(int)]
    one_params, _ = resolve_segmentation(segmentation, estimate_scale(sample))
    for name, median_area, image, truth in images:
        scale = estimate_scale([image])
        params, info = resolve_segmentation(segmentation, scale)
        record = {"image": name, "median_area": median_area}
        true_d = float(np.sqrt(4 * median_area / np.pi))
        own.append({**record, **counts(segment_nuclei(image, **params), truth), "diameter": info["diameter"], "true_diameter": true_d})
        old.append({**record, **counts(segment_nuclei(image, **OLD_DEFAULTS), truth)})
        pooled.append({**record, **counts(segment_nuclei(image, **one_params), truth)})
    return pd.DataFrame(own), pd.DataFrame(old), pd.DataFrame(pooled)


def table(results: dict) -> str:
    lines = [
        "| images | F1 (IoU >= 0.5) | precision | recall | Dice | before: F1 | one scale for all: F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in results["defaults"].items():
        old, one = results["old_defaults"][key], results["one_dataset"][key]
        label = "all 264" if key == "all" else f"median area {key} px"
        lines.append(
            f"| {label} ({s['images']} images, {s['nuclei']} nuclei) | **{s['f1']:.3f}** | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | {s['dice']:.3f} | {old['f1']:.3f} | {one['f1']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a folder laid out as dsb2018_fluorescence")
    parser.add_argument("--out", type=Path, default=OUT / "segmentation_quality.json")
    args = parser.parse_args(argv)
    folder = args.data or next(p for p in CANDIDATES if (p / "sizes.csv").exists())
    started, load_start = time.time(), load_average()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    segmentation = {
        k: v
        for k, v in config["segmentation"].items()
        if k not in STAGE_KEYS
    }
    own, old, pooled = run(folder, segmentation)
    ratio = own["diameter"] / own["true_diameter"]
    results = {
        "data": str(folder),
        "defaults": by_bin(own),
        "old_defaults": by_bin(old),
        "one_dataset": by_bin(pooled),
        "scale_estimate": {
            "median_ratio": float(ratio.median()),
            "within_15pct": float((abs(np.log(ratio)) < np.log(1.15)).mean()),
            "within_1.5x": float((abs(np.log(ratio)) < np.log(1.5)).mean()),
        },
    }
    stardist = ROOT / "tests" / "data" / "stardist_nuclei"
    image, truth = tifffile.imread(stardist / "img2d.tif"), tifffile.imread(stardist / "mask2d.tif")
    params, info = resolve_segmentation(segmentation, estimate_scale([image]))
    for key, labels in (("stardist", segment_nuclei(image, **params)), ("stardist_old", segment_nuclei(image, **OLD_DEFAULTS))):
        c = counts(labels, truth)
        results[key] = {**scores(pd.DataFrame([c])), "diameter": info["diameter"]}
    load_end = load_average()
    meta = {**run_record("segmentation_quality.py", argv, started, load_start, load_end, machine_info(gpu=False)), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=2) + "\n")
    print(table(results))
    s, o = results["stardist"], results["stardist_old"]
    print(
        f"\nstardist img2d.tif: F1 {s['f1']:.3f} (precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
        f"Dice {s['dice']:.3f}; diameter {s['diameter']:.1f} px); before: F1 {o['f1']:.3f}"
    )
    e = results["scale_estimate"]
    print(
        f"scale estimate against the hand-labelled median diameter: median ratio {e['median_ratio']:.3f}, "
        f"within 15% for {e['within_15pct']:.1%} of images, within 1.5x for {e['within_1.5x']:.1%}"
    )


if __name__ == "__main__":
    main()
