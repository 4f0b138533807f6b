"""One training loop for every model family.

Every family implements :class:`workflow_scripts.models.base.CellModel`: its optimizers and its
training step (one optimizer and one loss for most; a critic or a discriminator for others),
and ``loss_terms`` with a ``loss`` entry for validation. The loop adds: seeded shuffling, flips
and 90-degree rotations (each tensor of a dict batch independently), a cosine or one-cycle
learning-rate schedule per optimizer, validation every epoch, early stopping, the best weights
by validation loss, channels-last everywhere and bf16 autocast on CUDA and on CPUs with native
bf16 (:func:`resolve_precision`), optional ``torch.compile``, optional TensorBoard
scalars, and a checkpoint written atomically after every epoch from which a killed job resumes.

The loop reads any :class:`~workflow_scripts.training.streams.TrainingSource`; batches reach
the device as :mod:`~workflow_scripts.training.device` arranges.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workflow_scripts.io import atomic_path
from workflow_scripts.training.device import pick_device, prepare_sources, stream_batches
from workflow_scripts.training.streams import TrainingSource, as_training_source

log = logging.getLogger(__name__)

#: ``TrainSettings.precision`` values (:func:`resolve_precision`).
PRECISIONS = ("auto", "bf16", "fp32")
#: ``TrainSettings.schedule`` values (:func:`make_scheduler`).
SCHEDULES = ("cosine", "onecycle")


@dataclass
class TrainSettings:
    """How :func:`fit` trains.

    Parameters
    ----------
    epochs : int, default=20
        Epochs to train (fewer with early stopping).
    batch_size : int, default=64
        Items per batch.
    lr : float, default=1e-3
        Peak learning rate.
    weight_decay : float, default=0.0
        The optimizers' weight decay.
    patience : int, default=0
        Stop after this many epochs without a better validation loss (0: never).
    augment : bool, default=True
        Random flips and 90-degree rotations of training batches (:func:`augment_batch`).
    seed : int, default=0
        Seeds the shuffling, the augmentation and torch's global generator.
    compile : bool, default=False
        ``torch.compile`` the model.
    tensorboard_dir : str, optional
        Write TensorBoard scalars there.
    precision : str, default="auto"
        One of :data:`PRECISIONS` (:func:`resolve_precision`).
    schedule : str, default="cosine"
        One of :data:`SCHEDULES` (:func:`make_scheduler`).
    data_path : str, default="auto"
        How batches reach the device (:data:`~workflow_scripts.training.device.DATA_PATHS`):
        ``auto`` holds the normalised items on it when they fit the memory budget, else
        prefetches; ``resident`` or ``prefetch`` force one.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 0  # 0 = no early stopping
    augment: bool = True
    seed: int = 0
    compile: bool = False
    tensorboard_dir: str | None = None
    precision: str = "auto"  # auto | bf16 | fp32 (resolve_precision)
    schedule: str = "cosine"  # cosine | onecycle (make_scheduler)
    data_path: str = "auto"


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Parameters
    ----------
    history : DataFrame
        One row per epoch: ``epoch``, ``train_<term>``, ``val_<term>``, ``lr``, ``seconds``,
        ``data_wait_fraction``.
    best_state : dict
        The weights (on the CPU) of the epoch with the lowest validation loss.
    best_epoch : int
        That epoch.
    best_val_loss : float
        Its validation loss.
    resumed_from : int, optional
        The checkpoint's last epoch, when training resumed from one.
    extra : dict
        ``data_path``, ``val_data_path`` (how batches reached the device) and ``resident_mb``.
    """

    history: pd.DataFrame
    best_state: dict
    best_epoch: int
    best_val_loss: float
    resumed_from: int | None = None
    extra: dict = field(default_factory=dict)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return ``"bf16"`` or ``"fp32"``: the autocast precision of training on ``device``.

    ``auto`` is bf16 on CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX),
    where it halves a step's time (measured on the quick preset, one AMD EPYC core: vae 282 to
    159 ms, paired inpainting 361 to 159 ms, contrastive 775 to 389 ms per batch, with
    channels-last), and fp32 on other CPUs, where bf16 is emulated and slower.

    Parameters
    ----------
    precision : str
        One of :data:`PRECISIONS`.
    device : torch.device
        The training device.

    Returns
    -------
    str
        ``bf16`` or ``fp32``.

    Raises
    ------
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.

    Examples
    --------
    >>> resolve_precision("fp32", torch.device("cuda")), resolve_precision("auto", torch.device("cuda"))
    ('fp32', 'bf16')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def cpu_has_bf16() -> bool:
    """Tell whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles).

    Returns
    -------
    bool
        True where torch reports either.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, lr: float):
    """Make the learning-rate schedule of an optimizer, stepped once per epoch.

    ``cosine``: from ``lr`` down a cosine over the epochs. ``onecycle``: up from ``lr / 25``
    to ``lr`` over the first 30 % of the epochs, then down a cosine to ``lr / 1e4`` (Smith &
    Topin's one-cycle policy, torch's ``OneCycleLR``): a short run reaches the accuracy of a
    longer cosine run.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer scheduled.
    schedule : str
        One of :data:`SCHEDULES`.
    epochs : int
        Epochs of the run.
    lr : float
        The peak learning rate.

    Returns
    -------
    torch.optim.lr_scheduler.LRScheduler
        The scheduler.

    Raises
    ------
    ValueError
        If ``schedule`` is not one of :data:`SCHEDULES`.
    """
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "onecycle":
        # OneCycleLR counts steps; stepped per epoch, its cycle spans the epochs. The +1 lets
        # the final step() after the last epoch stay within the schedule.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=epochs + 1, pct_start=0.3, cycle_momentum=False
        )
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators and ask for deterministic kernels.

    Parameters
    ----------
    seed : int
        The seed (numpy's taken modulo 2**32).
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # Deterministic kernels: on the CPU the same config gives the same numbers.
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply a random flip + 90-degree rotation per item (the 8 symmetries of the square), on x's device.

    The symmetries are drawn with ``generator`` on the CPU (the same draws for the same seed on
    every device) and the item positions of each are copied to x's device once; flips and
    rotations move values without arithmetic, so the result is the same on every device.

    Parameters
    ----------
    x : Tensor
        (n, C, H, W) images (H == W) on any device.
    generator : torch.Generator
        A CPU generator; one draw of n integers per call.

    Returns
    -------
    Tensor
        Each item under its symmetry: op 0 identity, 1..3 rotations by 90, 180, 270 degrees, 4..7
        the horizontal flip and then those rotations.

    Examples
    --------
    >>> x = torch.arange(8.0).reshape(2, 1, 2, 2)
    >>> y = augment_batch(x, torch.Generator().manual_seed(0))
    >>> y.shape, sorted(y[0].flatten().tolist()) == sorted(x[0].flatten().tolist())
    (torch.Size([2, 1, 2, 2]), True)
    """
    n = x.shape[0]
    ops = torch.randint(0, 8, (n,), generator=generator)
    if n == 0:
        return x.clone()
    order = torch.argsort(ops, stable=True)  # items grouped by op, each group in item order
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n)
    positions = torch.cat([order, inverse]).to(x.device, non_blocking=True)
    order, inverse = positions[:n], positions[n:]
    parts, start = [], 0
    for op, count in enumerate(torch.bincount(ops, minlength=8).tolist()):
        if count == 0:
            continue
        part = x.index_select(0, order[start : start + count])
        if op >= 4:
            part = part.flip(-1)
        parts.append(torch.rot90(part, op % 4, dims=(-2, -1)))
        start += count
    return torch.cat(parts).index_select(0, inverse)


def _to_device(batch, device: torch.device):
    """Move a numpy array or dict of arrays to ``device`` as tensor(s), images channels-last."""
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    x = x.to(device, non_blocking=True)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _augment(batch, generator: torch.Generator):
    """Augment a batch; of a dict batch, each image tensor (4-D) independently, other values not."""
    if isinstance(batch, dict):  # images (4-D) are augmented; per-item values (labels, ...) not
        return {k: augment_batch(v, generator) if v.ndim == 4 else v for k, v in batch.items()}
    return augment_batch(batch, generator)


def _batches(n: int, batch_size: int, perm: torch.Tensor | None = None):
    order = perm.numpy() if perm is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _run_epoch(model, source: TrainingSource, *, settings, device, optimizers=None, generator=None, epoch=0):
    """Train (with ``optimizers``) or validate for one epoch; return the mean of each loss term and the data wait."""
    training = optimizers is not None
    model.train(training)
    # Sources that draw (e.g. inpainting partners) do so as a function of the epoch, so a
    # resumed run draws the same; validation always uses epoch 0.
    source.set_epoch(epoch if training else 0)
    n = len(source)
    perm = torch.randperm(n, generator=generator) if training else None
    totals: dict[str, float] = {}
    count = 0
    wait = 0.0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")
    # Training skips a last batch of one item: batch norm needs at least two.
    indices = [index for index in _batches(n, settings.batch_size, perm) if not (training and len(index) < 2)]
    batches = stream_batches(source, indices, device)
    try:
        for index in indices:
            # The data wait: host time from asking for the batch until it is augmented on the
            # device (a resident gather or a prefetched copy is queued on the stream, not awaited).
            t0 = time.perf_counter()
            batch = next(batches)
            if training and settings.augment:
                # Drawn with the seeded CPU generator, applied on the device: the same on every device.
                batch = _augment(batch, generator)
            batch = _to_device(batch, device)
            wait += time.perf_counter() - t0
            if training:
                terms = model.training_step(batch, optimizers, autocast)
            else:
                with autocast:
                    terms = model.loss_terms(batch, model(batch))
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(index)
            count += len(index)
    finally:
        batches.close()  # stops a prefetching thread when the loop ends early
    if count == 0:
        raise ValueError("no batch of at least two items: too few cells to train on")
    means = {k: v / count for k, v in totals.items()}
    means["data_wait_s"] = wait
    return means


def _tensorboard(log_dir):
    """Open a TensorBoard writer in ``log_dir`` (None: no writer)."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # the tensorboard package is optional
        raise ImportError("train.tensorboard: true needs the 'tensorboard' package (pip install tensorboard)") from exc
    return SummaryWriter(log_dir=str(log_dir))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact).

    Parameters
    ----------
    path : str or path
        The checkpoint file.
    state : dict
        Tensors and plain values (``torch.save``).
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint without unpickling arbitrary objects.

    Parameters
    ----------
    path : str or path
        The checkpoint file.

    Returns
    -------
    dict
        What :func:`save_checkpoint` wrote, tensors on the CPU.
    """
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class _Progress:
    """The run's state besides weights, optimizers and generators, which a checkpoint resumes."""

    history: list[dict]
    best_state: dict
    best_val: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    start_epoch: int = 1
    resumed_from: int | None = None


