"""The expert-feedback terms of a guided model's loss.

A model with ``guided: true`` adds a label term and an anchor term for the cells of its
feedback CSV (:mod:`workflow_scripts.training.guided` reads the CSV and builds the batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["guidance_terms"]


def guidance_terms(
    mu: torch.Tensor, batch: dict, label_head: torch.nn.Module | None, anchor_head: torch.nn.Module | None
) -> dict[str, torch.Tensor]:
    """Compute the label and anchor terms for a batch's latent means.

    Each term is averaged over the N cells of the batch (cells without that feedback
    contribute 0).

    Parameters
    ----------
    mu : Tensor of shape (N, D)
        The latent means.
    batch : dict
        ``label`` (N,) codes (-1 = none), ``anchor`` (N, 2) (NaN = none), ``weight`` (N,).
    label_head : Module, optional
        Maps ``mu`` to class logits (None: no label term).
    anchor_head : Module, optional
        Maps ``mu`` to the plane (None: no anchor term).

    Returns
    -------
    dict of Tensor
        ``label_loss`` and ``anchor_loss``, scalars (0 where there is no such feedback).
    """
    n = mu.shape[0]
    weight = batch["weight"].to(mu.device, torch.float32)
    zero = mu.new_zeros((), dtype=torch.float32)
    terms = {"label_loss": zero, "anchor_loss": zero}
    labels = batch["label"].to(mu.device)
    has_label = labels >= 0
    if label_head is not None and bool(has_label.any()):
        logits = label_head(mu[has_label].float())
        ce = F.cross_entropy(logits, labels[has_label], reduction="none")
        terms["label_loss"] = (weight[has_label] * ce).sum() / n
    anchors = batch["anchor"].to(mu.device, torch.float32)
    has_anchor = torch.isfinite(anchors[:, 0])
    if anchor_head is not None and bool(has_anchor.any()):
        where = anchor_head(mu[has_anchor].float())
        dist = (where - anchors[has_anchor]).pow(2).sum(1)
        terms["anchor_loss"] = (weight[has_anchor] * dist).sum() / n
    return terms
