"""Screening mAP at scale: peak memory and time of phenotypic activity at 10,000 and 50,000 wells.

copairs builds every (query, ranked well) pair of the whole table before it ranks them --
index arrays, similarities and a lexsort over all pairs -- which is the known complaint of
14 GB at 9,216 wells. :func:`workflow_scripts.screen.metrics.phenotypic_activity` ranks in
chunks of queries (``workflow_scripts.metrics.retrieval.mean_average_precision``, memory
``O(chunk x N)``), each time on the controls and a batch of whole perturbations only.

Synthetic screen, seeded: ``N`` wells of 300 float64 features, 5% negative-control wells,
the rest perturbations with 8 replicate wells each on 8 different plates of 384 wells; a
third of the perturbations have an effect, every plate an offset. Measured, each in a fresh
subprocess (as ``metrics_scaling.py``: the child loads the data, resets its high-water mark
through ``/proc/self/clear_refs``, runs the call once and reports the wall time, CPU time and
``VmHWM``; ``extra`` is that peak minus the RSS just before the call; ``ru_maxrss`` is the
child's ``getrusage`` peak over its whole life, data loading and imports included):

- ``activity_ap``: the AP of every treated well against the controls (the chunked AP, as
  ``phenotypic_activity`` computes it);
- ``phenotypic_activity``: the whole metric: the APs, then copairs' null distributions
  (``--null-size``), p-values and Benjamini-Hochberg q-values;
- ``copairs_average_precision``: ``copairs.map.average_precision`` with the same
  positives and negatives (``pos_sameby=[perturbation]``, ``pos_diffby=[plate]``,
  ``neg_diffby=[negcon]``), for comparison; not run where its estimated peak (pair arrays:
  about 110 bytes per pair, as measured at 10,000 wells) is over ``--copairs-max-gb`` (8) GB.

    python benchmarks/map_memory.py                  # writes benchmarks/out/map_memory.json
    python benchmarks/report.py                      # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, reset_peak, run_record, status_kb  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
MB = 1e6
FEATURES = 300
REPLICATES = 8
CONTROL_FRACTION = 0.05
PLATE_WELLS = 384
ACTIVE_FRACTION = 1 / 3
COPAIRS_BYTES_PER_PAIR = 110  # 565 MB over 4.9 M pairs at 10,000 wells: pair indices, similarities, lexsort keys
CALLS = {
    "activity_ap": "workflow_scripts.screen.metrics._activity_ap(X, perturbations, plates, negcon, 1024)",
    "phenotypic_activity": "phenotypic_activity(wells, null_size=NULL_SIZE)",
    "copairs_average_precision": (
        'copairs.map.average_precision(meta, X, pos_sameby=["Metadata_perturbation"], '
        'pos_diffby=["Metadata_plate"], neg_sameby=[], neg_diffby=["Metadata_negcon"])'
    ),
}
VERSIONS = ("numpy", "scipy", "pandas", "sklearn", "copairs", "pycytominer")


def make_wells(n: int, seed: int = 0) -> pd.DataFrame:
    """The synthetic screen of ``n`` wells (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_controls = int(round(CONTROL_FRACTION * n))
    n_perts = (n - n_controls) // REPLICATES
    n_controls = n - n_perts * REPLICATES
    n_plates = max(REPLICATES, int(np.ceil(n / PLATE_WELLS)))
    # Each perturbation's replicates on REPLICATES consecutive plates from a random start.
    start = rng.integers(0, n_plates, size=n_perts)
    pert_plate = (start[:, None] + np.arange(REPLICATES)[None, :]) % n_plates
    plates = np.r_[rng.integers(0, n_plates, size=n_controls), pert_plate.reshape(-1)]
    perts = np.r_[np.full(n_controls, "DMSO"), np.repeat([f"p{i:05d}" for i in range(n_perts)], REPLICATES)]
    effect = rng.normal(0.0, 1.0, size=(n_perts, FEATURES)) * (rng.random(n_perts) < ACTIVE_FRACTION)[:, None]
    X = rng.normal(size=(n, FEATURES)) + rng.normal(0.0, 0.3, size=(n_plates, FEATURES))[plates]
    X[n_controls:] += np.repeat(effect, REPLICATES, axis=0)
    meta = pd.DataFrame(
        {
            "Metadata_plate": [f"plate{p:03d}" for p in plates],
            "Metadata_well": [f"w{i:06d}" for i in range(n)],
            "Metadata_perturbation": perts,
            "Metadata_negcon": np.arange(n) < n_controls,
        }
    )
    return pd.concat([meta, pd.DataFrame(X, columns=[f"f{j:03d}" for j in range(FEATURES)])], axis=1)


def child(name: str, path: Path, null_size: int) -> dict:
    from workflow_scripts.screen import metrics

    wells = pd.read_parquet(path)
    features = [c for c in wells.columns if not c.startswith("Metadata_")]
    if name == "activity_ap":
        X = wells[features].to_numpy()
        perts = wells["Metadata_perturbation"].to_numpy(dtype=str)
        plates = wells["Metadata_plate"].to_numpy(dtype=str)
        negcon = wells["Metadata_negcon"].to_numpy(dtype=bool)

        def call():
            ap = metrics._activity_ap(X, perts, plates, negcon, 1024)
            return {"mean_ap": float(ap["average_precision"].mean()), "queries": len(ap)}

    elif name == "phenotypic_activity":

        def call():
            _, summary = metrics.phenotypic_activity(wells, null_size=null_size)
            return summary

    elif name == "copairs_average_precision":
        from copairs.map import average_precision

        meta = wells[[c for c in wells.columns if c.startswith("Metadata_")]]
        X = wells[features].to_numpy()

        def call():
            ap = average_precision(
                meta,
                X,
                pos_sameby=["Metadata_perturbation"],
                pos_diffby=["Metadata_plate"],
                neg_sameby=[],
                neg_diffby=["Metadata_negcon"],
                progress_bar=False,
            )
            treated = ap[~ap["Metadata_negcon"]]
            return {"mean_ap": float(treated["average_precision"].mean()), "queries": len(treated)}

    else:
        raise ValueError(f"unknown measurement {name!r}")

    import resource

    reset = reset_peak()
    before_kb = status_kb("VmRSS")
    cpu0 = os.times()
    t0 = time.perf_counter()
    result = call()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    return {
        "wall_s": wall,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rss_before_mb": before_kb * 1024 / MB,
        "peak_rss_mb": status_kb("VmHWM") * 1024 / MB,
        "peak_reset": reset,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
        "result": result,
    }


def run_child(name: str, path: Path, args) -> dict | None:
    """One measurement in a fresh interpreter; None when it ran past ``--limit-s`` (killed)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--child", name, "--data", str(path), "--null-size", str(args.null_size)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=args.limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def copairs_pairs(wells: pd.DataFrame) -> int:
    """Pairs copairs builds: positive pairs across plates plus every (treated, control) pair."""
    negcon = wells["Metadata_negcon"].to_numpy()
    n_controls = int(negcon.sum())
    treated = wells.loc[~negcon]
    same = treated.groupby("Metadata_perturbation").size()
    same_plate = treated.groupby(["Metadata_perturbation", "Metadata_plate"]).size()
    pos = int((same * (same - 1) // 2).sum() - (same_plate * (same_plate - 1) // 2).sum())
    controls = wells.loc[negcon].groupby("Metadata_plate").size()
    pos += int((n_controls * (n_controls - 1) // 2) - (controls * (controls - 1) // 2).sum())  # controls pair too
    return pos + len(treated) * n_controls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 50_000])
    parser.add_argument("--metrics", nargs="*", default=list(CALLS))
    parser.add_argument("--null-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit-s", type=float, default=300.0, help="stop a measurement after this many seconds")
    parser.add_argument("--copairs-max-gb", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "map_memory.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.null_size)), flush=True)
        return

    started, load_start = time.time(), load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            wells = make_wells(n, args.seed)
            path = Path(tmp) / f"wells_{n}.parquet"
            wells.to_parquet(path)
            n_pairs = copairs_pairs(wells)
            layout = {
                "n": n,
                "controls": int(wells["Metadata_negcon"].sum()),
                "perturbations": int(wells.loc[~wells["Metadata_negcon"], "Metadata_perturbation"].nunique()),
                "plates": int(wells["Metadata_plate"].nunique()),
                "copairs_pairs": n_pairs,
            }
            for name in args.metrics:
                row = {**layout, "metric": name}
                if name == "copairs_average_precision":
                    estimate_gb = n_pairs * COPAIRS_BYTES_PER_PAIR / 1e9
                    row["estimated_gb"] = estimate_gb
                    if estimate_gb > args.copairs_max_gb:
                        row["skipped"] = f"not run: needs about {estimate_gb:.0f} GB (limit {args.copairs_max_gb:g} GB)"
                        print(f"N={n:,} {name}: {row['skipped']}", flush=True)
                        rows.append(row)
                        continue
                measured = run_child(name, path, args)
                if measured is None:
                    row["timed_out_s"] = args.limit_s
                    print(f"N={n:,} {name}: stopped after {args.limit_s:.0f} s", flush=True)
                else:
                    row.update(measured, extra_rss_mb=measured["peak_rss_mb"] - measured["rss_before_mb"])
                    print(
                        f"N={n:,} {name}: {row['wall_s']:.1f} s, cpu {row['cpu_s']:.1f} s, peak RSS "
                        f"{row['peak_rss_mb']:.0f} MB (+{row['extra_rss_mb']:.0f} MB over {row['rss_before_mb']:.0f} MB), "
                        f"{row['result']}",
                        flush=True,
                    )
                rows.append(row)
    machine = machine_info(args.threads, versions=VERSIONS, gpu=False)
    for name, version in machine["versions"].items():
        if version == "?":  # copairs and pycytominer have no __version__: ask the installed distribution
            machine["versions"][name] = importlib.metadata.version(name)
    record = run_record("map_memory.py", argv, started, load_start, load_average(), machine)
    record.update(
        data={
            "features": FEATURES,
            "replicates": REPLICATES,
            "control_fraction": CONTROL_FRACTION,
            "plate_wells": PLATE_WELLS,
            "active_fraction": ACTIVE_FRACTION,
            "seed": args.seed,
        },
        null_size=args.null_size,
        calls=CALLS,
        rows=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({(time.time() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
