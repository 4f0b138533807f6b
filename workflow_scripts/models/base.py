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
    """Base class of every model family: the interface of the training loop and feature extraction.

    Attributes
    ----------
    family : str
        The family's name in the config (``vae``, ``contrastive``, ...).
    layer_names : list of str
        The activations :meth:`feature_maps` returns, by name.
    """

    family: str = ""
    layer_names: list[str] = []

    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Create the named optimizers; the loop gives each a cosine learning-rate schedule.

        Parameters
        ----------
        lr : float
            Learning rate.
        weight_decay : float
            AdamW weight decay.

        Returns
        -------
        dict of str to torch.optim.Optimizer
            ``{"model": AdamW(all parameters)}`` by default.
        """
        return {"model": torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)}

    def training_step(self, batch, optimizers: dict, autocast) -> dict[str, torch.Tensor]:
        """Take one optimisation step on ``batch``.

        Parameters
        ----------
        batch : torch.Tensor or dict of str to torch.Tensor
            Normalised images (N, C, H, W), or a dict of such tensors.
        optimizers : dict of str to torch.optim.Optimizer
            As made by :meth:`configure_optimizers`.
        autocast : context manager
            Mixed precision for the forward pass (a null context for float32).

        Returns
        -------
        dict of str to torch.Tensor
            The loss terms of the batch, detached.
        """
        with autocast:
            terms = self.loss_terms(batch, self(batch))
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def loss_terms(self, batch, out) -> dict[str, torch.Tensor]:
        """Compute the loss terms averaged over the batch.

        ``loss`` is the training objective and the validation criterion (early stopping,
        best weights).

        Parameters
        ----------
        batch : torch.Tensor or dict of str to torch.Tensor
            The batch given to ``forward``.
        out : dict of str to torch.Tensor
            What ``forward`` returned for it.

        Returns
        -------
        dict of str to torch.Tensor
            Scalar terms, ``loss`` among them.
        """
        raise NotImplementedError

    def reconstruct(self, batch) -> torch.Tensor:
        """Return what the training figure shows beside the input.

        The reconstruction (N, C, H, W) of autoencoders, the predicted target of inpainting
        models, samples of generative ones.

        Parameters
        ----------
        batch : torch.Tensor or dict of str to torch.Tensor
            A batch as given to ``forward``.

        Returns
        -------
        torch.Tensor
            Images (N, C', H, W) in the input's normalised space.
        """
        raise NotImplementedError

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the named activations for cell images x (N, C, H, W).

        Parameters
        ----------
        x : torch.Tensor
            Normalised images (N, C, H, W).

        Returns
        -------
        dict of str to torch.Tensor
            (N, C_l, H_l, W_l) maps or (N, D) vectors, one per name in ``layer_names``.
        """
        raise NotImplementedError
