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
        "| family | preset | device | bf16 | batch | data path | parameters | images/s (median) | data wait share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        # Rows written before --data-path read and normalised each batch in the loop ("legacy").
        path = r.get("data_path", "legacy")
        if path == "resident":
            path += f" ({r['resident_mb']:,.0f} MB)"
        lines.append(
            f"| {r['family']} | {r['preset']} | {r['device']} | {'yes' if r['amp_bf16'] else 'no'} | "
            f"{r.get('batch_size', '-')} | {path} | "
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


# --------------------------------------------------------------------------------------------
# Shared pieces of the newer sections (their JSONs carry _machine.machine_info and load averages)
# --------------------------------------------------------------------------------------------
def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    minutes, seconds = divmod(round(s), 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


def _machine_line(m: dict) -> str:
    v = m.get("versions", {})
    names = {"skimage": "scikit-image", "sklearn": "scikit-learn"}
    versions = ", ".join(f"{names.get(k, k)} {v[k]}" for k in v)
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return (
        f"Machine: {m['cpu_cores']} CPU cores ({m['cpu']}){threads}, {m['ram_gib']} GiB RAM, "
        f"GPU: {m.get('gpu') or 'none'}, {m['platform']}, Python {m['python']}, {versions}.  "
    )


SIDE_BY_SIDE = (
    ": other jobs shared the cores, so absolute times are pessimistic (comparisons within one run were measured "
    "side by side)."
)


def _load_line(data: dict, busy_note: str = SIDE_BY_SIDE, *, start_only: bool = False) -> str:
    """The load averages, and ``busy_note`` when other work shared the cores (judged from the
    start alone with ``start_only``: for a run that itself fills every core at its end)."""
    load0, load1 = data["load_average_start"], data["load_average_end"]
    cores = data["machine"]["cpu_cores"]
    busy = (load0[0] if start_only else max(load0[0], load1[0])) >= 0.5 * cores
    return (
        f"Load average (1/5/15 min) at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}, at end "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}" + (busy_note if busy else ".")
    )


def _header(data: dict, extra: str = "") -> list[str]:
    when = f" ({data['started']}" + (f", {_duration(data['elapsed_s'])} in all" if "elapsed_s" in data else "") + ")"
    return [f"Command: `{data['command'].strip()}`{when}{extra}  ", _machine_line(data["machine"]), _load_line(data)]


def run_all(data: dict) -> str:
    lines = [
        f"Last `run_all.py` invocation: `{data['command'].strip()}` ({data['started']}, "
        f"{_duration(data['elapsed_s'])})  ",
        _machine_line(data["machine"]),
        _load_line(data),
        "",
        "| benchmark | status | time | limit |",
        "|---|---|---|---|",
    ]
    for b in data["benchmarks"]:
        lines.append(f"| {b['name']} | {b['status']} | {_duration(b['elapsed_s'])} | {_duration(b['limit_s'])} |")
    return "\n".join(lines)


def segment_crop(data: dict) -> str:
    d, rows, ratios, agree = data["data"], data["rows"], data["ratios"], data["agreement"]
    seg, crop = data["settings"]["segmentation"], data["settings"]["crop"]
    lines = _header(data)
    lines += [
        "",
        f"Data: {d['fields']} synthetic fields of {d['size']:,} x {d['size']:,} x {d['channels']} (uint16, "
        f"`cells_per_field` {d['cells_per_field_setting']:g}: {d['true_nuclei_per_field']:.0f} true nuclei per "
        f"field), seed {d['seed']}, one shard; the reference processed {d['reference_fields']} of them. "
        + (
            f"Settings (config.yaml: sizes derived from the nucleus diameter, {data['settings']['diameter']:.1f} px, "
            "estimated on these fields as rule estimate_scale does; the reference takes the same values): "
            if "diameter" in data["settings"]
            else "Settings (config.yaml, both implementations): "
        )
        + f"sigma {seg['sigma']:g} px, downscale {seg['downscale']}, "
        f"holes < {seg['fill_holes']} px filled, area {seg['min_area']}-{seg['max_area']} px, clear border "
        f"{'on' if seg['clear_border'] else 'off'}, {crop['size']} x {crop['size']} windows "
        f"(resized to {crop['resize_to']}), edge `{crop['edge']}`. Every figure includes writing the outputs.",
        "",
        "| implementation | fields per run | s / field (median) | fields/s | crops / field | cells/s | "
        "CPU s / field | reference / this: wall (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "ours": "ours: `segment_and_crop` rule (config.yaml: watershed split of touching nuclei on)",
        "ours_nosplit": "ours, `split_touching: false` (the reference's algorithm)",
        "reference": "reference (SEEDS.md section 2, straightforward)",
    }
    for name, label in names.items():
        r = rows[name]
        ratio = f"**{ratios[name]['time_ratio']:.1f}x** ({ratios[name]['cpu_ratio']:.1f}x)" if name in ratios else "1x"
        lines.append(
            f"| {label} | {r['fields']} | {_seconds(r['s_per_field'])} | {r['fields_per_s']:.2f} | "
            f"{r['cells_per_field']:.0f} | {r['cells_per_s']:.0f} | {_seconds(r['cpu_s_per_field'])} | {ratio} |"
        )
    lines += [
        "",
        f"Crop centres on the {d['reference_fields']} fields both processed: centres paired as mutual nearest "
        "neighbours within 1 px; a pair with the same window has its three channels compared pixel for pixel.",
        "",
        "| ours, against the reference | ours' crops | reference's crops | same centre (<= 1 px) | "
        "largest distance | same window | identical pixels | unpaired: ours / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    short = {"ours": "ours (as configured)", "ours_nosplit": "ours, `split_touching: false`", "reference": "reference"}
    for name in ("ours_nosplit", "ours"):
        a = agree[name]
        dist = f"{a['max_distance_px']:.3f} px" if a["max_distance_px"] is not None else "-"
        lines.append(
            f"| {short[name]} | {a['n_ours']:,} | {a['n_reference']:,} | "
            f"{a['matched_within_1px']:,} | {dist} | {a['same_window']:,} | {a['crops_identical']:,} of "
            f"{a['crops_compared']:,} | {a['unmatched_ours']:,} / {a['unmatched_reference']:,} |"
        )
    o = data["outputs"]
    lines += [
        "",
        f"Outputs of one run: ours {o['ours_files']} files per shard ({o['ours_bytes'] / 1e6:.0f} MB: float32 crops "
        f"`.npy`, cell table `.parquet`, QC `.json`) for {d['fields']} fields; the reference "
        f"{o['reference_files']:,} TIFFs ({o['reference_bytes'] / 1e6:.0f} MB) for {d['reference_fields']} fields.",
    ]
    if data.get("profile"):
        lines += ["", "Where the time goes (one extra run of each under cProfile; shares of its total):", ""]
        for name, parts in data["profile"].items():
            shown = ", ".join(f"{k} {100 * v:.0f}%" for k, v in parts.items() if v is not None and v >= 0.005)
            lines.append(f"- {short[name]}: {shown}.")
    t = data["target"]
    lines += [
        "",
        f"Target: at least {t['ratio']:.0f}x faster than the reference: **{t['speed']}** "
        f"({ratios['ours']['time_ratio']:.1f}x as configured, {ratios['ours_nosplit']['time_ratio']:.1f}x with the "
        f"reference's algorithm). Same crop centres within {t['match_px']:g} px: **{t['centres']}** "
        f"(with the reference's algorithm every crop pairs up; as configured the unpaired ones are the nuclei the "
        f"watershed splits).",
    ]
    return "\n".join(lines)


def segmentation_quality(data: dict) -> str:
    lines = _header(data)
    bins = list(data["defaults"])
    lines += [
        "",
        f"Data: `{Path(data['data']).name}` ({data['defaults']['all']['images']} images, "
        f"{data['defaults']['all']['nuclei']:,} hand-labelled nuclei) and the stardist test image (125 nuclei). "
        "Object F1 at IoU >= 0.5, pooled over images (2 TP / (objects + nuclei)); Dice of the foreground.",
        "",
        "| images | F1 | precision | recall | Dice | before (fixed sizes): F1 | one scale for the whole set: F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in bins:
        s, old, one = data["defaults"][key], data["old_defaults"][key], data["one_dataset"][key]
        label = "all" if key == "all" else f"median nucleus area {key} px"
        lines.append(
            f"| {label} ({s['images']} images, {s['nuclei']:,} nuclei) | **{s['f1']:.3f}** | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | {s['dice']:.3f} | {old['f1']:.3f} | {one['f1']:.3f} |"
        )
    sd, so, e = data["stardist"], data["stardist_old"], data["scale_estimate"]
    lines += [
        "",
        f"stardist `img2d.tif`: F1 **{sd['f1']:.3f}** (precision {sd['precision']:.3f}, recall {sd['recall']:.3f}, "
        f"Dice {sd['dice']:.3f}; estimated diameter {sd['diameter']:.1f} px); before: F1 {so['f1']:.3f}.",
        "",
        f"Scale estimate against each image's hand-labelled median diameter: median ratio {e['median_ratio']:.3f}; "
        f"within 15% for {100 * e['within_15pct']:.1f}% of the images, within 1.5x for {100 * e['within_1.5x']:.1f}%.",
    ]
    return "\n".join(lines)


def extract_throughput(data: dict) -> str:
    lines = _header(data)
    rows = data["rows"]
    lines += [
        "",
        f"{rows[0]['cells']:,} random 64 x 64 x 3 crops, batch {rows[0]['batch_size']}, pooling "
        f"{', '.join(data['pooling'])}; medians of {rows[0]['runs']} runs after a warm-up batch.",
        "",
        "| family | preset | device | parameters | feature tables (features) | cells/s, extraction | "
        "cells/s, tables written too |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['preset']} | {r['device']} | {r['n_parameters']:,} | "
            f"{len(r['layers'])} ({r['n_features']:,}) | {r['cells_per_s']:,.0f} | "
            f"{r['cells_per_s_with_tables']:,.0f} |"
        )
    return "\n".join(lines)


def dag_scale(data: dict) -> str:
    lines = _header(data)
    rows = data["rows"]
    dry_run = re.sub(r"\S*/Snakefile", "<repository>/Snakefile", data["dry_run_command"])
    lines += [
        "",
        f"Dry run: `{dry_run}` in a fresh folder holding config.yaml and `scale.yaml` "
        "(`datasets.synthetic: {source: synthetic, n_fields: N, shard_size: 16, max_shards: M}`); the shard size "
        "is what max_shards makes of 16; peak RSS from "
        f"`{data['memory_tool']}`.",
        "",
        "| fields | max_shards | shard size | options | shards | jobs in the DAG | per-shard jobs | "
        "`snakemake -n` wall (median) | runs | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "timed_out_s" in r:
            lines.append(
                f"| {r['fields']:,} | {r.get('max_shards', '')} | {r['shard_size']} | {r.get('options', '')} | | | | "
                f"> {r['timed_out_s']:.0f} s (stopped) | | |"
            )
            continue
        per_shard = {k: v for k, v in r["jobs"].items() if k != "total" and v == r["shards"]}
        lines.append(
            f"| {r['fields']:,} | {r.get('max_shards', '')} | {r['shard_size']} | "
            f"{'`' + r['options'] + '`' if r.get('options') else ''} | "
            f"{r['shards']:,} | {r['jobs_total']:,} | "
            f"{', '.join(f'{k} {v:,}' for k, v in per_shard.items())} | {_seconds(r['wall_s'])} | {r['runs']} | "
            f"{_megabytes(r['peak_rss_mb'])} |"
        )
    first = next((r for r in rows if "jobs" in r), None)
    if first:
        once = [k for k, v in first["jobs"].items() if k != "total" and v != first["shards"]]
        fixed = ", ".join(f"{k} {first['jobs'][k]}" for k in once)
        lines += ["", f"The other jobs do not grow with N: {fixed}."]
    p = data.get("profile")
    if p:
        phases = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["phase_shares"].items() if v is not None)
        own = "; ".join(
            f"`{f['function']}` {100 * f['cum_share']:.1f}% ({f['calls']:,} call{'s' if f['calls'] > 1 else ''})"
            for f in p["own_functions"][:6]
        )
        lines += [
            "",
            f"Profile (cProfile, one dry run at {p['fields']:,} fields, shard size {p['shard_size']}; shares of "
            f"the {_seconds(p['profiled_s'])} profiled, phases nest): {phases}. The workflow's own code "
            f"(rules/*.smk, workflow_scripts) runs {100 * p['own_code_tottime_share']:.1f}% of the time itself; "
            f"its largest functions by cumulative time: {own}.",
        ]
    t = data["target"]
    if "wall_s" in t:
        lines += [
            "",
            f"Target at {t['fields']:,} fields (the defaults: shard_size 16, max_shards 1,000): under {t['time_s']:.0f} s: **{t['time_verdict']}** "
            f"({_seconds(t['wall_s'])}); under {t['rss_mb'] / 1e3:.0f} GB: **{t['memory_verdict']}** "
            f"({_megabytes(t['peak_rss_mb'])}).",
        ]
    else:
        lines += ["", f"Target at {t['fields']:,} fields: {t['verdict']}."]
    return "\n".join(lines)


def end_to_end(data: dict) -> str:
    lines = [
        f"Command: `{data['command'].strip()}` ({data['started']}): `{data['pipeline_command']}`, default "
        f"config.yaml. Figures from {data['source']}.  ",
        _machine_line(data["machine"]),
        _load_line(
            data,
            ": other jobs shared the 2 cores during the run, so its wall time is well above that of a run alone "
            "on the machine; the stage shares are the figures to read.",
            start_only=True,
        )
        if data.get("fresh_run")
        else "Load average during that run: not recorded.",
        "",
    ]
    wall = data.get("wall_s")
    if wall:
        jobs = f", {data['jobs']} jobs" if data.get("jobs") else ""
        ratio = data["sum_job_s"] / wall
        side = (
            "both cores were busy, one job each, for most of the run"
            if ratio >= 1.5
            else "little of it ran side by side, as the training and evaluation jobs each asked for both cores"
        )
        lines.append(
            f"Whole run: **{_duration(wall)}** ({wall:.0f} s{jobs}); the jobs' own wall times add up to "
            f"{_duration(data['sum_job_s'])} ({ratio:.2f}x the run's: {side})."
        )
    else:
        lines.append(f"Wall time not given; the jobs' own times add up to {_duration(data['sum_job_s'])}.")
    lines += [
        "",
        "| stage | rules | jobs | seconds (sum over jobs) | share | largest peak RSS of a job |",
        "|---|---|---|---|---|---|",
    ]
    for stage, s in data["stages"].items():
        lines.append(
            f"| {stage} | {', '.join(s['rules'])} | {s['jobs']} | {s['s']:.0f} | {100 * s['share']:.1f}% | "
            f"{_megabytes(s['max_rss_mb'])} |"
        )
    top = list(data["rules"].items())[:8]
    lines += [
        "",
        "Largest rules: "
        + "; ".join(
            f"{name} {r['s']:.0f} s ({r['jobs']} job{'s' if r['jobs'] > 1 else ''}, longest {r['max_job_s']:.0f} s)"
            for name, r in top
        )
        + ".",
    ]
    return "\n".join(lines)


def feature_quality(data: dict) -> str:
    d, rows = data["dataset"], data["rows"]
    best: dict = {}
    for r in rows:
        key = (r["method"], r["normalize"])
        if key not in best or r["accuracy"] > best[key]["accuracy"]:
            best[key] = r
    protocol = rows[0]["protocol"] if rows else {}
    dropped = ", ".join(map(str, protocol.get("dropped_classes") or [])) or "none"
    knobs = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("name", "source"))
    lines = _header(data) + [
        "",
        f"Dataset: `{d['name']}` ({d.get('source')}: {knobs}); {rows[0]['n_cells'] if rows else 0:,} cells. "
        f"Label `{data['label']}`, groups `{data['group_by']}`. Protocol: {protocol.get('name')}, "
        f"{protocol.get('folds')} folds of whole groups, every class in every training fold, "
        f"classes left out: {dropped}. mAP: same-class cell retrieval, cosine on z-scored features.",
        "",
        "Best layer of each method (by grouped accuracy):",
        "",
        "| method | normalize | best layer | grouped accuracy | macro-F1 | mAP | training |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(best.values(), key=lambda r: -r["accuracy"]):
        name = f"**{r['method']}**" if r["kind"] == "learned" else f"{r['method']} (baseline)"
        mean_ap = "-" if r["map"] is None else f"{r['map']:.3f}"
        train = "-" if r["train_s"] is None else _seconds(r["train_s"])
        lines.append(
            f"| {name} | {r['normalize']} | {r['layer']} | {r['accuracy']:.3f} ± {r['accuracy_sd']:.3f} | "
            f"{r['f1_macro']:.3f} | {mean_ap} | {train} |"
        )
    lines += ["", "Grouped accuracy of every layer:", ""]
    for (method, normalize), _ in sorted(best.items()):
        layers = [r for r in rows if r["method"] == method and r["normalize"] == normalize]
        cells = ", ".join(f"{r['layer']} {r['accuracy']:.3f}" for r in layers)
        lines.append(f"- {method}, {normalize}: {cells}")
    return "\n".join(lines)


def map_memory(data: dict) -> str:
    d = data["data"]
    lines = _header(data) + [
        "",
        f"Data: a synthetic screen of {d['features']} features per well, {d['control_fraction']:.0%} control wells, "
        f"{d['replicates']} replicates per perturbation on different plates of {d['plate_wells']} wells; "
        f"null size {data['null_size']:,}. Each call in a fresh process; peak RSS is the process's "
        "(data included), extra its rise during the call.",
        "",
        "| wells | call | time | peak RSS | extra | copairs pairs |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if "wall_s" in r:
            cells = f"{_seconds(r['wall_s'])} | {_megabytes(r['peak_rss_mb'])} | {_megabytes(r['extra_rss_mb'])}"
        else:
            cells = (r.get("skipped") or f"> {r['timed_out_s']:.0f} s (stopped)") + " | - | -"
        lines.append(f"| {r['n']:,} | {r['metric']} | {cells} | {r['copairs_pairs']:,} |")
    return "\n".join(lines)


SECTIONS = {
    "run_all": run_all,
    "segment_crop": segment_crop,
    "segmentation_quality": segmentation_quality,
    "extract_throughput": extract_throughput,
    "extract_throughput_full": extract_throughput,
    "extract_throughput_cuda": extract_throughput,
    "extract_throughput_full_cuda": extract_throughput,
    "dag_scale": dag_scale,
    "end_to_end": end_to_end,
    "end_to_end_earlier": end_to_end,
    "train_throughput": train_throughput,
    "train_throughput_full": train_throughput,
    "train_throughput_cuda": train_throughput,
    "train_throughput_b256_cuda": train_throughput,
    "train_throughput_full_cuda": train_throughput,
    "metrics_scaling": metrics_scaling,
    "feature_quality": feature_quality,
    "map_memory": map_memory,
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
