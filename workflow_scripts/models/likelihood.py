"""Reconstruction likelihoods shared by the autoencoder families."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOODS = ("gaussian", "bernoulli")


class ReconstructionLikelihood(nn.Module):
    """Negative log-likelihood of images under the decoder output.

    ``gaussian``: Normal(mean = output, sigma = exp(log_scale)) with a learned per-channel
    scale; ``bernoulli``: output = logits, inputs in [0, 1] (binarised or not), BCE with logits.
    Both summed over pixels and averaged over the batch.
    """

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {kind!r}")
        self.kind = kind
        self.log_scale = nn.Parameter(torch.zeros(channels)) if kind == "gaussian" else None

    def nll(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Return the negative log-likelihood of images ``x`` under the decoder output ``out``.

        Parameters
        ----------
        x : torch.Tensor
            Images (N, C, H, W).
        out : torch.Tensor
            Decoder output of the same shape: Gaussian means or Bernoulli logits.

        Returns
        -------
        torch.Tensor
            Scalar: summed over pixels, averaged over the batch (float32).
        """
        x, out = x.float(), out.float()
        if self.kind == "gaussian":
            log_scale = self.log_scale.view(1, -1, 1, 1)
            nll = 0.5 * ((x - out) * torch.exp(-log_scale)) ** 2 + log_scale + 0.5 * math.log(2 * math.pi)
        else:
            nll = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        return nll.flatten(1).sum(1).mean()

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Return the expected image given the decoder output.

        Parameters
        ----------
        out : torch.Tensor
            Decoder output (N, C, H, W).

        Returns
        -------
        torch.Tensor
            ``out`` itself (Gaussian) or ``sigmoid(out)`` (Bernoulli).
        """
        return torch.sigmoid(out) if self.kind == "bernoulli" else out
