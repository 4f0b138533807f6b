"""Job sizing for a cluster: memory and time from a shard's pixels, threads from the cores.

Per-shard jobs ask for memory and time in proportion to the pixels of their shard, and every
job asks for more on each retry (``attempt`` is 1, then 2, ...; the SLURM profile sets
``retries``), so a job the cluster killed for memory or time gets more when resubmitted.
``rules/cluster.smk`` binds these functions to the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, MutableMapping

from workflow_scripts import datasets as ds_lib
from workflow_scripts.sources.registry import source_spec

__all__ = [
    "scaled_by_pixels",
    "share_family_resources",
    "shard_megapixels",
    "threads_for_cores",
]



def shard_megapixels(entry: dict, shard: str, resize_to: int, index_rows: Callable[[], int]) -> float:
    """Return the millions of pixel values (fields x height x width x channels) of one shard.

    Parameters
    ----------
    entry : dict
        The dataset's configuration entry.
    shard : str
        The shard's name (``s0000``, ...).
    resize_to : int
        ``crop.resize_to``: pre-cropped cells are sized as crops of twice this.
    index_rows : callable
        Returns the number of fields in the dataset's index; called only for indexed
        sources, whose shards grow past ``max_shards``.

    Returns
    -------
    float
        Megapixels of the shard.

    Examples
    --------
    >>> entry = {"source": "crops", "cells_per_shard": 100, "channels": {"dna": {"role": "nucleus"}}}
    >>> shard_megapixels(entry, "s0000", 64, lambda: 0)
    1.6384
    """
    fields, pixels = source_spec(entry["source"]).shard_size(entry, shard, resize_to=resize_to, index_rows=index_rows)
    channels = ds_lib.normalize_channels(entry) or ds_lib.SYNTHETIC_CHANNELS
    return fields * pixels * len(channels) / 1e6


def scaled_by_pixels(base: float, per_megapixel: float, megapixels: float, attempt: int, unit: float = 1) -> int:
    """Return a resource that grows with the shard and with each retry.

    Parameters
    ----------
    base : float
        The amount every job needs.
    per_megapixel : float
        The amount per megapixel of the shard (rounded up).
    megapixels : float
        The shard's megapixels (:func:`shard_megapixels`).
    attempt : int
        1 on the first submission, 2 on the first retry, ...
    unit : float, optional
        ``per_megapixel`` is given in units of 1/``unit`` of the result (seconds for a
        runtime in minutes: 60).

    Returns
    -------
    int
        ``attempt * (base + ceil(per_megapixel * megapixels / unit))``.

    Examples
    --------
    >>> scaled_by_pixels(1000, 16, 12.5, 2)
    2400
    """
    return attempt * (base + math.ceil(per_megapixel * megapixels / unit))


def threads_for_cores(n: int, cores: int | None) -> int:
    """Return the threads of a multi-threaded job: ``n``, but 1 below 4 cores.

    On a small machine jobs run side by side, one per core, and fill each other's gaps: a job
    on 2 threads leaves a core idle in its single-threaded parts and blocks every 1-thread job
    until both cores are free (measured on 2 cores, quick preset: a 2-thread training step
    takes 0.55-0.61x the time of a 1-thread one, so two 1-thread jobs do 10-20 % more).

    Parameters
    ----------
    n : int
        Threads the job can use.
    cores : int or None
        ``--cores`` of a local run; None on a cluster (no core limit).

    Returns
    -------
    int
        The job's threads.

    Examples
    --------
    >>> threads_for_cores(4, 2), threads_for_cores(4, 16), threads_for_cores(4, None)
    (1, 4, 4)
    """
    if cores is None:
        return n
    return 1 if cores < 4 else n


def share_family_resources(given: MutableMapping | None, family: str, rules: Iterable[str]) -> None:
    """Give rules generated per model the resources set for their family name.

    Rules generated per model (``extract_features_<model>``, ``evaluate_<name>``) take the
    ``--set-resources`` (a profile's ``set-resources:``) given for their family name, e.g.
    ``extract_features``; an entry naming the rule itself wins, key by key.

    Parameters
    ----------
    given : mutable mapping or None
        Rule name -> resources (Snakemake's parsed ``--set-resources``), updated in place.
    family : str
        The family name users write in their profile.
    rules : iterable of str
        The generated rules' names.

    Examples
    --------
    >>> given = {"evaluate": {"mem_mb": 8000}, "evaluate_vae": {"runtime": 30}}
    >>> share_family_resources(given, "evaluate", ["evaluate_vae", "evaluate_pca"])
    >>> given["evaluate_vae"], given["evaluate_pca"]
    ({'mem_mb': 8000, 'runtime': 30}, {'mem_mb': 8000})
    """
    if not given or family not in given:
        return
    for name in rules:
        merged = given[family].copy()
        if name in given:
            merged.update(given[name])
        given[name] = merged
