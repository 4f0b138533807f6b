"""One training loop for every model family.

A model takes a normalised batch (N, C, H, W) and implements ``forward(x) -> dict`` and
``loss_terms(x, out) -> dict`` with a ``loss`` entry. The loop adds: seeded shuffling, flips and
90-degree rotations, Adam/AdamW with a cosine learning-rate schedule, validation every epoch,
early stopping, the best weights by validation loss, bf16 autocast on CUDA, and a checkpoint
written atomically after every epoch from which a killed job resumes.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workflow_scripts.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 0  # 0 = no early stopping
    augment: bool = True
    seed: int = 0


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_state: dict
    best_epoch: int
    best_val_loss: float
    resumed_from: int | None = None
    extra: dict = field(default_factory=dict)


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # Deterministic kernels: on the CPU the same config gives the same numbers.
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flip + 90-degree rotation per item (the 8 symmetries of the square)."""
    n = x.shape[0]
    ops = torch.randint(0, 8, (n,), generator=generator)
    out = x.clone()
    for op in range(1, 8):
        idx = torch.nonzero(ops == op).flatten()
        if len(idx) == 0:
            continue
        part = x[idx]
        if op >= 4:
            part = part.flip(-1)
        out[idx] = torch.rot90(part, op % 4, dims=(-2, -1))
    return out


def _batches(n: int, batch_size: int, perm: torch.Tensor | None = None):
    order = perm.numpy() if perm is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _run_epoch(model, source, *, settings, device, optimizer=None, generator=None):
    training = optimizer is not None
    model.train(training)
    n = len(source)
    perm = torch.randperm(n, generator=generator) if training else None
    totals: dict[str, float] = {}
    count = 0
    wait = 0.0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for index in _batches(n, settings.batch_size, perm):
        if training and len(index) < 2:
            continue  # batch norm needs at least two items
        t0 = time.perf_counter()
        x = torch.from_numpy(source.batch(index))
        wait += time.perf_counter() - t0
        if training and settings.augment:
            x = augment_batch(x, generator)
        x = x.to(device, non_blocking=True)
        with torch.set_grad_enabled(training), autocast:
            out = model(x)
            terms = model.loss_terms(x, out)
        if training:
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(index)
        count += len(index)
    if count == 0:
        raise ValueError("no batch of at least two items: too few cells to train on")
    means = {k: v / count for k, v in totals.items()}
    means["data_wait_s"] = wait
    return means


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint without unpickling arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
    """
    device = device or pick_device()
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    history: list[dict] = []
    best_state = copy.deepcopy(model.state_dict())
    best_val, best_epoch, bad_epochs, start_epoch = float("inf"), 0, 0, 1
    resumed_from = None

    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history = list(state["history"])
            best_state = state["best_state"]
            best_val, best_epoch = float(state["best_val"]), int(state["best_epoch"])
            bad_epochs = int(state["bad_epochs"])
            start_epoch = int(state["epoch"]) + 1
            resumed_from = int(state["epoch"])
            log.info("resuming from checkpoint %s after epoch %d", checkpoint, resumed_from)
        else:
            log.info("ignoring checkpoint %s: it was made with another config or data", checkpoint)

    stopped = resumed_from is not None and bad_epochs >= settings.patience > 0
    for epoch in range(start_epoch, settings.epochs + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        train_terms = _run_epoch(
            model, train_source, settings=settings, device=device, optimizer=optimizer, generator=generator
        )
        with torch.no_grad():
            val_terms = _run_epoch(model, val_source, settings=settings, device=device)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "data_wait_s"})
        row.update({f"val_{k}": v for k, v in val_terms.items() if k != "data_wait_s"})
        row.update({"lr": lr, "seconds": seconds, "data_wait_fraction": train_terms["data_wait_s"] / seconds})
        history.append(row)
        if val_terms["loss"] < best_val:
            best_val, best_epoch, bad_epochs = val_terms["loss"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        log.info(
            "epoch %d/%d  train_loss %.4g  val_loss %.4g  (best %.4g @ %d)  %.1fs",
            epoch, settings.epochs, train_terms["loss"], val_terms["loss"], best_val, best_epoch, seconds,
        )
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best_state": best_state,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                },
            )
        if settings.patience > 0 and bad_epochs >= settings.patience:
            log.info("early stopping: no validation improvement for %d epochs", bad_epochs)
            stopped = True
    best_state = {k: v.detach().cpu() for k, v in best_state.items()}
    return TrainResult(pd.DataFrame(history), best_state, best_epoch, best_val, resumed_from)
