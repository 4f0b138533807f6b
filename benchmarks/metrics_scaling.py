"""Evaluation metrics: wall time and peak memory against the number of cells N.

Synthetic clustered data, seeded: 6 Gaussian classes in a random 10-dimensional latent
subspace, seen through two noisy linear maps -- a 3,072-dimensional input ("pixel") space,
the size of the workflow's pixel space (3 x 32 x 32: crops z-scored per channel and 2x2
block-mean downsampled; float32, z-scored per channel here too) and a 256-dimensional
embedding (float64, as ``evaluate_layer`` passes it, with a small offset per field) -- and
60 synthetic fields as the groups of the grouped cross-validation.

Each measurement runs in a fresh subprocess, so its peak RSS is its own: the child loads
the data and imports what it needs, resets its high-water mark (``/proc/self/clear_refs``),
runs the call once and reports the wall time, its CPU time and ``VmHWM`` -- the whole
process's peak while the call ran, inputs included (``extra`` is that peak minus the RSS
just before the call). Times are medians over the runs (3 for N <= 5,000, 2 above; a
single run where the first took 30 s or more), memory the largest peak over them. A run
longer than ``--limit-s`` (180 s) is stopped and that metric is not run at larger N, which
bounds the total time. BLAS, OpenMP and torch use ``--threads`` threads.

Target: the neighbourhood metrics (``neighbourhood_curves``, 20 sizes from 1% to 20% of N)
for N = 20,000 cells x 256 features within 60 s and 4 GB on 2 cores.

    python benchmarks/metrics_scaling.py           # writes benchmarks/out/metrics_scaling.json
    python benchmarks/report.py                    # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import reset_peak, status_kb  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

N_CLASSES = 6
N_FIELDS = 60
LATENT = 10
FEATURES = 256
CHANNELS, SIDE = 3, 32  # 3 x 32 x 32 = 3,072 input dimensions
DEFAULT_KS = (5, 10, 20, 50)  # the workflow's metrics.neighbors
COMPARE_K = 10  # the workflow's metrics.summary_k: the k of the sklearn comparison
TARGET = {"metric": "neighbourhood_curves", "n": 20_000, "time_s": 60.0, "rss_mb": 4000.0}
MB = 1e6

# name -> (what is called, short description); the order is the table's.
METRICS = {
    "neighbourhood_curves": (
        'neighbourhood_curves(X, Y, neighbourhood_sizes(N), precision="float32")',
        "T, C, Q_NX, LCMC at 20 sizes, 1%..20% of N, float32 distances (the workflow's default arithmetic)",
    ),
    "neighbourhood_curves_float64": (
        "neighbourhood_curves(X, Y, neighbourhood_sizes(N))",
        "the same in float64, the exact reference arithmetic",
    ),
    "neighbourhood_workflow": (
        'neighbourhood_curves(X, Y, [5, 10, 20, 50] + neighbourhood_sizes(N, cap=500), precision="float32")',
        "as the workflow's evaluation calls it: summary sizes and the curve capped at metrics.max_k",
    ),
    "logreg_accuracy": ("logreg_accuracy(Y, labels, groups=fields)", "grouped 5-fold CV"),
    "knn_accuracy": ("knn_accuracy(Y, labels, fields)", "k = 1, 5, 10, cosine, grouped 5-fold CV"),
    "mlp_accuracy": ("mlp_accuracy(Y, labels, fields)", "100 epochs, grouped 5-fold CV"),
    "mean_average_precision": (
        "mean_average_precision(Y, labels, exclude_same=fields)",
        "every cell a query, cosine",
    ),
    "trustworthiness": (f"trustworthiness(X, Y, [{COMPARE_K}])", "ours, for the sklearn ratio"),
    "sklearn_trustworthiness": (
        f"sklearn.manifold.trustworthiness(X, Y, n_neighbors={COMPARE_K})",
        "reference: full N x N matrices",
    ),
}
SKLEARN_SIZES = (2_000, 20_000)
COMPARISON = ("trustworthiness", "sklearn_trustworthiness")  # only at SKLEARN_SIZES


# --------------------------------------------------------------------------------------
# Data


def make_data(folder: Path, n: int, seed: int = 0) -> None:
    """Write X (n, 3072) float32, Y (n, 256) float64, labels and fields (str) as .npy files."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.5, size=(N_CLASSES, LATENT))
    labels = rng.permutation(np.arange(n) % N_CLASSES)
    fields = rng.integers(0, N_FIELDS, size=n)
    z = centres[labels] + rng.normal(size=(n, LATENT))
    to_pixels = rng.normal(size=(LATENT, CHANNELS * SIDE * SIDE)) / np.sqrt(LATENT)
    to_features = rng.normal(size=(LATENT, FEATURES)) / np.sqrt(LATENT)
    field_offset = rng.normal(0.0, 0.3, size=(N_FIELDS, FEATURES))

    X = np.empty((n, CHANNELS * SIDE * SIDE), dtype=np.float32)
    for start in range(0, n, 2048):  # blocks: no (n, 3072) float64 temporary
        stop = min(start + 2048, n)
        X[start:stop] = z[start:stop] @ to_pixels + rng.normal(size=(stop - start, X.shape[1]))
    per_channel = X.reshape(n, CHANNELS, SIDE * SIDE)  # a view: z-score each channel in place
    for c in range(CHANNELS):
        values = per_channel[:, c]
        values -= values.mean(dtype=np.float64)
        values /= values.std(dtype=np.float64)
    Y = z @ to_features + 0.3 * rng.normal(size=(n, FEATURES)) + field_offset[fields]

    np.save(folder / "X.npy", X)
    np.save(folder / "Y.npy", Y)
    np.save(folder / "labels.npy", np.array([f"class{c}" for c in labels]))
    np.save(folder / "fields.npy", np.array([f"field{f:02d}" for f in fields]))


