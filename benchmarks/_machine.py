"""Shared helpers of the benchmarks: the machine they ran on, load average, small statistics.

Every benchmark records ``machine_info()`` and the load average at its start and end in its
JSON (``benchmarks/out/<name>.json``): the machine is shared, so timings taken while other
jobs use the cores are pessimistic, and ratios measured side by side in one run are the
figures to trust.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import time
from pathlib import Path

MB = 1e6

_VERSIONS = (
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "skimage",
    "tifffile",
    "sklearn",
    "torch",
    "snakemake",
)


def _meminfo_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def gpu_name() -> str | None:
    """The first CUDA device's name when torch sees one (imports torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info(threads: int | None = None, *, versions=_VERSIONS, gpu: bool = True) -> dict:
    """Cores, CPU model, RAM, GPU, platform and the versions of ``versions`` (those installed)."""
    cpu = platform.processor()
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in line
            ),
            cpu,
        )
    except OSError:
        pass
    total_kb = _meminfo_kb("MemTotal")
    found = {}
    for name in versions:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found[name] = getattr(module, "__version__", "?")
    info = {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": round(total_kb * 1024 / 2**30, 1) if total_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": found,
        "gpu": gpu_name() if gpu else None,
    }
    if threads is not None:
        info["threads"] = threads
    return info


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def run_record(script: str, argv, started: float, load_start, load_end, machine: dict) -> dict:
    """The fields every benchmark JSON starts with: the command as typed, the machine, start and
    end times, elapsed seconds and the load average at start and end."""
    import sys

    return {
        "command": f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "finished": now(),
        "elapsed_s": time.time() - started,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }


def median(values) -> float:
    return float(statistics.median(values))


def cpu_seconds() -> float:
    """User + system CPU time of this process (children not included)."""
    t = os.times()
    return t.user + t.system


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
