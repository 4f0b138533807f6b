"""The training device, and how training batches reach it: resident items, or a prefetching thread.

A training batch source (:class:`workflow_scripts.training.streams.TrainingSource`) reaches the
device that trains on it in one of two ways:

* **resident**: the source's normalised items are computed once, in chunks, into one tensor on
  the device; a batch is then a gather there (:class:`ResidentSource`,
  :class:`ResidentPairedSource`, :class:`ResidentGuidedSource`, made by a source's
  ``resident(device)``). Chosen when the items fit :func:`memory_budget`.
* **prefetch**: a background thread reads and normalises the next batches (``source.batch``),
  pins them and copies them to the device on a side stream while the current batch trains
  (:class:`Prefetcher`, at most two batches queued).

Both give the values ``source.batch`` gives, bit for bit, in the same order: normalisation is a
function of each item alone, so normalising once equals normalising every epoch.

This module imports nothing else of the package: the sources of
:mod:`~workflow_scripts.training.streams`, :mod:`~workflow_scripts.training.pairs` and
:mod:`~workflow_scripts.training.guided` build their resident versions from the classes here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "DATA_PATHS",
    "pick_device",
    "DeviceSource",
    "ResidentSource",
    "ResidentPairedSource",
    "ResidentGuidedSource",
    "DataPlan",
    "Prefetcher",
    "memory_budget",
    "resident_items",
    "prepare_sources",
    "stream_batches",
]

#: ``TrainSettings.data_path`` values: residency when the items fit the memory budget, else
#: prefetch (``auto``), or either one forced.
DATA_PATHS: tuple[str, ...] = ("auto", "resident", "prefetch")
#: Share of the free GPU memory (``torch.cuda.mem_get_info``) resident items may take; the rest
#: is left to activations, optimizer state and the allocator's slack.
CUDA_BUDGET_FRACTION = 0.5
#: Share of the free RAM (``SC_AVPHYS_PAGES``) resident items may take on the CPU.
CPU_BUDGET_FRACTION = 0.5
#: Items normalised per chunk while building a resident tensor (in bytes of float32 output).
CHUNK_BYTES = 64 * 2**20
#: Batches the prefetching thread may have ready ahead of the training loop.
PREFETCH_DEPTH = 2


def pick_device() -> torch.device:
    """Pick the device to train and extract on: CUDA when available, else the CPU.

    Returns
    -------
    torch.device
        ``cuda`` or ``cpu``.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _index_on(index, device: torch.device) -> torch.Tensor:
    """Return item positions as an int64 tensor on ``device`` (no copy when already there)."""
    if isinstance(index, torch.Tensor):
        return index.to(device=device, dtype=torch.int64, non_blocking=True)
    return torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)).to(device, non_blocking=True)