# --------------------------------------------------------------------------------------
# Child: one measurement


def child(name: str, folder: Path) -> dict:
    from workflow_scripts.metrics import classification, neighbourhood, retrieval

    X = np.load(folder / "X.npy")
    Y = np.load(folder / "Y.npy")
    labels = np.load(folder / "labels.npy")
    fields = np.load(folder / "fields.npy")
    n = len(Y)

    if name in ("neighbourhood_curves", "neighbourhood_curves_float64"):
        precision = "float64" if name.endswith("float64") else "float32"

        def call():
            r = neighbourhood.neighbourhood_curves(X, Y, neighbourhood.neighbourhood_sizes(n), precision=precision)
            return {"auc": r["auc"], "ks": r["ks"]}

    elif name == "neighbourhood_workflow":

        def call():
            ks = sorted({k for k in DEFAULT_KS if k < n / 2} | set(neighbourhood.neighbourhood_sizes(n, cap=500)))
            r = neighbourhood.neighbourhood_curves(X, Y, ks, precision="float32")
            return {"trustworthiness_10": r["trustworthiness"][10], "continuity_10": r["continuity"][10]}

    elif name == "logreg_accuracy":

        def call():
            return {"accuracy": classification.logreg_accuracy(Y, labels, groups=fields)["accuracy_mean"]}

    elif name == "knn_accuracy":

        def call():
            return {"accuracy_k5": classification.knn_accuracy(Y, labels, fields)["by_k"][5]["accuracy_mean"]}

    elif name == "mlp_accuracy":
        import torch  # noqa: F401  (imported before the peak is reset, as in a workflow process)

        def call():
            return {"accuracy": classification.mlp_accuracy(Y, labels, fields)["accuracy_mean"]}

    elif name == "mean_average_precision":

        def call():
            return {"map": retrieval.mean_average_precision(Y, labels, exclude_same=fields)["map"]}

    elif name == "trustworthiness":

        def call():
            return {"value": neighbourhood.trustworthiness(X, Y, [COMPARE_K])[COMPARE_K]}

    elif name == "sklearn_trustworthiness":
        from sklearn.manifold import trustworthiness

        def call():
            return {"value": float(trustworthiness(X, Y, n_neighbors=COMPARE_K))}

    else:
        raise ValueError(f"unknown measurement {name!r}")

    load_peak_kb = status_kb("VmHWM")
    reset = reset_peak()
    before_kb = status_kb("VmRSS")
    cpu0 = os.times()
    t0 = time.perf_counter()
    value = call()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    peak_kb = status_kb("VmHWM")
    return {
        "wall_s": wall,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rss_before_mb": before_kb * 1024 / MB,
        "peak_rss_mb": peak_kb * 1024 / MB,
        "load_peak_rss_mb": load_peak_kb * 1024 / MB,
        "peak_reset": reset,
        "result": value,
    }


# --------------------------------------------------------------------------------------
# Parent


