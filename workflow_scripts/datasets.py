"""Dataset bookkeeping shared by the Snakefile and the scripts.

Shard names, the fields of a shard, channel names and roles. Kept free of heavy imports:
the Snakefile imports it at parse time, and a dry run of a large screen must stay fast.
What the workflow knows about each source is in :mod:`workflow_scripts.sources.registry`.
"""

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
    """Return the name of shard ``index``: ``s0000``, ``s0001``, ...

    Parameters
    ----------
    index : int
        Shard number, from 0.

    Returns
    -------
    str
        The name, zero-padded to four digits (more for shard 10000 on).

    Examples
    --------
    >>> shard_name(3), shard_name(12345)
    ('s0003', 's12345')
    """
    return f"s{index:04d}"


#: Channels of the Human Protein Atlas composites (SEEDS.md section 1); yellow (ER) is optional.
HPA_CHANNELS: tuple[dict, ...] = (
    {"key": "blue", "name": "nucleus", "role": "nucleus"},
    {"key": "red", "name": "microtubules", "role": "structure"},
    {"key": "green", "name": "protein", "role": "protein"},
)
HPA_YELLOW = {"key": "yellow", "name": "ER", "role": "other"}


def normalize_channels(dataset: dict) -> list[dict] | None:
    """Return the ``channels`` of a dataset entry as a list of ``{key, name, role[, plane]}``.

    In the order the user wrote them (a mapping in YAML; its order is the array order).
    HPA datasets without ``channels`` get the composite's channels (:data:`HPA_CHANNELS`,
    plus :data:`HPA_YELLOW` with ``yellow: true``).

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.

    Returns
    -------
    list of dict or None
        The channels; None for the synthetic source (its channels are fixed) and for an
        entry that gives none.

    Examples
    --------
    >>> normalize_channels({"source": "local", "channels": {"0": {"role": "nucleus"}}})
    [{'key': '0', 'role': 'nucleus', 'name': '0'}]
    """
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
    """Return the number of fields of view a synthetic dataset describes.

    It is known before any job runs; other sources are counted by their index.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.

    Returns
    -------
    int
        ``n_fields``.

    Raises
    ------
    ValueError
        If the dataset is not synthetic.
    """
    if dataset["source"] == "synthetic":
        return int(dataset["n_fields"])
    raise ValueError(
        f"datasets.*.source: {dataset['source']!r} datasets are counted by their index "
        f"(results/<dataset>/index.parquet), not from the config"
    )


#: Default of ``datasets.<name>.max_shards``.
MAX_SHARDS = 1000


def effective_shard_size(dataset: dict, total: int) -> int:
    """Return the fields per shard of a dataset of ``total`` fields.

    ``shard_size``, or more where that would make more than ``max_shards`` shards.

    Snakemake spends about 4 ms per job planning a run (DAG, input functions, resources), and
    every shard is a few jobs, so the number of shards, not the number of fields, sets how long
    ``snakemake -n`` takes: 100,000 fields at 16 per shard are 12,500 jobs and almost a minute,
    at 100 per shard under 3,000 jobs and a fraction of it.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry (``shard_size``, optional ``max_shards``).
    total : int
        Number of fields (or cells) of the dataset.

    Returns
    -------
    int
        Fields per shard.

    Raises
    ------
    ValueError
        If ``shard_size`` or ``max_shards`` is below 1.

    Examples
    --------
    >>> effective_shard_size({"shard_size": 16}, 100), effective_shard_size({"shard_size": 16}, 100_000)
    (16, 100)
    """
    size = int(dataset["shard_size"])
    if size < 1:
        raise ValueError(f"shard_size must be >= 1, got {size}")
    cap = int(dataset.get("max_shards", MAX_SHARDS))
    if cap < 1:
        raise ValueError(f"max_shards must be >= 1, got {cap}")
    return max(size, -(-int(total) // cap))


def shard_names(dataset: dict) -> list[str]:
    """Return all shard names of a synthetic dataset: ceil(n_fields / fields per shard) of them.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.

    Returns
    -------
    list of str
        ``s0000``, ``s0001``, ...

    Examples
    --------
    >>> shard_names({"source": "synthetic", "n_fields": 40, "shard_size": 16})
    ['s0000', 's0001', 's0002']
    """
    total = n_fields(dataset)
    size = effective_shard_size(dataset, total)
    count = -(-total // size)
    return [shard_name(i) for i in range(count)]


def shard_fields(dataset: dict, shard: str) -> list[int]:
    """Return the indices of the fields that make up ``shard`` of a synthetic dataset.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.
    shard : str
        Shard name.

    Returns
    -------
    list of int
        Field indices, consecutive.

    Raises
    ------
    ValueError
        If ``shard`` is not a shard name, or lies past the last field.

    Examples
    --------
    >>> shard_fields({"source": "synthetic", "n_fields": 40, "shard_size": 16}, "s0002")
    [32, 33, 34, 35, 36, 37, 38, 39]
    """
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
    """Return the channel names and roles of a dataset, in array order.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.

    Returns
    -------
    list of dict
        ``{"name": ..., "role": ...}`` per channel.

    Raises
    ------
    ValueError
        If a dataset other than synthetic has no ``channels``.

    Examples
    --------
    >>> [c["role"] for c in channels({"source": "synthetic"})]
    ['nucleus', 'structure', 'protein']
    """
    if dataset["source"] == "synthetic":
        return [dict(c) for c in SYNTHETIC_CHANNELS]
    listed = normalize_channels(dataset)
    if not listed:
        raise ValueError(f"datasets.*: a {dataset['source']!r} dataset needs 'channels' (key -> name, role)")
    return [{"name": c["name"], "role": c["role"]} for c in listed]


def channel_index(dataset: dict, role: str) -> int:
    """Return the array index of the first channel with ``role``.

    Parameters
    ----------
    dataset : dict
        The dataset's config entry.
    role : str
        ``nucleus``, ``protein``, ``structure`` or ``other``.

    Returns
    -------
    int
        The channel's index.

    Raises
    ------
    ValueError
        Naming the role, if no channel has it.

    Examples
    --------
    >>> channel_index({"source": "synthetic"}, "protein")
    2
    """
    for i, channel in enumerate(channels(dataset)):
        if channel["role"] == role:
            return i
    raise ValueError(f"dataset has no channel with role {role!r}: {channels(dataset)}")
