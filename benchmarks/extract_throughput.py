"""Feature extraction throughput per model family, through the real extraction path.

For each family (``quick`` preset, or ``--preset full``): a randomly initialised model built by
``workflow_scripts.models.registry.build_model`` (as a trained one is rebuilt by
``load_trained``), a memory-mapped shard of random 64 x 64 x 3 crops read by the workflow's
``BatchSource`` with the normaliser the family trains with (per-channel z-score; per-cell
min-max for paired inpainting), and every feature layer of the family extracted in one pass by
``workflow_scripts.features.extract_features`` (batch 256, the config default), then written
as one Parquet table per layer (``feature_table`` + ``write_parquet``), as the
``extract_features_<model>`` rule does. Reported: cells/s of the extraction alone and with the
tables written, medians of ``--repeats`` runs after one warm-up batch. A CUDA GPU is used when
PyTorch sees one (``pick_device``), as in the workflow.

    python benchmarks/extract_throughput.py          # writes benchmarks/out/extract_throughput.json
    python benchmarks/report.py                      # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, median, run_record  # noqa: E402

from workflow_scripts.data import Normalizer, PerCellMinMax, open_shards  # noqa: E402
from workflow_scripts.datasets import SYNTHETIC_CHANNELS  # noqa: E402
from workflow_scripts.features import extract_features, feature_table  # noqa: E402
from workflow_scripts.io import write_parquet  # noqa: E402
from workflow_scripts.models.registry import build_model  # noqa: E402
from workflow_scripts.models.spec import FAMILIES, feature_layers, resolve_model, split_feature_layer  # noqa: E402
from workflow_scripts.training.device import pick_device  # noqa: E402
from workflow_scripts.training.streams import source_for  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def make_cells(folder: Path, n: int, size: int = 64, channels: int = 3, seed: int = 0) -> pd.DataFrame:
    """One shard of random crops and a cell table shaped like ``cells.parquet``."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 200.0, size=(n, channels, size, size)).astype(np.float32)
    np.save(folder / "s0000.npy", x)
    fields = [f"f{i // 40:05d}" for i in range(n)]
    return pd.DataFrame(
        {
            "Metadata_dataset": "bench",
            "Metadata_image": fields,
            "Metadata_label": np.arange(n) % 40 + 1,
            "Metadata_cell": [f"{f}-{i % 40 + 1}" for i, f in enumerate(fields)],
            "Metadata_class": [f"c{i % 6}" for i in range(n)],
            "Metadata_group": fields,
            "Metadata_trajectory": rng.uniform(size=n),
            "Metadata_shard": "s0000",
            "Metadata_row": np.arange(n, dtype=np.int64),
        }
    )


def bench_family(family, preset, cells, arrays, device, repeats, batch_size, pooling, out_dir):
    params = resolve_model(family, {"family": family, "preset": preset})
    model = build_model(family, 3, 64, params, [dict(c) for c in SYNTHETIC_CHANNELS], seed=0)
    model.eval()
    normalizer = PerCellMinMax() if family == "paired_inpainting" else Normalizer([400.0] * 3, [280.0] * 3)
    source = source_for(cells, arrays, normalizer)
    tables = {name: split_feature_layer(name, pooling) for name in feature_layers(family, params, pooling)}
    layers = sorted(set(tables.values()))

    warm = source_for(cells.iloc[:batch_size], arrays, normalizer)
    extract_features(model, warm, layers, batch_size=batch_size, device=device)

    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        values = extract_features(model, source, layers, batch_size=batch_size, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        for name, key in tables.items():
            write_parquet(out_dir / f"{family}_{name}.parquet", feature_table(cells, values[key], name))
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t0))
    n = len(cells)
    return {
        "family": family,
        "preset": preset,
        "device": device.type,
        "batch_size": batch_size,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "layers": list(tables),
        "n_features": int(sum(values[key].shape[1] for key in tables.values())),
        "cells": n,
        "runs": len(runs),
        "extract_s": median(r[0] for r in runs),
        "total_s": median(r[1] for r in runs),
        "cells_per_s": n / median(r[0] for r in runs),
        "cells_per_s_with_tables": n / median(r[1] for r in runs),
        "cells_per_s_runs": [n / r[0] for r in runs],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--preset", default="quick", choices=["quick", "full"])
    parser.add_argument("--cells", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pooling", nargs="*", default=["mean"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="1,024 cells, 2 repeats")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.repeats = min(args.cells, 1024), min(args.repeats, 2)
    if args.out is None:
        suffix = "" if args.preset == "quick" else f"_{args.preset}"
        args.out = OUT / f"extract_throughput{suffix}.json"
    torch.set_num_threads(args.threads)
    device = pick_device()
    started, load_start = time.time(), load_average()
    print(f"load average at start: {load_start}; device {device}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cells = make_cells(tmp, args.cells)
        arrays = open_shards([tmp / "s0000.npy"])
        for family in args.families:
            row = bench_family(
                family, args.preset, cells, arrays, device, args.repeats, args.batch_size, args.pooling, tmp
            )
            print(
                f"{family}: {row['cells_per_s']:.0f} cells/s ({row['cells_per_s_with_tables']:.0f} with tables), "
                f"{len(row['layers'])} layers, {row['n_features']} features",
                flush=True,
            )
            rows.append(row)
    load_end = load_average()
    print(f"load average at end: {load_end}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **run_record("extract_throughput.py", argv, started, load_start, load_end, machine_info(args.threads)),
        "pooling": args.pooling,
        "rows": rows,
    }
    args.out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
