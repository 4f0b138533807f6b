"""Deterministic convolutional autoencoder (LLF style).

The VAE's encoder and decoder with a dense bottleneck and no sampling; loss = reconstruction
NLL (Gaussian with learned scale, or Bernoulli).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workflow_scripts.models.base import CellModel
from workflow_scripts.models.blocks import ConvDecoder, ConvEncoder
from workflow_scripts.models.likelihood import ReconstructionLikelihood


class AE(CellModel):
    """Convolutional autoencoder; parameters as :class:`~workflow_scripts.models.vae.VAE` (no beta).

    Feature layers: ``conv1`` .. ``conv<depth>`` and ``code`` (the bottleneck).
    """

    family = "ae"

    def __init__(
        self,
        in_channels: int,
        input_size: int = 64,
        *,
        latent_dim: int = 32,
        width: int = 32,
        depth: int = 4,
        likelihood: str = "gaussian",
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.likelihood = ReconstructionLikelihood(likelihood, in_channels)
        self.encoder = ConvEncoder(in_channels, input_size, width, depth, latent_dim)
        self.decoder = ConvDecoder(in_channels, input_size, width, depth, latent_dim)
        self.layer_names = [f"conv{i + 1}" for i in range(depth)] + ["code"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode and decode images x (N, C, H, W): ``code`` (N, latent_dim) and ``out`` (N, C, H, W)."""
        code = self.encoder(x)
        return {"code": code, "out": self.decoder(code)}

    def loss_terms(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute ``loss`` = ``recon`` (the reconstruction NLL) and ``mse`` of the expected image.

        Parameters
        ----------
        x : torch.Tensor
            The images (N, C, H, W).
        out : dict of str to torch.Tensor
            :meth:`forward` of ``x``.

        Returns
        -------
        dict of str to torch.Tensor
            ``loss``, ``recon``, ``mse`` (scalars).
        """
        recon = self.likelihood.nll(x, out["out"])
        mse = F.mse_loss(self.likelihood.mean(out["out"].float()), x.float())
        return {"loss": recon, "recon": recon, "mse": mse}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Return the expected reconstruction (N, C, H, W) of images x, in their normalised space."""
        return self.likelihood.mean(self.decoder(self.encoder(x)))

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``conv<i>`` (N, C_i, H_i, W_i) for every encoder stage and ``code`` (N, latent_dim)."""
        stages = self.encoder.stages(x)
        maps = {f"conv{i + 1}": h for i, h in enumerate(stages)}
        maps["code"] = self.encoder.dense(stages[-1].flatten(1))
        return maps
