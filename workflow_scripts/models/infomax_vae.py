"""InfoMax VAE (VAEM style): a VAE that also maximises the mutual information I(x; z).

Objective (minimised): recon + beta x KL - mi_weight x I_hat(x; z), where z ~ q(z | x) and
I_hat is a variational lower bound (InfoNCE, NWJ or the interpolated bound of Poole et al.
2019, see ``critic.py``) evaluated with a separable critic f(x, z) = g(x) . h(z): g is a small
conv net of its own (not the VAE's encoder), h an MLP of z. The critic is a second player with
its own optimizer (learning rate ``critic_lr_factor`` x the VAE's): each training step first
moves the critic up the bound on (x, z.detach()), then moves the VAE down the objective with
the critic held fixed.

The VAE part is ``workflow_scripts.models.vae.VAE`` (``self.vae``); encoding, decoding,
reconstructions and feature maps are its own, so the feature layers are the VAE's:
``conv1`` .. ``conv<depth>`` and ``mu``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from workflow_scripts.models.base import CellModel
from workflow_scripts.models.blocks import DownBlock
from workflow_scripts.models.critic import BOUNDS, SeparableCritic, mi_lower_bound, mlp
from workflow_scripts.models.vae import VAE
from workflow_scripts.validation import check_fraction, check_real


class ImageEmbedding(nn.Module):
    """The critic's image encoder g: stride-2 DownBlocks, global average pooling and a linear map.

    The blocks have (16, 32, 64) channels by default; the pooling takes any input size; the
    linear map goes to ``out_dim``.

    The pooled head keeps the fan-in small: with a 4 x 4 grid (1024 inputs) the first Adam
    steps of the critic at 5x the VAE's learning rate moved the scores by tens of nats, which
    the exponential in NWJ turned into a loss of -1e8.
    """

    def __init__(self, in_channels: int, out_dim: int, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        chans = [in_channels, *widths]
        self.blocks = nn.Sequential(*(DownBlock(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.head = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images x (N, C, H, W) as (N, out_dim)."""
        return self.head(self.blocks(x).mean(dim=(2, 3)))


