"""Workflow scale: ``snakemake -n`` time, peak memory and job count against the number of fields.

For each size N (1,000, 10,000 and 100,000 fields): a fresh temporary working directory holding
the repository's ``config.yaml`` and ``scale.yaml`` (``datasets.synthetic``: ``source:
synthetic``, ``n_fields: N``, ``shard_size`` 16 and ``max_shards`` 1,000, the defaults: up to
16,000 fields 16 per shard, beyond that 1,000 shards), and ``snakemake -n -s
<repo>/Snakefile --configfile scale.yaml`` run in a subprocess under ``/usr/bin/time`` (wall
time and the process's peak RSS; without it, ``/proc/<pid>/status`` ``VmHWM`` is polled).
Nothing runs: the dry run parses the workflow, validates the config, builds the DAG of every
job and prints each job, as ``snakemake -n`` does for a user (output to a file). The workflow
profile (``profiles/default``) is loaded as usual. The job count per rule comes from the dry
run's "Job stats" table. Times are medians of ``--repeats`` runs (``--repeats-large`` at
100,000), memory the largest peak.

Extra rows at the largest N: the same dry run with ``--quiet rules`` (no per-job printing; the
job stats are still printed), and without the cap on shards (``--uncapped-max-shards``,
1,000,000: 16 fields per shard whatever N, 6,250 shards at 100,000 fields, as before
``max_shards`` existed), which shows what the cap buys. With ``--profile-fields`` (10,000) one more dry run at that N
runs under cProfile, and the JSON keeps where its time goes (Snakemake's DAG building, the
dry run's job printing, resources and input functions) and the workflow's own functions
(``rules/*.smk``, ``workflow_scripts``) by cumulative time.

Targets (issue #8): at 100,000 fields, under 30 s and 2 GB.

    python benchmarks/dag_scale.py          # writes benchmarks/out/dag_scale.json
    python benchmarks/report.py             # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, median, run_record  # noqa: E402

sys.path.insert(0, str(ROOT))
from workflow_scripts.datasets import effective_shard_size  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
TARGET = {"fields": 100_000, "time_s": 30.0, "rss_mb": 2000.0}
GNU_TIME = "/usr/bin/time"
MB = 1e6

# Snakemake functions whose cumulative time says where a dry run goes.
PHASES = {
    "build_dag": "workflow.py:.*\\(_build_dag\\)",
    "dag_update (jobs and their dependencies)": "dag.py:.*\\(update\\)",
    "file2jobs (which rule makes a file)": "dag.py:.*\\(file2jobs\\)",
    "input functions (apply_input_function)": "rules.py:.*\\(apply_input_function\\)",
    "resources (expand_resources)": "rules.py:.*\\(expand_resources\\)",
    "dry-run job printing (printjob)": "dryrun.py:.*\\(printjob\\)",
    "inspect.signature of callables": "common/__init__.py:.*\\(get_function_params\\)",
}


def write_workdir(folder: Path, n_fields: int, shard_size: int, max_shards: int) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    entry = {"source": "synthetic", "n_fields": n_fields, "shard_size": shard_size, "max_shards": max_shards}
    scale = {"datasets": {"synthetic": entry}}
    (folder / "scale.yaml").write_text(yaml.safe_dump(scale))
    return folder


def snakemake_command(extra=()) -> list[str]:
    return [
        "-n",
        *extra,
        "-s",
        str(ROOT / "Snakefile"),
        "--configfile",
        "scale.yaml",
    ]


def parse_job_stats(text: str) -> dict:
    """The first "Job stats" table of a dry run: rule -> count, plus "total"."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        match = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def _poll_peak_kb(proc: subprocess.Popen) -> int:
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    return peak


def dry_run(folder: Path, limit_s: float, extra=()) -> dict:
    """One ``snakemake -n`` in ``folder``: wall time, peak RSS, job counts."""
    snakemake = shutil.which("snakemake") or "snakemake"
    stdout, stderr = folder / "dryrun.out", folder / "dryrun.err"
    use_time = os.access(GNU_TIME, os.X_OK)
    report = folder / "time.txt"
    prefix = [GNU_TIME, "-f", "%e %M", "-o", str(report)] if use_time else []
    cmd = prefix + [snakemake] + snakemake_command(extra)
    t0 = time.perf_counter()
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=err)
        peak_kb = 0 if use_time else _poll_peak_kb(proc)
        try:
            proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"timed_out_s": limit_s}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed in {folder} (exit {proc.returncode}):\n{stderr.read_text()[-3000:]}")
    if use_time:
        elapsed, peak_kb = report.read_text().split()[-2:]
        wall, peak_kb = float(elapsed), int(peak_kb)
    counts = parse_job_stats(stdout.read_text())
    return {"wall_s": wall, "peak_rss_mb": peak_kb * 1024 / MB, "jobs": counts}