def resident_items(
    read: Callable[[np.ndarray], np.ndarray], n: int, device: torch.device, *, chunk_bytes: int = CHUNK_BYTES
) -> torch.Tensor:
    """Read ``read(arange(n))`` into one tensor on ``device``, in chunks.

    Parameters
    ----------
    read : callable
        Items at the given positions, as a numpy array (n, ...).
    n : int
        Number of items.
    device : torch.device
        Where the tensor lives.
    chunk_bytes : int, default=CHUNK_BYTES
        About this many bytes are read per chunk.

    Returns
    -------
    Tensor
        All items, of the dtype and item shape ``read`` returns.
    """
    first = np.asarray(read(np.arange(min(n, 1))))
    per_item = max(1, first[0].nbytes if len(first) else 1)
    chunk = max(1, chunk_bytes // per_item)
    items = torch.empty((n, *first.shape[1:]), dtype=torch.from_numpy(first).dtype, device=device)
    for start in range(0, n, chunk):
        part = np.asarray(read(np.arange(start, min(n, start + chunk))))
        items[start : start + len(part)].copy_(torch.from_numpy(part))
    return items


class DeviceSource:
    """A training source whose batches are tensors already on ``device`` (``nbytes`` held there).

    It implements :class:`workflow_scripts.training.streams.TrainingSource`; ``batch`` takes
    the positions as a numpy array or as an int64 tensor (best: on ``device``).
    """

    device: torch.device
    nbytes: int

    def __len__(self) -> int:
        """Return the number of items."""
        raise NotImplementedError

    def batch(self, index) -> Any:
        """Gather the items at ``index`` on the device (subclasses implement it).

        Parameters
        ----------
        index : ndarray or Tensor
            Item positions.

        Returns
        -------
        Tensor or dict of Tensor
            The batch, on ``device``.
        """
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Draw nothing: fixed items are the same in every epoch (sources that draw override it).

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """


class ResidentSource(DeviceSource):
    """Normalised items held as one (N, C, H, W) tensor; ``batch(index)`` gathers on its device.

    Parameters
    ----------
    items : Tensor
        The normalised items, ``source.batch(arange(N))``, on the device that trains.
    """

    def __init__(self, items: torch.Tensor):
        self.items = items
        self.device = items.device
        self.nbytes = items.numel() * items.element_size()

    @classmethod
    def of(cls, source, device: torch.device, *, chunk_bytes: int = CHUNK_BYTES) -> ResidentSource:
        """Hold the items of any source on ``device``.

        Parameters
        ----------
        source : TrainingSource
            Read as ``source.batch(arange(len(source)))``, in chunks.
        device : torch.device
            Where the items are held.
        chunk_bytes : int, default=CHUNK_BYTES
            About this many bytes are read per chunk.

        Returns
        -------
        ResidentSource
            Its batches equal ``source.batch``'s, bit for bit.
        """
        return cls(resident_items(source.batch, len(source), device, chunk_bytes=chunk_bytes))

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.items)

    def batch(self, index) -> torch.Tensor:
        """Gather the items at ``index``.

        Parameters
        ----------
        index : ndarray or Tensor
            Item positions.

        Returns
        -------
        Tensor
            (n, C, H, W) on the source's device.
        """
        return self.items.index_select(0, _index_on(index, self.device))


class ResidentPairedSource(DeviceSource):
    """The resident version of a :class:`~workflow_scripts.training.pairs.PairedSource`.

    Its items are on the device once; partners are still drawn per epoch by the paired source
    (numpy) and copied to the device once per epoch; ``batch(index)`` gathers both sides from
    the one items tensor.

    Parameters
    ----------
    paired : PairedSource
        Draws the partners (``set_epoch``, ``partners``).
    items : Tensor
        Its normalised items, ``paired._read(arange(N))``, on the device that trains.
    """

    def __init__(self, paired, items: torch.Tensor):
        if len(paired) != len(items):
            raise ValueError(f"paired source has {len(paired)} items but the resident tensor {len(items)}")
        self.paired = paired
        self.items = items
        self.device = items.device
        self.nbytes = items.numel() * items.element_size()
        self._partners: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw the partners of ``epoch`` from now on (the training loop calls this).

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """
        self.paired.set_epoch(epoch)

    def partners(self) -> torch.Tensor:
        """Return every item's partner in the current epoch, on the device (copied once per epoch).

        Returns
        -------
        Tensor
            (N,) int64 item positions.
        """
        epoch = self.paired.epoch
        if self._partners is None or self._partners[0] != epoch:
            self._partners = (epoch, _index_on(self.paired.partners(), self.device))
        return self._partners[1]

    def batch(self, index) -> dict[str, torch.Tensor]:
        """Gather the pairs at ``index``.

        Parameters
        ----------
        index : ndarray or Tensor
            Item positions.

        Returns
        -------
        dict of Tensor
            ``{"source": A, "target": B}``, (n, C, H, W) each, on the source's device.
        """
        index = _index_on(index, self.device)
        target = self.partners().index_select(0, index)
        return {"source": self.items.index_select(0, index), "target": self.items.index_select(0, target)}


class ResidentGuidedSource(DeviceSource):
    """The resident version of a :class:`~workflow_scripts.training.guided.GuidedSource`.

    The wrapped source resident, and the per-item labels, anchors and weights as tensors on
    the same device.

    Parameters
    ----------
    inner : DeviceSource
        The wrapped source, resident.
    feedback : Feedback
        Its per-item values (``labels``, ``anchors``, ``weights``, one row per item).
    """

    def __init__(self, inner: DeviceSource, feedback):
        if len(inner) != len(feedback.labels):
            raise ValueError(f"source has {len(inner)} items but feedback {len(feedback.labels)}")
        self.inner = inner
        self.device = inner.device
        self.values = {
            "label": torch.from_numpy(np.asarray(feedback.labels)).to(self.device),
            "anchor": torch.from_numpy(np.asarray(feedback.anchors)).to(self.device),
            "weight": torch.from_numpy(np.asarray(feedback.weights)).to(self.device),
        }
        self.nbytes = inner.nbytes + sum(v.numel() * v.element_size() for v in self.values.values())

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped source (the feedback is the same every epoch).

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """
        self.inner.set_epoch(epoch)

    def batch(self, index) -> dict[str, torch.Tensor]:
        """Gather the items at ``index`` and their feedback.

        Parameters
        ----------
        index : ndarray or Tensor
            Item positions.

        Returns
        -------
        dict of Tensor
            ``{"x", "label", "anchor", "weight"}`` on the source's device.
        """
        index = _index_on(index, self.device)
        out = {"x": self.inner.batch(index)}
        out.update({key: value.index_select(0, index) for key, value in self.values.items()})
        return out


def memory_budget(device: torch.device) -> int:
    """Return the bytes resident items may take on ``device``.

    :data:`CUDA_BUDGET_FRACTION` of the free GPU memory, or (CPU and other devices, which
    share the RAM) :data:`CPU_BUDGET_FRACTION` of the free RAM.

    Parameters
    ----------
    device : torch.device
        The training device.

    Returns
    -------
    int
        The budget in bytes; 0 where it cannot be told.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that tells
        return 0
    return int(free * CPU_BUDGET_FRACTION)


@dataclass
class DataPlan:
    """How a source's batches reach the device.

    Parameters
    ----------
    path : str
        ``resident`` or ``prefetch``.
    nbytes : int, default=0
        Bytes held on the device.
    reason : str, default=""
        Why this path was taken.
    """

    path: str
    nbytes: int = 0
    reason: str = ""

    @property
    def megabytes(self) -> float:
        """Return the bytes held on the device in MiB."""
        return self.nbytes / 2**20


def _resident_nbytes(source) -> int | None:
    """Return what a ResidentCapable source's ``resident_nbytes()`` says; None for any other source."""
    if not (hasattr(source, "resident") and hasattr(source, "resident_nbytes")):
        return None
    return source.resident_nbytes()


def prepare_sources(
    sources: Sequence, device: torch.device, mode: str = "auto", *, budget: int | None = None
) -> tuple[list, list[DataPlan]]:
    """Make each source what the training loop should read on ``device``, with its :class:`DataPlan`.

    ``auto`` holds a source resident when it can
    (:class:`~workflow_scripts.training.streams.ResidentCapable`) and its items fit what is
    left of ``budget`` (shared by the sources in order), else prefetches it. ``resident`` holds
    every source resident (an error for one that cannot be), ``prefetch`` none.

    Parameters
    ----------
    sources : sequence of TrainingSource
        The sources, in order (a :class:`DeviceSource` is taken as it is).
    device : torch.device
        The training device.
    mode : str, default="auto"
        One of :data:`DATA_PATHS`.
    budget : int, optional
        Bytes ``auto`` may hold resident; default :func:`memory_budget`.

    Returns
    -------
    sources : list
        Each source, resident (a :class:`DeviceSource`) or as given (prefetched).
    plans : list of DataPlan
        The path of each.

    Raises
    ------
    ValueError
        If ``mode`` is unknown, or ``resident`` is asked of a source that cannot be.
    """
    if mode not in DATA_PATHS:
        raise ValueError(f"data_path: {mode!r} is not one of {DATA_PATHS}")
    if mode == "auto" and budget is None:
        budget = memory_budget(device)
    out, plans = [], []
    for source in sources:
        if isinstance(source, DeviceSource):
            out.append(source)
            plans.append(DataPlan("resident", source.nbytes, "given resident"))
            continue
        nbytes = None if mode == "prefetch" else _resident_nbytes(source)
        if mode == "resident" and nbytes is None:
            raise ValueError(f"data_path: resident: a {type(source).__name__} cannot be held on a device")
        if nbytes is None:
            reason = "forced" if mode == "prefetch" else f"a {type(source).__name__} cannot be held on a device"
            out.append(source)
            plans.append(DataPlan("prefetch", 0, reason))
            continue
        if mode == "auto" and nbytes > budget:
            out.append(source)
            plans.append(DataPlan("prefetch", 0, f"{nbytes / 2**20:.0f} MB > budget {budget / 2**20:.0f} MB"))
            continue
        resident = source.resident(device)
        if mode == "auto":
            budget -= resident.nbytes
        out.append(resident)
        plans.append(DataPlan("resident", resident.nbytes, "forced" if mode == "resident" else "fits"))
    return out, plans


def _tensors(batch):
    """Turn numpy array(s) into tensor(s) sharing their memory (tensors pass through)."""
    if isinstance(batch, dict):
        return {k: _tensors(v) for k, v in batch.items()}
    return torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch


def _leaves(batch):
    return list(batch.values()) if isinstance(batch, dict) else [batch]


class Prefetcher:
    """Iterate ``source.batch(index)`` for each ``index`` of ``indices`` on ``device``, prepared ahead.

    The batches come in order, as tensors on ``device``, prepared by a background thread up to
    ``depth`` batches ahead.

    On CUDA the thread pins each batch and copies it on a side stream; the main stream waits for
    that copy (an event, no host synchronisation) before the batch is used. An exception raised
    while preparing a batch is raised again by ``next`` when that batch's turn comes. Use as a
    context manager (or call ``close``) so the thread is stopped if the loop ends early.

    Parameters
    ----------
    source : TrainingSource
        Read with ``source.batch(index)`` in the thread.
    indices : sequence of ndarray
        The item positions of each batch, in order.
    device : torch.device
        Where the batches go.
    depth : int, default=PREFETCH_DEPTH
        Batches ready ahead at most.
    """

    def __init__(self, source, indices: Sequence[np.ndarray], device: torch.device, *, depth: int = PREFETCH_DEPTH):
        self.source = source
        self.indices = list(indices)
        self.device = torch.device(device)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._done = False
        cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._thread = threading.Thread(target=self._work, name="cellembed-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _prepare(self, index):
        batch = _tensors(self.source.batch(index))
        if self._stream is None:
            return batch, None
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            pinned = {k: v.pin_memory() for k, v in batch.items()} if isinstance(batch, dict) else batch.pin_memory()
            moved = (
                {k: v.to(self.device, non_blocking=True) for k, v in pinned.items()}
                if isinstance(pinned, dict)
                else pinned.to(self.device, non_blocking=True)
            )
            event = torch.cuda.Event()
            event.record(self._stream)
        return moved, event

    def _work(self) -> None:
        try:
            for index in self.indices:
                if self._stop.is_set() or not self._put(("batch", self._prepare(index))):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            self._put(("error", exc))

    def __iter__(self) -> Iterator:
        """Return the prefetcher itself (an iterator)."""
        return self

    def __next__(self):
        """Return the next batch on the device; raise what preparing it raised."""
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "end":
            self.close()
            raise StopIteration
        if kind == "error":
            self.close()
            raise value
        batch, event = value
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for tensor in _leaves(batch):
                tensor.record_stream(stream)  # its memory is in use on the main stream now
        return batch

    def close(self) -> None:
        """Stop the thread (it finishes the batch it is preparing) and drop queued batches."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Prefetcher:
        """Return the prefetcher; leaving the block closes it."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the prefetcher (:meth:`close`)."""
        self.close()


def stream_batches(source, indices: Sequence[np.ndarray], device: torch.device) -> Iterator:
    """Yield the batches ``source.batch(index)`` for each ``index`` of ``indices`` in order, on ``device``.

    A :class:`DeviceSource` gathers on its device (the positions of all batches copied there at
    once); any other source goes through a :class:`Prefetcher`. A generator: close it (or let it
    run out) to stop the prefetching thread.

    Parameters
    ----------
    source : TrainingSource
        The source (resident or not).
    indices : sequence of ndarray
        The item positions of each batch.
    device : torch.device
        Where the batches go.

    Yields
    ------
    Tensor or dict of Tensor
        Each batch, on ``device``.
    """
    if isinstance(source, DeviceSource):
        lengths = [len(index) for index in indices]
        if not lengths:
            return
        flat = _index_on(np.concatenate([np.asarray(index, dtype=np.int64) for index in indices]), source.device)
        for part in torch.split(flat, lengths):
            yield source.batch(part)
        return
    with Prefetcher(source, indices, device) as batches:
        yield from batches