def fit(
    model: torch.nn.Module,
    train_source,
    val_source,
    settings: TrainSettings,
    *,
    checkpoint: str | os.PathLike | None = None,
    fingerprint: str = "",
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model``; return the history and the best weights by validation loss.

    With ``checkpoint``, state is saved there after every epoch; if a checkpoint with the same
    ``fingerprint`` exists, training resumes after its last epoch (the result equals that of an
    uninterrupted run on the CPU). A checkpoint with another fingerprint (changed config or
    data) is ignored.

    Batches reach ``device`` as ``settings.data_path`` says
    (:func:`~workflow_scripts.training.device.prepare_sources`): the normalised items held there
    when they fit (a gather per batch), else prepared by a prefetching thread; either way
    augmented there. ``result.extra`` records the path taken (``data_path``,
    ``val_data_path``) and ``resident_mb``.

    Parameters
    ----------
    model : CellModel
        The model (:class:`workflow_scripts.models.base.CellModel`); trained in place.
    train_source, val_source : TrainingSource
        The training and validation batches (a source without ``set_epoch`` is taken as one
        that draws nothing per epoch, :func:`~workflow_scripts.training.streams.as_training_source`).
    settings : TrainSettings
        How to train.
    checkpoint : str or path, optional
        Save there after every epoch and resume from there.
    fingerprint : str, default=""
        Identifies the config and data; a checkpoint with another one is ignored.
    device : torch.device, optional
        Default :func:`~workflow_scripts.training.device.pick_device`.

    Returns
    -------
    TrainResult
        The history, the best weights and how the data reached the device.
    """
    device = device or pick_device()
    settings = dataclasses.replace(settings, precision=resolve_precision(settings.precision, device))
    log.info("training on %s, precision %s, %s schedule", device, settings.precision, settings.schedule)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizers, schedulers = _prepare_model(model, settings, device)
    progress = _Progress([], copy.deepcopy(model.state_dict()))
    if checkpoint is not None and Path(checkpoint).exists():
        _resume(checkpoint, fingerprint, model, optimizers, schedulers, generator, progress)
    sources, data = _device_sources(train_source, val_source, device, settings.data_path)
    writer = _tensorboard(settings.tensorboard_dir)
    stopped = progress.resumed_from is not None and progress.bad_epochs >= settings.patience > 0
    for epoch in range(progress.start_epoch, settings.epochs + 1):
        if stopped:
            break
        row = _epoch(model, sources, settings, device, optimizers, schedulers, generator, epoch)
        progress.history.append(row)
        _write_scalars(writer, row, epoch)
        _update_best(progress, model, row, epoch)
        _log_epoch(row, settings.epochs, progress)
        if checkpoint is not None:
            save_checkpoint(
                checkpoint, _checkpoint_state(fingerprint, epoch, model, optimizers, schedulers, generator, progress)
            )
        if settings.patience > 0 and progress.bad_epochs >= settings.patience:
            log.info("early stopping: no validation improvement for %d epochs", progress.bad_epochs)
            stopped = True
    if writer is not None:
        writer.close()
    best_state = {k: v.detach().cpu() for k, v in progress.best_state.items()}
    history = pd.DataFrame(progress.history)
    return TrainResult(history, best_state, progress.best_epoch, progress.best_val, progress.resumed_from, extra=data)


def _prepare_model(model, settings: TrainSettings, device: torch.device) -> tuple[dict, dict]:
    """Move the model to ``device`` (channels-last), make its optimizers and schedulers, compile it if asked."""
    # Channels-last on every device: oneDNN's and cuDNN's fast convolution layout (on one CPU
    # core 10-40 % faster per step than the default layout, measured on the quick preset).
    model.to(device)
    model.to(memory_format=torch.channels_last)
    optimizers = model.configure_optimizers(settings.lr, settings.weight_decay)
    schedulers = {
        name: make_scheduler(opt, settings.schedule, settings.epochs, opt.param_groups[0]["lr"])
        for name, opt in optimizers.items()
    }
    if settings.compile:
        model.compile()
    return optimizers, schedulers


def _resume(checkpoint, fingerprint, model, optimizers, schedulers, generator, progress: _Progress) -> None:
    """Load the checkpoint's state into the run when its fingerprint matches; else ignore it."""
    state = load_checkpoint(checkpoint)
    if state.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: it was made with another config or data", checkpoint)
        return
    model.load_state_dict(state["model"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
        schedulers[name].load_state_dict(state["schedulers"][name])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    progress.history = list(state["history"])
    progress.best_state = state["best_state"]
    progress.best_val, progress.best_epoch = float(state["best_val"]), int(state["best_epoch"])
    progress.bad_epochs = int(state["bad_epochs"])
    progress.start_epoch = int(state["epoch"]) + 1
    progress.resumed_from = int(state["epoch"])
    log.info("resuming from checkpoint %s after epoch %d", checkpoint, progress.resumed_from)


def _checkpoint_state(fingerprint, epoch, model, optimizers, schedulers, generator, progress: _Progress) -> dict:
    """Collect everything :func:`_resume` needs to continue after ``epoch``."""
    return {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "schedulers": {name: sch.state_dict() for name, sch in schedulers.items()},
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": progress.history,
        "best_state": progress.best_state,
        "best_val": progress.best_val,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
    }


def _device_sources(train_source, val_source, device, data_path: str) -> tuple[list[TrainingSource], dict]:
    """Return both sources as the loop reads them on ``device``, and how they get there (``TrainResult.extra``)."""
    sources, plans = prepare_sources([train_source, val_source], device, data_path)
    for name, plan in zip(("training", "validation"), plans):
        log.info("%s batches: %s on %s, %.1f MB resident (%s)", name, plan.path, device, plan.megabytes, plan.reason)
    data = {
        "data_path": plans[0].path,
        "val_data_path": plans[1].path,
        "resident_mb": sum(plan.megabytes for plan in plans),
    }
    return [as_training_source(source) for source in sources], data


def _epoch(model, sources, settings, device, optimizers, schedulers, generator, epoch: int) -> dict:
    """Train one epoch, validate and step the schedulers; return the epoch's history row."""
    train_source, val_source = sources
    t0 = time.perf_counter()
    train_terms = _run_epoch(
        model, train_source, settings=settings, device=device, optimizers=optimizers, generator=generator, epoch=epoch
    )
    with torch.no_grad():
        val_terms = _run_epoch(model, val_source, settings=settings, device=device)
    lr = next(iter(optimizers.values())).param_groups[0]["lr"]
    for sched in schedulers.values():
        sched.step()
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch}
    row.update({f"train_{k}": v for k, v in train_terms.items() if k != "data_wait_s"})
    row.update({f"val_{k}": v for k, v in val_terms.items() if k != "data_wait_s"})
    row.update({"lr": lr, "seconds": seconds, "data_wait_fraction": train_terms["data_wait_s"] / seconds})
    return row


def _write_scalars(writer, row: dict, epoch: int) -> None:
    """Write an epoch's history row as TensorBoard scalars (``train/loss``, ``val/kl``, ...)."""
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key.replace("_", "/", 1), value, epoch)
    writer.flush()


def _update_best(progress: _Progress, model, row: dict, epoch: int) -> None:
    """Keep the weights of a new best validation loss; else count an epoch without improvement."""
    if row["val_loss"] < progress.best_val:
        progress.best_val, progress.best_epoch, progress.bad_epochs = row["val_loss"], epoch, 0
        progress.best_state = copy.deepcopy(model.state_dict())
    else:
        progress.bad_epochs += 1


def _log_epoch(row: dict, epochs: int, progress: _Progress) -> None:
    log.info(
        "epoch %d/%d  train_loss %.4g  val_loss %.4g  (best %.4g @ %d)  %.1fs",
        row["epoch"],
        epochs,
        row["train_loss"],
        row["val_loss"],
        progress.best_val,
        progress.best_epoch,
        row["seconds"],
    )
