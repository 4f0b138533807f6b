"""The one interface the training loop, feature extraction and plots use for every family.

A batch is either a tensor (N, C, H, W) of normalised images or, for families that train on
structured inputs (paired cell inpainting), a dict of such tensors; the training loop moves
and augments every tensor of a dict independently.

Subclasses implement ``forward``, ``loss_terms``, ``reconstruct`` and ``feature_maps`` and set
``layer_names``. Families with one loss use the default ``configure_optimizers`` and
``training_step``; families with several players (a critic, a discriminator) override both.
"""

from __future__ import annotations

import torch
from torch import nn


class CellModel(nn.Module):
    family: str = ""
    layer_names: list[str] = []

    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers; the loop gives each a cosine learning-rate schedule."""
        return {"model": torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)}

    def training_step(self, batch, optimizers: dict, autocast) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns the loss terms (detached)."""
        with autocast:
            terms = self.loss_terms(batch, self(batch))
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def loss_terms(self, batch, out) -> dict[str, torch.Tensor]:
        """Loss terms averaged over the batch; ``loss`` is the validation criterion
        (early stopping, best weights)."""
        raise NotImplementedError

    def reconstruct(self, batch) -> torch.Tensor:
        """What the training figure shows beside the input: the reconstruction (N, C, H, W) of
        autoencoders, the predicted target of inpainting models, samples of generative ones."""
        raise NotImplementedError

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named activations for cell images x (N, C, H, W): (N, C_l, H_l, W_l) maps or
        (N, D) vectors, one per name in ``layer_names``."""
        raise NotImplementedError
