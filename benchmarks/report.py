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


SECTIONS = {"train_throughput": train_throughput, "train_throughput_full": train_throughput}


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