class InfoMaxVAE(CellModel):
    """VAE + lambda x I(x; z) with a jointly trained separable MI critic.

    Parameters
    ----------
    in_channels, input_size, latent_dim, width, depth, likelihood, beta
        As for :class:`~workflow_scripts.models.vae.VAE`.
    mi_weight : float
        lambda, the weight of the MI bound (>= 0; 0 trains a plain VAE beside a critic).
    bound : {"infonce", "nwj", "interpolated"}
        The MI lower bound; ``alpha`` in [0, 1] sets the interpolated one (1: InfoNCE-like,
        0: NWJ-like), whose baseline log a(z) is a learned constant.
    critic_dim : int
        Size of the critic's embeddings g(x) and h(z).
    critic_lr_factor : float
        The critic's learning rate over the VAE's.
    """

    family = "infomax_vae"

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
        mi_weight: float = 1.0,
        bound: str = "infonce",
        alpha: float = 0.5,
        critic_dim: int = 64,
        critic_lr_factor: float = 5.0,
    ):
        super().__init__()
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
        check_fraction("alpha", alpha)
        check_real("mi_weight", mi_weight, 0.0)
        if int(critic_dim) < 1:
            raise ValueError(f"critic_dim must be >= 1, got {critic_dim}")
        check_real("critic_lr_factor", critic_lr_factor, 0.0, strict=True)
        self.vae = VAE(
            in_channels, input_size, latent_dim=latent_dim, width=width, depth=depth, likelihood=likelihood, beta=beta
        )
        self.mi_weight = float(mi_weight)
        self.bound = bound
        self.alpha = float(alpha)
        self.critic_lr_factor = float(critic_lr_factor)
        self.critic = SeparableCritic(
            ImageEmbedding(in_channels, critic_dim), mlp(latent_dim, max(64, critic_dim), critic_dim)
        )
        # log a(z) of the interpolated bound: a learned constant, trained with the critic.
        self.critic_log_baseline = nn.Parameter(torch.zeros(())) if bound == "interpolated" else None
        self.layer_names = list(self.vae.layer_names)

    # -- the VAE ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the VAE's latent mean and log-variance of images x (:meth:`VAE.encode`)."""
        return self.vae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents z (N, latent_dim) with the VAE's decoder (:meth:`VAE.decode`)."""
        return self.vae.decode(z)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the VAE: ``mu``, ``logvar``, ``z`` (sampled in training, ``mu`` in eval mode) and ``out``."""
        return self.vae(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Return the VAE's reconstruction of images x (:meth:`VAE.reconstruct`)."""
        return self.vae.reconstruct(x)

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the VAE's feature maps of images x (:meth:`VAE.feature_maps`)."""
        return self.vae.feature_maps(x)

    # -- the critic ------------------------------------------------------------------------
    def critic_parameters(self) -> list[nn.Parameter]:
        """Return the critic's parameters, with the learned baseline of the interpolated bound."""
        extra = [self.critic_log_baseline] if self.critic_log_baseline is not None else []
        return [*self.critic.parameters(), *extra]

    def mutual_information(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Estimate the bound I_hat(x; z) (nats) on the batch's pairs; 0 for a batch of one.

        Parameters
        ----------
        x : torch.Tensor
            Images (N, C, H, W).
        z : torch.Tensor
            Their latents (N, latent_dim).

        Returns
        -------
        torch.Tensor
            The bound (float32 scalar).
        """
        if x.shape[0] < 2:
            return z.new_zeros((), dtype=torch.float32)
        scores = self.critic(x, z)
        return mi_lower_bound(scores, self.bound, self.alpha, self.critic_log_baseline)

    @contextmanager
    def frozen_critic(self):
        """Inside, the critic gets no gradients and its batch-norm statistics are restored on exit."""
        params = self.critic_parameters()
        flags = [p.requires_grad for p in params]
        saved = [b.detach().clone() for b in self.critic.buffers()]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            with torch.no_grad():
                for b, value in zip(self.critic.buffers(), saved):
                    b.copy_(value)

    # -- training --------------------------------------------------------------------------
    def loss_terms(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the VAE's terms plus ``mi`` = I_hat(x; out["z"]); loss = recon + beta KL - mi_weight mi.

        In eval mode ``z`` is the latent mean, so validation is deterministic.

        Parameters
        ----------
        x : torch.Tensor
            Images (N, C, H, W).
        out : dict of str to torch.Tensor
            :meth:`forward` of ``x``.

        Returns
        -------
        dict of str to torch.Tensor
            The VAE's terms (``loss`` including the MI term) and ``mi``.
        """
        terms = dict(self.vae.loss_terms(x, out))
        mi = self.mutual_information(x, out["z"])
        terms["loss"] = terms["loss"] - self.mi_weight * mi
        terms["mi"] = mi
        return terms

    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Create AdamW for the VAE (``model``) and for the ``critic`` (``critic_lr_factor`` x ``lr``).

        Parameters
        ----------
        lr : float
            The VAE's learning rate.
        weight_decay : float
            AdamW weight decay of both.

        Returns
        -------
        dict of str to torch.optim.Optimizer
            ``model`` and ``critic``.
        """
        return {
            "model": torch.optim.AdamW(self.vae.parameters(), lr=lr, weight_decay=weight_decay),
            "critic": torch.optim.AdamW(
                self.critic_parameters(), lr=lr * self.critic_lr_factor, weight_decay=weight_decay
            ),
        }

    def training_step(self, batch, optimizers: dict, autocast) -> dict[str, torch.Tensor]:
        """Take one critic step, then one VAE step.

        (a) One critic step up the bound on (x, z.detach()), z ~ q(z | x); (b) one VAE step
        down recon + beta KL - mi_weight x bound, with the updated critic held fixed.

        Parameters
        ----------
        batch : torch.Tensor
            Images (N, C, H, W).
        optimizers : dict of str to torch.optim.Optimizer
            As made by :meth:`configure_optimizers`.
        autocast : context manager
            Mixed precision for the forward passes.

        Returns
        -------
        dict of str to torch.Tensor
            :meth:`loss_terms` of the batch, detached.
        """
        x = batch
        critic_opt, model_opt = optimizers["critic"], optimizers["model"]
        critic_opt.zero_grad(set_to_none=True)
        model_opt.zero_grad(set_to_none=True)
        with autocast:
            out = self(x)  # one encoder pass; z is the reparameterised sample
            critic_mi = self.mutual_information(x, out["z"].detach())
        if critic_mi.requires_grad:  # (a) only the critic's parameters get gradients
            (-critic_mi).backward()
            critic_opt.step()
        with self.frozen_critic():  # (b) only the VAE's parameters get gradients
            with autocast:
                terms = self.loss_terms(x, out)
            terms["loss"].backward()
        model_opt.step()
        return {k: v.detach() for k, v in terms.items()}