def profile_run(folder: Path, limit_s: float, top: int = 12) -> dict:
    """The same dry run under cProfile: Snakemake's phases and the workflow's own functions."""
    prof = folder / "dryrun.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "snakemake"] + snakemake_command()
    t0 = time.perf_counter()
    with open(folder / "dryrun.out", "w") as out, open(folder / "dryrun.err", "w") as err:
        subprocess.run(cmd, cwd=folder, stdout=out, stderr=err, check=True, timeout=limit_s)
    wall = time.perf_counter() - t0
    stats = pstats.Stats(str(prof))
    total = stats.total_tt
    entries = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    phases = {}
    for label, pattern in PHASES.items():
        regex = re.compile(pattern)
        cum = [ct for (file, line, name), (_, _, _, ct, _) in entries.items() if regex.search(f"{file}:{line}({name})")]
        phases[label] = max(cum) / total if cum else None
    ours = []
    own_tottime = 0.0
    for (file, line, name), (_, nc, tt, ct, _) in entries.items():
        if file.startswith(str(ROOT)):
            own_tottime += tt
            ours.append({"function": f"{Path(file).relative_to(ROOT)}:{line}({name})", "calls": nc, "cum_s": ct})
    ours.sort(key=lambda r: -r["cum_s"])
    for r in ours:
        r["cum_share"] = r["cum_s"] / total
    return {
        "wall_s_profiled": wall,
        "profiled_s": total,
        "phase_shares": phases,
        "own_code_tottime_share": own_tottime / total,
        "own_functions": [r for r in ours if not r["function"].endswith("(<module>)")][:top],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--max-shards", type=int, default=1000, help="datasets.<name>.max_shards (the default)")
    parser.add_argument(
        "--uncapped-max-shards",
        type=int,
        default=1_000_000,
        help="also the largest N with this max_shards, i.e. no cap (0: no)",
    )
    parser.add_argument(
        "--no-quiet-row", dest="quiet_row", action="store_false", help="skip the largest N with --quiet rules"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-large", type=int, default=2, help="runs at N >= 100,000")
    parser.add_argument("--profile-fields", type=int, default=10_000, help="cProfile one dry run at this N (0: no)")
    parser.add_argument("--limit-s", type=float, default=600.0, help="stop a dry run after this long")
    parser.add_argument("--quick", action="store_true", help="one run per size, no profile")
    parser.add_argument("--out", type=Path, default=OUT / "dag_scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = args.repeats_large = 1
        args.profile_fields = 0

    started, load_start = time.time(), load_average()
    print(f"load average at start: {load_start}", flush=True)
    configs = [(n, args.max_shards, ()) for n in args.sizes]
    if args.quiet_row:
        configs.append((max(args.sizes), args.max_shards, ("--quiet", "rules")))
    if args.uncapped_max_shards and args.uncapped_max_shards != args.max_shards:
        configs.append((max(args.sizes), args.uncapped_max_shards, ()))
    shard_size = args.shard_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n, max_shards, extra in configs:
            per_shard = effective_shard_size({"shard_size": shard_size, "max_shards": max_shards}, n)
            wanted = args.repeats_large if n >= 100_000 else args.repeats
            runs = []
            for k in range(wanted):
                folder = write_workdir(tmp / f"{n}-{max_shards}-{k}", n, shard_size, max_shards)
                result = dry_run(folder, args.limit_s, extra)
                shutil.rmtree(folder)
                if "timed_out_s" in result:
                    runs = [result]
                    break
                runs.append(result)
                print(
                    f"N={n:,} max_shards={max_shards} ({per_shard} per shard) {' '.join(extra)}: {result['wall_s']:.1f} s, {result['peak_rss_mb']:.0f} MB, "
                    f"{result['jobs']['total']:,} jobs",
                    flush=True,
                )
            if "timed_out_s" in runs[0]:
                rows.append(
                    {
                        "fields": n,
                        "shard_size": per_shard,
                        "max_shards": max_shards,
                        "options": " ".join(extra),
                        "timed_out_s": args.limit_s,
                    }
                )
                continue
            rows.append(
                {
                    "fields": n,
                    "shard_size": per_shard,
                    "max_shards": max_shards,
                    "options": " ".join(extra),
                    "shards": -(-n // per_shard),
                    "runs": len(runs),
                    "wall_s": median(r["wall_s"] for r in runs),
                    "wall_s_runs": [r["wall_s"] for r in runs],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    "jobs_total": runs[0]["jobs"]["total"],
                    "jobs": runs[0]["jobs"],
                }
            )
        profile = None
        if args.profile_fields:
            folder = write_workdir(tmp / "profile", args.profile_fields, args.shard_size, args.max_shards)
            profile = profile_run(folder, args.limit_s * 4)
            profile.update(fields=args.profile_fields, shard_size=args.shard_size)
            print(json.dumps(profile, indent=2), flush=True)

    target = dict(TARGET)
    measured = next(
        (
            r
            for r in rows
            if r["fields"] == TARGET["fields"] and r["max_shards"] == args.max_shards and not r["options"]
        ),
        None,
    )
    if measured is None:
        target["verdict"] = "not measured"
    elif "timed_out_s" in measured:
        target["verdict"] = "FAIL"
    else:
        target.update(
            wall_s=measured["wall_s"],
            peak_rss_mb=measured["peak_rss_mb"],
            time_verdict="PASS" if measured["wall_s"] <= TARGET["time_s"] else "FAIL",
            memory_verdict="PASS" if measured["peak_rss_mb"] <= TARGET["rss_mb"] else "FAIL",
        )
        target["verdict"] = (
            "PASS" if target["time_verdict"] == "PASS" and target["memory_verdict"] == "PASS" else "FAIL"
        )
    load_end = load_average()
    print(f"target: {target}; load average at end: {load_end}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **run_record("dag_scale.py", argv, started, load_start, load_end, machine_info(gpu=False)),
        "dry_run_command": "snakemake " + " ".join(snakemake_command()),
        "memory_tool": GNU_TIME if os.access(GNU_TIME, os.X_OK) else "/proc/<pid>/status VmHWM",
        "rows": rows,
        "profile": profile,
        "target": target,
    }
    args.out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
