"""Dataset bookkeeping shared by the Snakefile and the scripts: shard names, the fields of a
shard, channel names and roles. Kept free of heavy imports: the Snakefile imports it at parse
time, and a dry run of a large screen must stay fast."""

from __future__ import annotations

import re

#: Channels of the built-in synthetic source, in array order, with their roles.
SYNTHETIC_CHANNELS: tuple[dict, ...] = (
    {"name": "nucleus", "role": "nucleus"},
    {"name": "structure", "role": "structure"},
    {"name": "protein", "role": "protein"},
)

SHARD_PATTERN = r"s[0-9][0-9][0-9][0-9]+"


def shard_name(index: int) -> str:
    """Name of shard ``index``: ``s0000``, ``s0001``, ..."""
    return f"s{index:04d}"


def n_fields(dataset: dict) -> int:
    """Number of fields of view a dataset entry describes (known before any job runs)."""
    if dataset["source"] == "synthetic":
        return int(dataset["n_fields"])
    raise ValueError(f"datasets.*.source: unknown source {dataset['source']!r}")


def shard_names(dataset: dict) -> list[str]:
    """All shard names of a dataset: ceil(n_fields / shard_size) of them."""
    size = int(dataset["shard_size"])
    if size < 1:
        raise ValueError(f"shard_size must be >= 1, got {size}")
    count = -(-n_fields(dataset) // size)
    return [shard_name(i) for i in range(count)]


def shard_fields(dataset: dict, shard: str) -> list[int]:
    """Indices of the fields that make up ``shard``."""
    match = re.fullmatch(SHARD_PATTERN, shard)
    if match is None:
        raise ValueError(f"shard name {shard!r} does not match {SHARD_PATTERN!r}")
    index = int(shard[1:])
    size = int(dataset["shard_size"])
    total = n_fields(dataset)
    start = index * size
    if start >= total:
        raise ValueError(f"shard {shard!r} is past the last field ({total} fields, {size} per shard)")
    return list(range(start, min(start + size, total)))


def channels(dataset: dict) -> list[dict]:
    """Channel names and roles of a dataset, in array order."""
    if dataset["source"] == "synthetic":
        return [dict(c) for c in SYNTHETIC_CHANNELS]
    raise ValueError(f"datasets.*.source: unknown source {dataset['source']!r}")


def channel_index(dataset: dict, role: str) -> int:
    """Array index of the first channel with ``role``; ValueError naming the role if none."""
    for i, channel in enumerate(channels(dataset)):
        if channel["role"] == role:
            return i
    raise ValueError(f"dataset has no channel with role {role!r}: {channels(dataset)}")
