"""End to end: the default run's wall time and each stage's share, from Snakemake's benchmark files.

Every rule has a ``benchmark:`` file, ``logs/<dataset>/<rule>[/<job>].bench.tsv`` (columns
``s``, ``h:m:s``, ``max_rss``, ..., ``cpu_time``). This script sums their seconds per rule and
per stage (acquire, segment, filter, tile, train, features, metrics, report) and writes
``benchmarks/out/end_to_end.json``.

With ``--run`` it first runs the default pipeline itself: ``snakemake --cores 2`` with the
repository's Snakefile and ``config.yaml`` in a fresh temporary working directory (``-d``, so
the repository's ``results/`` and ``logs/`` are untouched), timing the whole run (10-15 min on
2 cores). Without ``--run`` it reads an existing ``--logs`` folder (default: the repository's
``logs/synthetic``) and takes the run's wall time from ``--wall-s``; such figures are labelled
as coming from an earlier run. Such a folder can hold files of several runs (and of rules since
renamed): ``--since`` keeps the files written after a given time.

Jobs run side by side (``--cores 2``), so the stages' seconds add up to more than the wall time;
shares are of the summed job time.

    python benchmarks/end_to_end.py --run     # writes benchmarks/out/end_to_end.json
    python benchmarks/report.py               # rewrites BENCHMARKS.md from benchmarks/out/
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average, machine_info, now  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

# The name a bench file is filed under (its folder under logs/<dataset>/, or its stem) -> stage.
STAGES = {
    "acquire": [
        "synthesize_fields",
        "load_fields",
        "load_crops",
        "index_dataset",
        "acquire_bbbc",
        "acquire_hpa",
        "download_manifest",
    ],
    "segment": ["estimate_scale", "segment_and_crop", "segmentation_overlay", "segmentation_qc"],
    "filter": ["filter_cells"],
    "tile": ["tile_fields", "tile_stats"],
    "train": ["train_model", "stitch_reconstructions"],
    "features": ["extract_features", "pca_features", "baselines"],
    "metrics": ["pixel_space", "evaluate", "evaluate_layer", "summarize_metrics", "aggregate_profiles"],
    "report": ["embed_best_layer", "embed_handcrafted", "explorer"],
}
STAGE_OF = {rule: stage for stage, rules in STAGES.items() for rule in rules}


def read_bench(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    row = rows[-1]  # one row per repeat; Snakemake writes one unless `repeat()` is used

    def number(key):
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return None

    return {"s": number("s"), "max_rss_mb": number("max_rss"), "cpu_time_s": number("cpu_time")}


def aggregate(logs: Path, since: float | None = None) -> dict:
    """Seconds per rule (with job count) and per stage from ``logs`` (= logs/<dataset>); with
    ``since`` (a POSIX time), only the files written after it (one run of several)."""
    per_rule = defaultdict(lambda: {"jobs": 0, "s": 0.0, "cpu_time_s": 0.0, "max_rss_mb": 0.0, "max_job_s": 0.0})
    first_start, last_end = float("inf"), float("-inf")
    for path in sorted(logs.rglob("*.bench.tsv")):
        if since is not None and path.stat().st_mtime < since:
            continue
        rel = path.relative_to(logs)
        name = rel.parts[0] if len(rel.parts) > 1 else rel.name.removesuffix(".bench.tsv")
        bench = read_bench(path)
        if bench["s"] is None:
            continue
        end = path.stat().st_mtime
        first_start = min(first_start, end - bench["s"])
        last_end = max(last_end, end)
        r = per_rule[name]
        r["jobs"] += 1
        r["s"] += bench["s"]
        r["cpu_time_s"] += bench["cpu_time_s"] or 0.0
        r["max_rss_mb"] = max(r["max_rss_mb"], bench["max_rss_mb"] or 0.0)
        r["max_job_s"] = max(r["max_job_s"], bench["s"])
    total = sum(r["s"] for r in per_rule.values())
    per_stage = {}
    for stage in [*STAGES, "other"]:
        rules = [n for n in per_rule if STAGE_OF.get(n, "other") == stage]
        if not rules:
            continue
        s = sum(per_rule[n]["s"] for n in rules)
        per_stage[stage] = {
            "rules": sorted(rules),
            "jobs": sum(per_rule[n]["jobs"] for n in rules),
            "s": s,
            "share": s / total if total else None,
            "cpu_time_s": sum(per_rule[n]["cpu_time_s"] for n in rules),
            "max_rss_mb": max(per_rule[n]["max_rss_mb"] for n in rules),
        }
    for r in per_rule.values():
        r["share"] = r["s"] / total if total else None
    return {
        # first job's start (its file's time minus its duration) to the last job's end
        "span_s": last_end - first_start if per_rule else None,
        "span": [time.strftime("%H:%M:%S", time.gmtime(t)) for t in (first_start, last_end)] if per_rule else None,
        "jobs_with_bench": sum(r["jobs"] for r in per_rule.values()),
        "sum_job_s": total,
        "rules": dict(sorted(per_rule.items(), key=lambda kv: -kv[1]["s"])),
        "stages": per_stage,
    }


def run_pipeline(workdir: Path, cores: int, limit_s: float) -> dict:
    """``snakemake --cores N`` of the default config in ``workdir``; wall time and job count."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    snakemake = shutil.which("snakemake") or "snakemake"
    cmd = [snakemake, "--cores", str(cores), "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    t0 = time.perf_counter()
    with open(workdir / "snakemake.out", "w") as out:
        proc = subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=limit_s, check=False)
    wall = time.perf_counter() - t0
    text = (workdir / "snakemake.out").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed (exit {proc.returncode}); see {workdir}/snakemake.out:\n{text[-3000:]}")
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", text)
    return {"wall_s": wall, "jobs": int(done[-1][1]) if done else None, "command": " ".join(cmd[:3])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the default pipeline in a temporary folder first")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--limit-s", type=float, default=3600.0, help="stop the run after this long")
    parser.add_argument("--workdir", type=Path, default=None, help="with --run: where (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="with --run: keep the working folder")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--logs", type=Path, default=None, help="without --run: logs/<dataset> of a finished run")
    parser.add_argument("--wall-s", type=float, default=None, help="without --run: that run's wall time")
    parser.add_argument(
        "--since", default=None, help="without --run: only files written after this local time ('YYYY-MM-DD HH:MM')"
    )
    parser.add_argument("--note", default=None, help="where the figures come from (shown in BENCHMARKS.md)")
    parser.add_argument("--out", type=Path, default=OUT / "end_to_end.json")
    args = parser.parse_args(argv)

    started, load_start = time.time(), load_average()
    print(f"load average at start: {load_start}", flush=True)
    run = None
    if args.run:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cellembed-e2e-"))
        try:
            run = run_pipeline(workdir, args.cores, args.limit_s)
            print(f"default run: {run['wall_s']:.0f} s, {run['jobs']} jobs", flush=True)
            summary = aggregate(workdir / "logs" / args.dataset)
        finally:
            if not args.keep and args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        source = "this command's run (fresh working directory, empty results/)"
        wall = run["wall_s"]
    else:
        logs = args.logs or ROOT / "logs" / args.dataset
        since = time.mktime(time.strptime(args.since, "%Y-%m-%d %H:%M")) if args.since else None
        summary = aggregate(logs, since)
        source = args.note or f"an earlier run's benchmark files ({logs})"
        wall = args.wall_s
        if wall is None and summary["span_s"]:
            wall = summary["span_s"]
            source += (
                f"; wall time: from the first job's start to the last job's end, {summary['span'][0]}-"
                f"{summary['span'][1]} UTC, from the files' times and durations"
            )
    load_end = load_average()
    print(json.dumps({k: v for k, v in summary.items() if k != "rules"}, indent=2))
    print(f"load average at end: {load_end}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/end_to_end.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "pipeline_command": f"snakemake --cores {args.cores}" + (" (in a temporary folder, -d)" if args.run else ""),
        "machine": machine_info(args.cores),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "finished": now(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "source": source,
        "fresh_run": bool(args.run),
        "wall_s": wall,
        "jobs": run["jobs"] if run else None,
        **summary,
    }
    args.out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
