"""Variational autoencoder (VAEM/LLF style) on (N, C, H, W) cell crops or tiles.

Encoder: ``depth`` stride-2 conv stages (4x4, batch norm, LeakyReLU), dense layer to the
latent mean and log-variance (clamped). Decoder: the mirror image. Likelihood: Gaussian with a
learned per-channel scale (negative log-likelihood) or Bernoulli (BCE with logits on inputs in
[0, 1]). Loss = reconstruction NLL + beta x analytic KL, summed over pixels / latent dims and
averaged over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.blocks import DownBlock, UpBlock, stage_channels

LOGVAR_RANGE = (-10.0, 10.0)


class VAE(nn.Module):
    """Convolutional VAE.

    Parameters
    ----------
    in_channels : int
        Image channels C.
    input_size : int
        Height = width of the input; must be divisible by ``2**depth``.
    latent_dim, width, depth : int
        Latent size, channels of the first stage, number of stride-2 stages.
    likelihood : {"gaussian", "bernoulli"}
    beta : float
        Weight of the KL term.
    """

    family = "vae"

    def __init__(
        self,
        in_channels: int,
        input_size: int = 64,
        *,
        latent_dim: int = 32,
        width: int = 32,
        depth: int = 4,
        likelihood: str = "gaussian",
        beta: float = 1.0,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if input_size % (2**depth):
            raise ValueError(f"input_size ({input_size}) must be divisible by 2**depth ({2**depth})")
        if likelihood not in ("gaussian", "bernoulli"):
            raise ValueError(f"likelihood must be 'gaussian' or 'bernoulli', got {likelihood!r}")
        self.in_channels = in_channels
        self.likelihood = likelihood
        self.beta = float(beta)
        self.latent_dim = latent_dim
        channels = stage_channels(width, depth)
        self.bottleneck = (channels[-1], input_size // 2**depth, input_size // 2**depth)
        flat = math.prod(self.bottleneck)

        self.encoder = nn.ModuleList(
            DownBlock(c_in, c_out) for c_in, c_out in zip([in_channels] + channels[:-1], channels)
        )
        self.to_latent = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        rev = channels[::-1]
        self.decoder = nn.Sequential(*(UpBlock(c_in, c_out) for c_in, c_out in zip(rev[:-1], rev[1:])))
        self.head = nn.ConvTranspose2d(rev[-1], in_channels, 4, stride=2, padding=1)
        # Learned per-channel scale of the Gaussian likelihood (log sigma).
        self.log_scale = nn.Parameter(torch.zeros(in_channels)) if likelihood == "gaussian" else None
        self.layer_names = [f"conv{i + 1}" for i in range(depth)] + ["mu"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for block in self.encoder:
            h = block(h)
        mu, logvar = self.to_latent(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, D) -> Gaussian mean or Bernoulli logits (N, C, H, W)."""
        h = F.leaky_relu(self.from_latent(z), 0.2).view(-1, *self.bottleneck)
        return self.head(self.decoder(h))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return {"mu": mu, "logvar": logvar, "z": z, "out": self.decode(z)}

    def loss_terms(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms averaged over the batch; ``loss`` is the one optimised."""
        pred = out["out"].float()
        x = x.float()
        if self.likelihood == "gaussian":
            log_scale = self.log_scale.view(1, -1, 1, 1)
            nll = 0.5 * ((x - pred) * torch.exp(-log_scale)) ** 2 + log_scale
            nll = nll + 0.5 * math.log(2 * math.pi)
            mse = F.mse_loss(pred, x)
        else:
            nll = F.binary_cross_entropy_with_logits(pred, x, reduction="none")
            mse = F.mse_loss(torch.sigmoid(pred), x)
        recon = nll.flatten(1).sum(1).mean()
        mu, logvar = out["mu"].float(), out["logvar"].float()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "mse": mse}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction from the latent mean, in the input's (normalised) space."""
        out = self.decode(self.encode(x)[0])
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named activations: ``conv<i>`` (N, C_i, H_i, W_i) and ``mu`` (N, latent_dim)."""
        maps = {}
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h)
            maps[f"conv{i + 1}"] = h
        maps["mu"] = self.to_latent(h.flatten(1)).chunk(2, dim=1)[0]
        return maps
