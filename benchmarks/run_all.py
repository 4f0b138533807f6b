"""Run every benchmark, each with a time limit, then rewrite BENCHMARKS.md (report.py).

    python benchmarks/run_all.py            # everything, including one default pipeline run (~1 h on 2 cores)
    python benchmarks/run_all.py --quick    # shorter variants (fewer repeats / cells / sizes); no pipeline run
    python benchmarks/run_all.py --only segment_crop dag_scale

Each benchmark runs in its own process and writes ``benchmarks/out/<name>.json``; one that
fails or runs past its limit is reported and its previous JSON (if any) is kept, so its
section of BENCHMARKS.md keeps the earlier figures. On a machine with a CUDA GPU the training
and extraction benchmarks write their ``_cuda`` files (bf16 rows included). The machine, the
command and what ran land in ``benchmarks/out/run_all.json`` (the "How to run" section).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Paths as the commands show them (the benchmarks run from the repository root).
BENCH = Path("benchmarks")
sys.path.insert(0, str(HERE))

from _machine import gpu_name, load_average, machine_info, run_record  # noqa: E402

OUT = HERE / "out"


def plan(quick: bool, cuda: bool, threads: int, e2e: bool) -> list[tuple[str, list[str], float]]:
    """(name, arguments of benchmarks/<script>, time limit in s) in the order they run."""
    py = [sys.executable]
    cuda_suffix = "_cuda" if cuda else ""
    steps = ["--steps", "4", "--repeats", "2", "--warmup", "1"] if quick else []
    jobs = [
        ("segment_crop", py + [str(BENCH / "segment_crop.py")] + (["--quick"] if quick else []), 1200),
        ("segmentation_quality", py + [str(BENCH / "segmentation_quality.py")], 900),
        (
            f"train_throughput{cuda_suffix}",
            py
            + [str(BENCH / "train_throughput.py"), "--threads", str(threads)]
            + steps
            + ["--out", str(BENCH / "out" / f"train_throughput{cuda_suffix}.json")],
            1200,
        ),
    ]
    if not quick:
        jobs.append(
            (
                f"train_throughput_full{cuda_suffix}",
                py
                + [str(BENCH / "train_throughput.py"), "--threads", str(threads), "--preset", "full"]
                + (["--steps", "20", "--warmup", "5"] if cuda else ["--steps", "2", "--repeats", "1", "--warmup", "1"])
                + ["--out", str(BENCH / "out" / f"train_throughput_full{cuda_suffix}.json")],
                1800,
            )
        )
    jobs += [
        (
            f"extract_throughput{cuda_suffix}",
            py
            + [str(BENCH / "extract_throughput.py"), "--threads", str(threads)]
            + (["--quick"] if quick else [])
            + ["--out", str(BENCH / "out" / f"extract_throughput{cuda_suffix}.json")],
            1200,
        ),
    ]
    if not quick:
        jobs.append(
            (
                f"extract_throughput_full{cuda_suffix}",
                py
                + [str(BENCH / "extract_throughput.py"), "--threads", str(threads), "--preset", "full"]
                + ([] if cuda else ["--cells", "1024", "--repeats", "2"])
                + ["--out", str(BENCH / "out" / f"extract_throughput_full{cuda_suffix}.json")],
                1200,
            )
        )
    jobs += [
        (
            "metrics_scaling",
            py
            + [str(BENCH / "metrics_scaling.py"), "--threads", str(threads)]
            + (["--repeats-small", "1", "--repeats-large", "1", "--limit-s", "90"] if quick else []),
            3600,
        ),
        ("dag_scale", py + [str(BENCH / "dag_scale.py")] + (["--quick"] if quick else []), 2400),
    ]
    if e2e:
        jobs.append(("end_to_end", py + [str(BENCH / "end_to_end.py"), "--run", "--cores", str(threads)], 3600))
    return jobs


def run_one(name: str, cmd: list[str], limit_s: float) -> dict:
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    # Own process group, so a benchmark past its limit is stopped with everything it started.
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=limit_s)
        status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        status = f"stopped after {limit_s:.0f} s"
    elapsed = time.perf_counter() - t0
    print(f"=== {name}: {status} in {elapsed:.0f} s", flush=True)
    return {"name": name, "status": status, "elapsed_s": elapsed, "limit_s": limit_s}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter variants; no pipeline run unless --e2e")
    parser.add_argument("--e2e", action="store_true", help="with --quick: run the default pipeline too")
    parser.add_argument("--no-e2e", action="store_true", help="skip the default pipeline run")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run (prefix match)")
    parser.add_argument("--skip", nargs="*", default=[], help="benchmark names to skip (prefix match)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = parser.parse_args(argv)

    cuda = gpu_name() is not None
    e2e = not args.no_e2e and (args.e2e or not args.quick)
    jobs = plan(args.quick, cuda, args.threads, e2e)
    if args.only is not None:
        jobs = [j for j in jobs if any(j[0].startswith(p) for p in args.only)]
    jobs = [j for j in jobs if not any(j[0].startswith(p) for p in args.skip)]

    started, load_start = time.time(), load_average()
    results = [run_one(name, cmd, limit) for name, cmd, limit in jobs]
    summary = {
        **run_record("run_all.py", argv, started, load_start, load_average(), machine_info(args.threads)),
        "quick": args.quick,
        "benchmarks": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_report:
        subprocess.run([sys.executable, str(BENCH / "report.py")], cwd=ROOT, check=True)
        print("\nBENCHMARKS.md rewritten", flush=True)
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:
        print(f"{r['name']}: {r['status']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
