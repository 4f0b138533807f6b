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


#: Sources whose fields are listed by the indexing job (a Snakemake checkpoint), not known
#: from the config alone.
INDEXED_SOURCES = ("local", "crops", "manifest", "hpa", "bbbc")
#: Sources that download (their download rules run on the submitting machine: cluster compute
#: nodes often have no internet).
DOWNLOAD_SOURCES = ("manifest", "hpa", "bbbc")

#: Channels of the Human Protein Atlas composites (SEEDS.md section 1); yellow (ER) is optional.
HPA_CHANNELS: tuple[dict, ...] = (
    {"key": "blue", "name": "nucleus", "role": "nucleus"},
    {"key": "red", "name": "microtubules", "role": "structure"},
    {"key": "green", "name": "protein", "role": "protein"},
)
HPA_YELLOW = {"key": "yellow", "name": "ER", "role": "other"}


def normalize_channels(dataset: dict) -> list[dict] | None:
    """The ``channels`` of a dataset entry as a list of ``{key, name, role[, plane]}`` in the
    order the user wrote them (a mapping in YAML; its order is the array order)."""
    if dataset["source"] == "synthetic":
        return None
    given = dataset.get("channels")
    if given is None:
        if dataset["source"] == "hpa":
            chans = [dict(c) for c in HPA_CHANNELS]
            if dataset.get("yellow"):
                chans.append(dict(HPA_YELLOW))
            return chans
        return None
    if isinstance(given, list):
        return [dict(c) for c in given]
    out = []
    for key, spec in given.items():
        spec = dict(spec or {})
        spec.setdefault("name", str(key))
        spec.setdefault("role", "other")
        out.append({"key": str(key), **spec})
    return out


def n_fields(dataset: dict) -> int:
    """Number of fields of view a synthetic dataset describes (known before any job runs)."""
    if dataset["source"] == "synthetic":
        return int(dataset["n_fields"])
    raise ValueError(
        f"datasets.*.source: {dataset['source']!r} datasets are counted by their index "
        f"(results/<dataset>/index.parquet), not from the config"
    )


#: Default of ``datasets.<name>.max_shards``.
MAX_SHARDS = 1000


def effective_shard_size(dataset: dict, total: int) -> int:
    """Fields per shard for a dataset of ``total`` fields: ``shard_size``, or more where that
    would make more than ``max_shards`` shards.

    Snakemake spends about 4 ms per job planning a run (DAG, input functions, resources), and
    every shard is a few jobs, so the number of shards, not the number of fields, sets how long
    ``snakemake -n`` takes: 100,000 fields at 16 per shard are 12,500 jobs and almost a minute,
    at 100 per shard under 3,000 jobs and a fraction of it.
    """
    size = int(dataset["shard_size"])
    if size < 1:
        raise ValueError(f"shard_size must be >= 1, got {size}")
    cap = int(dataset.get("max_shards", MAX_SHARDS))
    if cap < 1:
        raise ValueError(f"max_shards must be >= 1, got {cap}")
    return max(size, -(-int(total) // cap))


def shard_names(dataset: dict) -> list[str]:
    """All shard names of a dataset: ceil(n_fields / fields per shard) of them."""
    total = n_fields(dataset)
    size = effective_shard_size(dataset, total)
    count = -(-total // size)
    return [shard_name(i) for i in range(count)]


def shard_fields(dataset: dict, shard: str) -> list[int]:
    """Indices of the fields that make up ``shard``."""
    match = re.fullmatch(SHARD_PATTERN, shard)
    if match is None:
        raise ValueError(f"shard name {shard!r} does not match {SHARD_PATTERN!r}")
    index = int(shard[1:])
    total = n_fields(dataset)
    size = effective_shard_size(dataset, total)
    start = index * size
    if start >= total:
        raise ValueError(f"shard {shard!r} is past the last field ({total} fields, {size} per shard)")
    return list(range(start, min(start + size, total)))


def channels(dataset: dict) -> list[dict]:
    """Channel names and roles of a dataset, in array order."""
    if dataset["source"] == "synthetic":
        return [dict(c) for c in SYNTHETIC_CHANNELS]
    listed = normalize_channels(dataset)
    if not listed:
        raise ValueError(f"datasets.*: a {dataset['source']!r} dataset needs 'channels' (key -> name, role)")
    return [{"name": c["name"], "role": c["role"]} for c in listed]


def channel_index(dataset: dict, role: str) -> int:
    """Array index of the first channel with ``role``; ValueError naming the role if none."""
    for i, channel in enumerate(channels(dataset)):
        if channel["role"] == role:
            return i
    raise ValueError(f"dataset has no channel with role {role!r}: {channels(dataset)}")
