"""Rewrite BENCHMARKS.md from the JSON files the benchmarks wrote under benchmarks/out/.

Each benchmark owns one section between ``<!-- name:start -->`` and ``<!-- name:end -->``
markers; sections without fresh results are left as they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
TARGET = ROOT / "BENCHMARKS.md"


def train_throughput(data: dict) -> str:
    m = data["machine"]
    lines = [
        f"Command: `{data['command'].strip()}`  ",
        f"Machine: {m['cpu_cores']} CPU threads, {m['platform']}, Python {m['python']}, torch {m['torch']}, "
        f"GPU: {m['gpu'] or 'none'}.",
        "",
        "| family | preset | device | bf16 | parameters | images/s (median) | data wait share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['family']} | {r['preset']} | {r['device']} | {'yes' if r['amp_bf16'] else 'no'} | "
            f"{r['n_parameters']:,} | {r['images_per_s']:.0f} | {100 * r['data_wait_fraction']:.1f}% |"
        )
    return "\n".join(lines)


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s" if s < 100 else f"{s:.0f} s"


def _megabytes(mb: float) -> str:
    return f"{mb:,.0f} MB" if mb < 10_000 else f"{mb / 1e3:.1f} GB"


def _scaling_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if "skipped" in row:
        return row["skipped"]
    if "timed_out_s" in row:
        return f"> {row['timed_out_s']:.0f} s (stopped)"
    runs = f" ({row['runs']} runs)" if row["runs"] > 1 else " (1 run)"
    return f"{_seconds(row['wall_s'])}, {_megabytes(row['peak_rss_mb'])}{runs}"


def metrics_scaling(data: dict) -> str:
    m = data["machine"]
    sizes = sorted({r["n"] for r in data["rows"]})
    cells = {(r["metric"], r["n"]): r for r in data["rows"]}
    load0, load1 = data["load_average_start"], data["load_average_end"]
    d = data["data"]
    lines = [
        f"Command: `{data['command'].strip()}` ({data['elapsed_s'] / 60:.0f} min in all, {data['started']}"
        + (
            f"; the rows not re-run are from the earlier command, {data['earlier']['started']})  "
            if "earlier" in data
            else ")  "
        ),
        f"Machine: {m['cpu_cores']} CPU cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['threads']} threads "
        f"(OMP / OpenBLAS / MKL), {m['platform']}, Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, "
        f"scikit-learn {m['sklearn']}, torch {m['torch']}, BLAS: {m['blas']}.  ",
        f"Load average (1/5/15 min) at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}, at end "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}"
        + (": other jobs shared the cores, so times are pessimistic." if load0[0] >= 0.5 * m["cpu_cores"] else "."),
        "",
        f"Data: {d['classes']} Gaussian classes in a random {d['latent_dims']}-dimensional subspace, "
        f"input space X float32 N x {d['input_dims']:,}, embedding Y float64 N x {d['features']}, "
        f"{d['fields']} fields as groups, seed {d['seed']}. Each cell: median wall time, then the peak RSS of the "
        "measuring process (inputs, interpreter and imports included), over the runs shown.",
        "",
        "| metric | call | " + " | ".join(f"N = {n:,}" for n in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for name, info in data["calls"].items():
        if not any((name, n) in cells for n in sizes):
            continue
        row = [cells.get((name, n)) for n in sizes]
        lines.append(f"| {name} ({info['note']}) | `{info['call']}` | " + " | ".join(map(_scaling_cell, row)) + " |")
    if data["sklearn_comparison"]:
        lines += [
            "",
            "| N | k | ours: time, peak RSS | sklearn: time, peak RSS | sklearn / ours: time | memory | "
            "memory above inputs | abs. difference of T |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in data["sklearn_comparison"]:
            if "skipped" in c:
                lines.append(f"| {c['n']:,} | {c['k']} | | sklearn {c['skipped']} | | | | |")
                continue
            lines.append(
                f"| {c['n']:,} | {c['k']} | {_seconds(c['ours_wall_s'])}, {_megabytes(c['ours_peak_rss_mb'])} | "
                f"{_seconds(c['sklearn_wall_s'])}, {_megabytes(c['sklearn_peak_rss_mb'])} | "
                f"{c['time_ratio']:.1f}x | {c['memory_ratio']:.1f}x | {c['extra_memory_ratio']:.0f}x | "
                f"{c['abs_difference']:.1e} |"
            )
    if data.get("precision_comparison"):
        lines += [
            "",
            "float32 against float64 distances (`neighbourhood_curves` rows above): largest absolute difference of the "
            "curve AUCs.",
            "",
            "| N | trustworthiness AUC | continuity AUC | Q_NX AUC | LCMC AUC |",
            "|---|---|---|---|---|",
        ]
        for c in data["precision_comparison"]:
            diff = c["auc_abs_difference"]
            lines.append(
                f"| {c['n']:,} | {diff['trustworthiness']:.1e} | {diff['continuity']:.1e} | {diff['q_nx']:.1e} | "
                f"{diff['lcmc']:.1e} |"
            )
    t = data["target"]
    measured = ""
    if t.get("wall_s"):
        row = cells[(t["metric"], t["n"])]
        measured = (
            f": {_seconds(row['wall_s'])} wall ({_seconds(row['cpu_s'])} CPU, so about "
            f"{row['cpu_s'] / row['wall_s']:.1f} of the {m['threads']} threads' cores were ours), "
            f"{_megabytes(row['peak_rss_mb'])} peak RSS"
        )
    lines += [
        "",
        f"Target: `{t['metric']}` at N = {t['n']:,} x {d['features']} features within {t['time_s']:.0f} s and "
        f"{t['rss_mb'] / 1e3:.0f} GB on {m['threads']} cores: **{t['verdict']}**{measured}.",
    ]
    return "\n".join(lines)


SECTIONS = {
    "train_throughput": train_throughput,
    "train_throughput_full": train_throughput,
    "train_throughput_cuda": train_throughput,
    "train_throughput_full_cuda": train_throughput,
    "metrics_scaling": metrics_scaling,
}


def main():
    text = TARGET.read_text() if TARGET.exists() else "# Benchmarks\n"
    for name, render in SECTIONS.items():
        path = OUT / f"{name}.json"
        if not path.exists():
            continue
        body = render(json.loads(path.read_text()))
        block = f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->"
        pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
        text = pattern.sub(lambda _, b=block: b, text) if pattern.search(text) else text + "\n" + block + "\n"
    TARGET.write_text(text)


if __name__ == "__main__":
    main()
