"""Adversarial family: a DCGAN with an InfoGAN-style mutual-information term (ARL style).

Players
-------
Generator ``G(z)``, z ~ N(0, I_latent_dim): dense layer to the bottleneck (batch norm,
LeakyReLU), ``depth - 1`` :class:`UpBlock` stages and a 4x4 stride-2 transposed convolution to
C channels. There is **no output activation**: the data are z-scored per channel, so values are
unbounded (bright spots sit many standard deviations above the mean) and a scaled tanh would
clip exactly the outliers that carry signal.

Discriminator ``D(x)`` and encoder ``E(x)`` share one convolutional trunk (the InfoGAN design,
E = D's trunk + a separate head): ``depth`` stride-2 :class:`DownBlock` stages, then two linear
heads on the flattened trunk output, ``D`` to one logit (critic score) and ``E`` to latent_dim.
Because the trunk is trained by the discriminator loss on *real* images as well as on fakes,
the features (``conv<i>`` and ``z = E(x)`` on real cells) describe real data, not only the
generator's samples; a separate encoder trained on G(z) alone would never see a real image.

Normalisation in the trunk, both modes: none on the first stage (DCGAN; its convolution gets a
bias instead), a per-sample layer norm (``GroupNorm(1, C)`` over C, H, W) on the others; no
batch norm. Batch norm is unusable here: for WGAN-GP it couples the samples and invalidates the
per-sample gradient penalty, and in BCE mode (tried) the real and fake batches are normalised
by their own statistics in training, so D and E learn to rely on batch statistics: in eval mode
(features, validation) the fakes are normalised with other statistics and E's latent recovery
collapsed (train mi_loss 0.13, eval 1.0 on synthetic cells). With layer norm the trunk computes
the same function in training and eval, and features of a cell do not depend on its batch.

Objectives
----------
* ``bce``: D minimises BCE(D(x), 1 - label_smoothing) + BCE(D(G(z)), 0) (one-sided label
  smoothing of the real labels); G minimises the non-saturating BCE(D(G(z)), 1).
* ``wgan-gp``: D minimises mean D(G(z)) - mean D(x) + gp_weight * GP, with GP the penalty
  (||grad_x D(x_hat)|| - 1)^2 at x_hat = a x + (1 - a) G(z), a ~ U(0, 1) per sample, and the
  norm computed as sqrt(sum g^2 + 1e-12) (finite value and gradient when g = 0); G minimises
  -mean D(G(z)). The penalty is computed outside autocast (float32).
* Mutual information: ``mi_loss`` = mean over batch and latent dims of (E(G(z)) - z)^2, i.e.
  (2 / latent_dim) x the negative log-likelihood of z under a unit-variance Gaussian centred
  on E(G(z)) up to a constant, a variational lower bound on I(z; G(z)). As in InfoGAN it is
  added with weight ``mi_weight`` to *both* players' losses: the discriminator step updates the
  trunk and the E head (on detached fakes), the generator step updates G through E(G(z)).
  Scale: a WGAN critic is 1-Lipschitz in pixel space, so its scores and gradients grow with
  the image size (critic gap ~15-30 at 64 x 64 x 3) and swamp an MI term of order 1 in the
  shared trunk: on synthetic cells mi_loss stayed ~0.7 with ``mi_weight=1`` and reached 0.13
  with ``mi_weight=10`` (BCE: 0.10 with ``mi_weight=1``). Use ``mi_weight`` ~10 with WGAN-GP.

Optimizers: ``{"generator": Adam(G), "discriminator": Adam(trunk + D head + E head)}``,
betas (0.5, 0.999). Each ``training_step`` call (one batch) does one discriminator step and,
every ``n_critic``-th call, one generator step (reusing that call's G(z)); the call counter is a
buffer (``step_count``), so it survives checkpoints and ``state_dict`` round trips. ``n_critic``
defaults to 1 (usual for BCE); 5 is typical for WGAN-GP.

Loss terms (training and validation): ``d_loss`` (adversarial + gp_weight * gp, without MI),
``g_loss`` (adversarial, without MI; on calls without a generator step it is evaluated on that
call's fakes under the discriminator before its update), ``mi_loss``, ``gp`` (WGAN-GP only,
unweighted; training only), ``d_real`` / ``d_fake`` (mean probability D(.) for BCE, mean critic
score for WGAN-GP), ``recon`` = mean squared error of G(E(x)) against x (generator in eval
mode; in training on the first ``TRAIN_RECON_ITEMS`` images of the batch) and
``loss = mi_loss + recon``. Adversarial losses are not comparable across epochs (they measure a
moving game), so the validation ``loss`` that selects the best epoch and drives early stopping
is latent recovery on fakes (a fixed, seeded set of z, so epochs are comparable) plus the cycle
reconstruction of the real validation images: it is low only when G covers the data and E
inverts it. ``recon`` is not trained directly (no term pulls G(E(x)) towards x), so it can
plateau while the GAN still improves: use a generous ``patience``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.base import CellModel
from workflow_scripts.models.blocks import DownBlock, UpBlock, stage_channels

GAN_LOSSES = ("bce", "wgan-gp")
#: Added under the square root of the gradient norm of the penalty (finite at g = 0).
GP_EPS = 1e-12
#: Training steps log ``recon`` on at most this many images of the batch (it costs a generator
#: forward pass; the generator runs in eval mode, so a subset is an unbiased estimate).
TRAIN_RECON_ITEMS = 16
#: Seed of the fixed latent codes used for validation (epochs see the same z).
VAL_SEED = 0


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: float = GP_EPS) -> torch.Tensor:
    """Compute the WGAN-GP penalty mean((||grad_x critic(x_hat)||_2 - 1)^2), unweighted.

    ``x_hat = a * real + (1 - a) * fake`` with ``a ~ U(0, 1)`` per sample. The norm is
    ``sqrt(sum g^2 + eps)``, so the value and its gradient stay finite where the critic's
    gradient is exactly zero. The graph is kept (``create_graph``) so the penalty can be
    back-propagated to the critic.

    Parameters
    ----------
    critic : callable
        Maps (N, ...) inputs to N scores (any shape with N elements).
    real, fake : torch.Tensor
        Real and generated batches of the same shape (detached and cast to float32 here).
    eps : float, default=GP_EPS
        Added under the square root of the gradient norm.

    Returns
    -------
    torch.Tensor
        The penalty (scalar, float32), differentiable with respect to the critic.
    """
    real, fake = real.detach().float(), fake.detach().float()
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(x_hat).float()
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norm = torch.sqrt(grad.flatten(1).pow(2).sum(1) + eps)
    return (norm - 1).pow(2).mean()


@contextlib.contextmanager
def no_param_grads(module: nn.Module):
    """Skip weight gradients of ``module`` (inputs still get gradients) inside the block."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Put ``module`` in eval mode inside the block, then back in its previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class Generator(nn.Module):
    """z (N, latent_dim) -> image (N, C, H, W), no output activation."""

    def __init__(self, in_channels: int, latent_dim: int, channels: list[int], bottleneck: tuple[int, int, int]):
        super().__init__()
        self.bottleneck = bottleneck
        self.project = nn.Linear(latent_dim, math.prod(bottleneck), bias=False)
        self.norm = nn.BatchNorm2d(bottleneck[0])
        rev = channels[::-1]
        self.blocks = nn.Sequential(*(UpBlock(c_in, c_out) for c_in, c_out in zip(rev[:-1], rev[1:])))
        self.head = nn.ConvTranspose2d(rev[-1], in_channels, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent codes z (N, latent_dim) to images (N, C, H, W)."""
        h = self.project(z).view(-1, *self.bottleneck)
        h = F.leaky_relu(self.norm(h), 0.2)
        return self.head(self.blocks(h))


class AdversarialNet(CellModel):
    """DCGAN generator + discriminator/encoder with a shared trunk and an InfoGAN MI term.

    Parameters
    ----------
    in_channels : int
        Image channels C.
    input_size : int
        Height = width of the input; must be divisible by ``2**depth``.
    latent_dim, width, depth : int
        Size of z, channels of the first trunk stage, number of stride-2 stages.
    gan_loss : {"bce", "wgan-gp"}
    gp_weight : float
        Weight of the gradient penalty (WGAN-GP only).
    mi_weight : float
        Weight of the latent-recovery (mutual-information) term in both players' losses.
    label_smoothing : float
        One-sided smoothing of the real labels in BCE mode, in [0, 0.3] (real target 1 - s).
    n_critic : int
        Discriminator steps per generator step (training_step calls per generator update).
    """

    family = "adversarial"

    def __init__(
        self,
        in_channels: int,
        input_size: int = 64,
        *,
        latent_dim: int = 64,
        width: int = 32,
        depth: int = 4,
        gan_loss: str = "bce",
        gp_weight: float = 10.0,
        mi_weight: float = 1.0,
        label_smoothing: float = 0.1,
        n_critic: int = 1,
    ):
        super().__init__()
        _check_options(in_channels, input_size, latent_dim, width, depth, gan_loss, gp_weight, mi_weight)
        _check_schedule(label_smoothing, n_critic)
        self.in_channels = in_channels
        self.input_size = input_size
        self.latent_dim = latent_dim
        self.gan_loss = gan_loss
        self.gp_weight = float(gp_weight)
        self.mi_weight = float(mi_weight)
        self.label_smoothing = float(label_smoothing)
        self.n_critic = int(n_critic)

        channels = stage_channels(width, depth)
        side = input_size // 2**depth
        bottleneck = (channels[-1], side, side)
        flat = math.prod(bottleneck)
        # Built in this order (trunk, heads, generator): it decides the seeded initial weights.
        self.trunk = _trunk_blocks(in_channels, channels)  # discriminator = encoder layers
        self.d_head = nn.Linear(flat, 1)
        self.e_head = nn.Linear(flat, latent_dim)
        self.generator = Generator(in_channels, latent_dim, channels, bottleneck)
        # training_step calls so far (decides when the generator steps); saved with the weights.
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.layer_names = [f"conv{i + 1}" for i in range(depth)] + ["z"]
        self.apply(_dcgan_init)

    # ------------------------------------------------------------------ players
    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters the discriminator step trains: trunk, D head and E head."""
        return [*self.trunk.parameters(), *self.d_head.parameters(), *self.e_head.parameters()]

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.trunk:
            h = block(h)
        return h.flatten(1)

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the D logit (N,) and the E code (N, latent_dim) of images x from one trunk pass."""
        h = self._trunk(x)
        return self.d_head(h).squeeze(1), self.e_head(h)

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """Return the D logit / critic score (N,) of images x (N, C, H, W)."""
        return self.d_head(self._trunk(x)).squeeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the code E(x) (N, latent_dim) of images x (N, C, H, W)."""
        return self.e_head(self._trunk(x))

    def sample_z(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n latent codes z ~ N(0, I) (n, latent_dim).

        Parameters
        ----------
        n : int
            Number of codes.
        device : torch.device, optional
            Where they go; the model's device by default.
        generator : torch.Generator, optional
            A CPU generator to draw from (then moved to ``device``); torch's global generator
            of ``device`` by default.

        Returns
        -------
        torch.Tensor
            The codes (n, latent_dim).
        """
        device = device if device is not None else self.step_count.device
        if generator is not None:
            return torch.randn(n, self.latent_dim, generator=generator).to(device)
        return torch.randn(n, self.latent_dim, device=device)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Return n generator samples G(z), z ~ N(0, I)."""
        return self.generator(self.sample_z(n))

    # ------------------------------------------------------------------ losses
    def _d_adv(self, logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
        logit_real, logit_fake = logit_real.float(), logit_fake.float()
        if self.gan_loss == "bce":
            real = F.binary_cross_entropy_with_logits(logit_real, torch.full_like(logit_real, 1 - self.label_smoothing))
            fake = F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
            return real + fake
        return logit_fake.mean() - logit_real.mean()

    def _g_adv(self, logit_fake: torch.Tensor) -> torch.Tensor:
        logit_fake = logit_fake.float()
        if self.gan_loss == "bce":
            return F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        return -logit_fake.mean()

    def _d_score(self, logit: torch.Tensor) -> torch.Tensor:
        logit = logit.detach().float()
        return torch.sigmoid(logit).mean() if self.gan_loss == "bce" else logit.mean()

    @staticmethod
    def _mi(code: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(code.float(), z.float())

    @torch.no_grad()
    def _recon(self, code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.generator):
            return F.mse_loss(self.generator(code.detach().float()).float(), x.float())

    # ------------------------------------------------------------------ CellModel
    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Create Adam (betas 0.5, 0.999) for the ``generator`` and for the ``discriminator``.

        Parameters
        ----------
        lr : float
            Learning rate of both.
        weight_decay : float
            Adam weight decay of both.

        Returns
        -------
        dict of str to torch.optim.Optimizer
            ``generator`` and ``discriminator`` (:meth:`discriminator_parameters`).
        """
        betas = (0.5, 0.999)
        return {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            "discriminator": torch.optim.Adam(
                self.discriminator_parameters(), lr=lr, betas=betas, weight_decay=weight_decay
            ),
        }

    def training_step(self, batch: torch.Tensor, optimizers: dict, autocast) -> dict[str, torch.Tensor]:
        """Take one discriminator step and, every ``n_critic``-th call, one generator step.

        Parameters
        ----------
        batch : torch.Tensor
            Real images (N, C, H, W).
        optimizers : dict of str to torch.optim.Optimizer
            As made by :meth:`configure_optimizers`.
        autocast : context manager
            Mixed precision for the forward passes.

        Returns
        -------
        dict of str to torch.Tensor
            The loss terms of the module docstring, detached.
        """
        x = batch
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        g_step = (int(self.step_count) + 1) % self.n_critic == 0
        z = self.sample_z(x.shape[0], device=x.device)

        # Discriminator (+ E head) step on real x and detached fakes.
        with autocast:
            with torch.set_grad_enabled(g_step):
                fake = self.generator(z)
            logit_real, code_real = self.discriminate(x)
            logit_fake, code_fake = self.discriminate(fake.detach())
        d_adv = self._d_adv(logit_real, logit_fake)
        mi = self._mi(code_fake, z)
        terms = {"d_real": self._d_score(logit_real), "d_fake": self._d_score(logit_fake)}
        d_loss = d_adv
        if self.gan_loss == "wgan-gp":
            gp = gradient_penalty(self.critic, x, fake)  # float32, outside autocast
            d_loss = d_adv + self.gp_weight * gp
            terms["gp"] = gp.detach()
        opt_d.zero_grad(set_to_none=True)
        (d_loss + self.mi_weight * mi).backward()
        opt_d.step()
        terms["d_loss"] = d_loss.detach()
        terms["mi_loss"] = mi.detach()

        # Generator step every n_critic calls, through the updated discriminator.
        if g_step:
            with no_param_grads(self.trunk), no_param_grads(self.d_head), no_param_grads(self.e_head):
                with autocast:
                    logit_gen, code_gen = self.discriminate(fake)
                g_adv = self._g_adv(logit_gen)
                g_mi = self._mi(code_gen, z)
                opt_g.zero_grad(set_to_none=True)
                (g_adv + self.mi_weight * g_mi).backward()
            opt_g.step()
            terms["g_loss"] = g_adv.detach()
        else:
            terms["g_loss"] = self._g_adv(logit_fake.detach())
        self.step_count += 1

        terms["recon"] = self._recon(code_real[:TRAIN_RECON_ITEMS], x[:TRAIN_RECON_ITEMS])
        terms["loss"] = terms["mi_loss"] + terms["recon"]
        return {k: v.detach() for k, v in terms.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score, encode and cycle-reconstruct real images x (N, C, H, W).

        Parameters
        ----------
        x : torch.Tensor
            Real images (N, C, H, W).

        Returns
        -------
        dict of str to torch.Tensor
            D logit ``logit`` (N,), code ``z`` = E(x) (N, latent_dim) and the cycle
            reconstruction ``recon`` = G(E(x)) (N, C, H, W).
        """
        logit, code = self.discriminate(x)
        return {"logit": logit, "z": code, "recon": self.generator(code)}

    def loss_terms(self, batch: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the validation terms on real images ``batch`` and fakes from a fixed, seeded set of z.

        ``loss = mi_loss + recon``: latent recovery ||E(G(z)) - z||^2 plus ||G(E(x)) - x||^2.

        Parameters
        ----------
        batch : torch.Tensor
            Real images (N, C, H, W).
        out : dict of str to torch.Tensor
            :meth:`forward` of ``batch``.

        Returns
        -------
        dict of str to torch.Tensor
            ``d_loss``, ``g_loss``, ``mi_loss``, ``d_real``, ``d_fake``, ``recon`` and ``loss``.
        """
        x = batch
        z = self.sample_z(x.shape[0], device=x.device, generator=torch.Generator().manual_seed(VAL_SEED))
        fake = self.generator(z)
        logit_fake, code_fake = self.discriminate(fake)
        logit_real = out["logit"]
        mi = self._mi(code_fake, z)
        recon = F.mse_loss(out["recon"].float(), x.float())
        terms = {
            "d_loss": self._d_adv(logit_real, logit_fake),
            "g_loss": self._g_adv(logit_fake),
            "mi_loss": mi,
            "d_real": self._d_score(logit_real),
            "d_fake": self._d_score(logit_fake),
            "recon": recon,
            "loss": mi + recon,
        }
        return terms

    @torch.no_grad()
    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        """G(E(x)) (N, C, H, W), in the input's normalised space."""
        return self.generator(self.encode(batch))

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trunk activations ``conv<i>`` (N, C_i, H_i, W_i) and the code ``z`` = E(x) (N, latent_dim)."""
        maps = {}
        h = x
        for i, block in enumerate(self.trunk):
            h = block(h)
            maps[f"conv{i + 1}"] = h
        maps["z"] = self.e_head(h.flatten(1))
        return maps


def _check_options(in_channels, input_size, latent_dim, width, depth, gan_loss, gp_weight, mi_weight) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if input_size % (2**depth):
        raise ValueError(f"input_size ({input_size}) must be divisible by 2**depth ({2**depth})")
    if latent_dim < 1 or width < 1:
        raise ValueError(f"latent_dim and width must be >= 1, got {latent_dim}, {width}")
    if gan_loss not in GAN_LOSSES:
        raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")
    if gp_weight < 0 or mi_weight < 0:
        raise ValueError(f"gp_weight and mi_weight must be >= 0, got {gp_weight}, {mi_weight}")


def _check_schedule(label_smoothing, n_critic) -> None:
    if not 0.0 <= label_smoothing <= 0.3:
        raise ValueError(f"label_smoothing must be in [0, 0.3], got {label_smoothing}")
    if int(n_critic) != n_critic or n_critic < 1:
        raise ValueError(f"n_critic must be an integer >= 1, got {n_critic}")


def _trunk_blocks(in_channels: int, channels: list[int]) -> nn.ModuleList:
    """Build the shared trunk: DownBlocks, the first without normalisation, the others with layer norm."""
    trunk = nn.ModuleList()
    for i, (c_in, c_out) in enumerate(zip([in_channels] + channels[:-1], channels)):
        block = DownBlock(c_in, c_out)
        if i == 0:
            # No normalisation on the input stage (DCGAN), so the convolution gets a bias.
            block.conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)
            block.norm = nn.Identity()
        else:
            block.norm = nn.GroupNorm(1, c_out)  # per-sample layer norm over (C, H, W)
        trunk.append(block)
    return trunk


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), zero biases."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
