"""Training throughput per model family, through the real training path.

For each family (quick preset, or --preset full): a memory-mapped shard of random 64x64x3
crops is read by the same BatchSource / PairedSource the workflow uses, its batches reach the
device through the data path ``fit`` takes (``--data-path``: ``auto`` holds the normalised
items on the device when they fit, else a prefetching thread; ``resident`` or ``prefetch``
force one; ``legacy`` reads, normalises and augments each batch on the CPU in the loop, as
training did before), are augmented there, and ``model.training_step`` runs on batches of
``--batch-size`` after warm-up steps, the loss read back every step as ``fit`` does. Reported:
images/s (median of --repeats timed runs) and the share of step time spent waiting for data
(host time from asking for a batch until it is augmented on the device). On a CUDA GPU and on
CPUs with native bf16 (where ``fit`` uses it), the same with bf16 autocast.

On a CUDA machine, every family at batch 256 in fp32 and bf16 (the GPU data-path check):

    python benchmarks/train_throughput.py --batch-size 256

    python benchmarks/train_throughput.py            # writes benchmarks/out/train_throughput.json
    python benchmarks/train_throughput.py --batch-size 256 --out /tmp/tt.json   # the GPU data-path check
    python benchmarks/report.py                      # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.data import Normalizer, open_shards  # noqa: E402
from workflow_scripts.datasets import SYNTHETIC_CHANNELS  # noqa: E402
from workflow_scripts.models.registry import build_model  # noqa: E402
from workflow_scripts.models.spec import FAMILIES, resolve_model  # noqa: E402
from workflow_scripts.training.device import prepare_sources, stream_batches  # noqa: E402
from workflow_scripts.training.loop import _augment, _to_device, cpu_has_bf16  # noqa: E402
from workflow_scripts.training.pairs import PairedSource  # noqa: E402
from workflow_scripts.training.streams import source_for  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def make_shard(folder: Path, n: int, size: int, channels: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 200.0, size=(n, channels, size, size)).astype(np.float32)
    np.save(folder / "s0000.npy", x)
    return pd.DataFrame(
        {"Metadata_shard": "s0000", "Metadata_row": np.arange(n), "Metadata_group": [f"g{i % 16}" for i in range(n)]}
    )


def _legacy_batches(source, indices):
    """The data path before batches were resident or prefetched: read and normalise in the loop."""
    for index in indices:
        yield _to_device(source.batch(index), torch.device("cpu"))


def bench_family(family, preset, table, arrays, device, steps, warmup, repeats, batch_size, amp, data_path="auto"):
    params = resolve_model(family, {"family": family, "preset": preset})
    channels = list(SYNTHETIC_CHANNELS)
    model = build_model(family, 3, 64, params, channels).to(device)
    model.to(memory_format=torch.channels_last)  # as fit() does
    model.train()
    if family == "paired_inpainting":
        source = PairedSource(arrays, table, "Metadata_group", seed=0)
    else:
        source = source_for(table, arrays, Normalizer([400.0] * 3, [280.0] * 3))
    optimizers = model.configure_optimizers(params["lr"], 0.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if data_path == "legacy":
        plan_path, resident_mb = "legacy", 0.0
    else:
        (source,), (plan,) = prepare_sources([source], device, data_path)
        plan_path, resident_mb = plan.path, plan.megabytes
    if device.type == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0

    def run(n_steps):
        indices = [np.sort(rng.choice(len(source), batch_size, replace=False)) for _ in range(n_steps)]
        wait = 0.0
        t0 = time.perf_counter()
        batches = _legacy_batches(source, indices) if plan_path == "legacy" else stream_batches(source, indices, device)
        try:
            for _ in indices:
                t1 = time.perf_counter()
                batch = _to_device(_augment(next(batches), generator), device)
                wait += time.perf_counter() - t1
                terms = model.training_step(batch, optimizers, autocast)
                for value in terms.values():  # read back every step, as fit does
                    float(value.detach())
        finally:
            batches.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        return n_steps * batch_size / total, wait / total

    run(warmup)
    results = [run(steps) for _ in range(repeats)]
    return {
        "family": family,
        "preset": preset,
        "device": device.type,
        "amp_bf16": amp,
        "batch_size": batch_size,
        "data_path": plan_path,
        "resident_mb": resident_mb,
        "resident_build_s": build_s if plan_path == "resident" else 0.0,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "images_per_s": statistics.median(r[0] for r in results),
        "data_wait_fraction": statistics.median(r[1] for r in results),
        "runs": len(results),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--preset", default="quick", choices=["quick", "full"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-path", default="auto", choices=["auto", "resident", "prefetch", "legacy"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cells", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=OUT / "train_throughput.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        table = make_shard(Path(tmp), args.cells, 64, 3)
        arrays = open_shards([Path(tmp) / "s0000.npy"])
        for family in args.families:
            # bf16 autocast where fit() would use it: CUDA, and CPUs with native bf16.
            settings = [False] + ([True] if device.type == "cuda" or cpu_has_bf16() else [])
            for amp in settings:
                row = bench_family(
                    family,
                    args.preset,
                    table,
                    arrays,
                    device,
                    args.steps,
                    args.warmup,
                    args.repeats,
                    args.batch_size,
                    amp,
                    args.data_path,
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpu_cores": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