def run_child(name: str, folder: Path, threads: int, limit_s: float) -> dict | None:
    """One measurement in a fresh interpreter; None when it ran past ``limit_s`` (killed)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--data", str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sklearn_estimate_mb(n: int) -> float:
    """Peak of sklearn.manifold.trustworthiness on float32 X: float32 distances, int64 argsort
    and int64 inverted index, all (N, N) and alive together."""
    return n * n * (4 + 8 + 8) / MB


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def machine_info(threads: int) -> dict:
    import scipy
    import sklearn
    import threadpoolctl
    import torch

    mem_total = next(
        int(line.split()[1]) * 1024 / MB
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    blas = sorted(
        {f"{i['internal_api']} {i['version']}" for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
    )
    return {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "threads": threads,
        "ram_gib": round(mem_total * MB / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "torch": torch.__version__,
        "blas": ", ".join(blas),
    }


def repeats_for(n: int, first_wall: float, args) -> int:
    """Runs wanted: ``--repeats-small`` up to N = 5,000, ``--repeats-large`` above, but a
    single run when the first took ``--repeat-below`` seconds or more (bounded total time)."""
    if first_wall >= args.repeat_below:
        return 1
    return args.repeats_small if n <= 5_000 else args.repeats_large


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[2_000, 5_000, 10_000, 20_000])
    parser.add_argument("--metrics", nargs="*", default=[m for m in METRICS if m not in COMPARISON])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats-small", type=int, default=3, help="runs per measurement for N <= 5,000")
    parser.add_argument("--repeats-large", type=int, default=2, help="runs per measurement for N > 5,000")
    parser.add_argument(
        "--repeat-below", type=float, default=30.0, help="repeat only measurements whose first run took less (s)"
    )
    parser.add_argument(
        "--limit-s",
        type=float,
        default=180.0,
        help="stop a run after this many seconds (data loading included); the metric is then not run at larger N",
    )
    parser.add_argument("--sklearn-max-gb", type=float, default=12.0)
    parser.add_argument(
        "--merge", action="store_true", help="keep the earlier --out file's rows of the metrics not run this time"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "metrics_scaling.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.data)), flush=True)
        return

    started = time.time()
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)
    machine = machine_info(args.threads)
    rows, comparisons, precision_comparison = [], [], []
    over_limit: dict[str, int] = {}  # metric -> the N at which a run went past --limit-s
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            t0 = time.perf_counter()
            make_data(folder, n, args.seed)
            print(f"N={n:,}: data in {time.perf_counter() - t0:.1f} s", flush=True)
            names = list(args.metrics)
            if n in SKLEARN_SIZES:
                names += list(COMPARISON)
            for name in names:
                if name in over_limit:
                    reason = f"not run: over {args.limit_s:.0f} s at N = {over_limit[name]:,}"
                    print(f"N={n:,} {name}: {reason}", flush=True)
                    rows.append({"n": n, "metric": name, "skipped": reason})
                    continue
                if name == "sklearn_trustworthiness":
                    estimate = sklearn_estimate_mb(n)
                    limit = min(args.sklearn_max_gb * 1e3, 0.8 * mem_available_mb())
                    if estimate > limit:
                        reason = f"not run: needs about {estimate / 1e3:.1f} GB, limit {limit / 1e3:.1f} GB"
                        print(f"N={n:,} {name}: {reason}", flush=True)
                        rows.append({"n": n, "metric": name, "skipped": reason})
                        continue
                first = run_child(name, folder, args.threads, args.limit_s)
                if first is None:
                    over_limit[name] = n
                    print(f"N={n:,} {name}: stopped after {args.limit_s:.0f} s", flush=True)
                    rows.append({"n": n, "metric": name, "timed_out_s": args.limit_s})
                    continue
                runs = [first]
                wanted = repeats_for(n, first["wall_s"], args)
                while len(runs) < wanted:
                    again = run_child(name, folder, args.threads, args.limit_s)
                    if again is None:
                        break
                    runs.append(again)
                row = {
                    "n": n,
                    "metric": name,
                    "runs": len(runs),
                    "wall_s": statistics.median(r["wall_s"] for r in runs),
                    "wall_s_runs": [r["wall_s"] for r in runs],
                    "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    "extra_rss_mb": max(r["peak_rss_mb"] - r["rss_before_mb"] for r in runs),
                    "rss_before_mb": statistics.median(r["rss_before_mb"] for r in runs),
                    "peak_reset": all(r["peak_reset"] for r in runs),
                    "result": runs[0]["result"],
                }
                rows.append(row)
                print(
                    f"N={n:,} {name}: {row['wall_s']:.2f} s (runs {', '.join(f'{w:.2f}' for w in row['wall_s_runs'])}), "
                    f"cpu {row['cpu_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
                    f"(+{row['extra_rss_mb']:.0f} MB over {row['rss_before_mb']:.0f} MB), {row['result']}",
                    flush=True,
                )
            by_name = {r["metric"]: r for r in rows if r["n"] == n}
            if n in SKLEARN_SIZES and "trustworthiness" in by_name and "sklearn_trustworthiness" in by_name:
                ours, ref = by_name["trustworthiness"], by_name["sklearn_trustworthiness"]
                if "wall_s" not in ours or "wall_s" not in ref:
                    reason = ref.get("skipped") or ours.get("skipped") or f"stopped after {args.limit_s:.0f} s"
                    comparisons.append({"n": n, "k": COMPARE_K, "skipped": reason})
                else:
                    comparisons.append(
                        {
                            "n": n,
                            "k": COMPARE_K,
                            "ours_wall_s": ours["wall_s"],
                            "sklearn_wall_s": ref["wall_s"],
                            "time_ratio": ref["wall_s"] / ours["wall_s"],
                            "ours_peak_rss_mb": ours["peak_rss_mb"],
                            "sklearn_peak_rss_mb": ref["peak_rss_mb"],
                            "memory_ratio": ref["peak_rss_mb"] / ours["peak_rss_mb"],
                            "extra_memory_ratio": ref["extra_rss_mb"] / max(ours["extra_rss_mb"], 1.0),
                            "abs_difference": abs(ref["result"]["value"] - ours["result"]["value"]),
                        }
                    )
            f32, f64 = by_name.get("neighbourhood_curves", {}), by_name.get("neighbourhood_curves_float64", {})
            if "result" in f32 and "result" in f64:
                diffs = {m: abs(f32["result"]["auc"][m] - f64["result"]["auc"][m]) for m in f64["result"]["auc"]}
                precision_comparison.append({"n": n, "auc_abs_difference": diffs})
            for path in folder.iterdir():
                path.unlink()

    target = dict(TARGET)
    measured = next((r for r in rows if r["n"] == TARGET["n"] and r["metric"] == TARGET["metric"]), None)
    if measured is None or "skipped" in measured:
        target.update(verdict="not measured")
    elif "timed_out_s" in measured:
        target.update(wall_s=None, peak_rss_mb=None, verdict=f"FAIL (stopped after {args.limit_s:.0f} s)")
    else:
        ok = measured["wall_s"] <= TARGET["time_s"] and measured["peak_rss_mb"] <= TARGET["rss_mb"]
        target.update(wall_s=measured["wall_s"], peak_rss_mb=measured["peak_rss_mb"], verdict="PASS" if ok else "FAIL")
    load_end = os.getloadavg()
    elapsed = time.time() - started
    print(
        f"target: {TARGET['metric']} at N={TARGET['n']:,} within {TARGET['time_s']:.0f} s and "
        f"{TARGET['rss_mb'] / 1e3:.0f} GB on {args.threads} threads: {target['verdict']}"
        + (f" ({target['wall_s']:.1f} s, {target['peak_rss_mb']:.0f} MB)" if target.get("wall_s") else ""),
        flush=True,
    )
    print(f"total {elapsed / 60:.1f} min; load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/metrics_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "elapsed_s": elapsed,
        "data": {
            "features": FEATURES,
            "input_dims": CHANNELS * SIDE * SIDE,
            "classes": N_CLASSES,
            "fields": N_FIELDS,
            "latent_dims": LATENT,
            "seed": args.seed,
        },
        "calls": {name: {"call": call, "note": note} for name, (call, note) in METRICS.items()},
        "repeats": {
            "small_n": args.repeats_small,
            "large_n": args.repeats_large,
            "single_run_from_s": args.repeat_below,
            "limit_s": args.limit_s,
        },
        "rows": rows,
        "sklearn_comparison": comparisons,
        "precision_comparison": precision_comparison,
        "target": target,
    }
    if args.merge and args.out.exists():
        # Keep the earlier measurements of the metrics not run this time.
        old = json.loads(args.out.read_text())
        ran = {(r["metric"], r["n"]) for r in rows}
        meta["rows"] = [r for r in old["rows"] if (r["metric"], r["n"]) not in ran and r["metric"] in METRICS] + rows
        if not comparisons:
            meta["sklearn_comparison"] = old.get("sklearn_comparison", [])
        meta["command"] = old["command"] + "`, then `" + meta["command"]
        meta["earlier"] = {k: old[k] for k in ("started", "elapsed_s", "load_average_start", "load_average_end")}
    args.out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
