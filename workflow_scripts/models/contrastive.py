"""Contrastive family: SimCLR (Chen et al. 2020) on single-cell crops.

Method
------
Every cell gives two random *views* (augmentations below); the network maps each view to an
L2-normalised vector z and is trained with NT-Xent (normalised temperature-scaled
cross-entropy): among the 2N views of a batch, each view must pick out the other view of its
own cell from the 2N - 2 views of the other cells, with cosine similarity / ``temperature`` as
logits. SimCLR rather than BYOL / DINO: it has one network, one optimizer and no momentum
teacher or collapse-avoiding tricks whose balance depends on long schedules, and it already
learns with the small batches (64-256) that a CPU trains in minutes; its weakness, needing
many negatives, matters less here than on ImageNet because a screen has few phenotypes.

Positive pairs
--------------
With ``pair_within`` (default ``Metadata_group``, set by the training script through
:class:`~workflow_scripts.training.pairs.PairedSource`), a batch is pairs of cells of the same group
(field, well: cells sharing the perturbation or protein) and the two views come from the two
cells: the network must then find what cells of a group share, the phenotype, instead of
recognising one cell's outline and nucleus, which two views of the same cell share trivially.
It is the assumption paired cell inpainting makes; on the hard synthetic default (12 epochs,
``normalize: cell``) it raised the field-held-out logistic-regression accuracy of the best
layer from 0.72 to 0.75, and of ``embed`` from 0.63 to 0.74. A
batch of single cells (``pair_within: null``) gives classic SimCLR, two views of each cell.

Network
-------
``depth`` stride-2 :class:`~workflow_scripts.models.blocks.DownBlock` stages with
``stage_channels(width, depth)`` channels (the other families' encoder), global average
pooling, and the *embed* layer, linear (``embed_dim``) + batch norm + ReLU: the representation
(SimCLR's h). A projection head, linear + batch norm + ReLU + linear (``proj_dim``), maps it to
z, which only the loss sees; as in SimCLR the features are taken before the head, which
discards what the augmentations vary. Feature layers: ``conv1`` .. ``conv<depth>`` (maps) and
``embed`` (vector).

Views
-----
Drawn in torch on the batch's device (a GPU never waits for CPU augmentation), without
gradients, in float32 outside autocast, independently per cell, and never mixing channels:

1. Geometry, one bilinear ``grid_sample`` of an affine grid: rotation by a uniform angle in
   [0, 360) degrees, a horizontal flip with probability 1/2, zoom by a factor uniform in
   [1 - ``view_scale``, 1 + ``view_scale``] and a shift uniform in +-``view_shift`` x the
   crop size along each axis. The defaults (0.15, 0.08) keep a centred cell inside the crop.
   Outside the crop ``view_padding``: ``reflection`` (default) mirrors the surrounding
   background, so the view has no artificial frame whose shape gives the rotation away, and it
   is right whatever the normalisation (0 is not the background level of z-scored inputs);
   ``zeros`` or ``border`` are the alternatives.
2. Intensity, per cell and channel, on the channel's own range [lo, hi] (its minimum and
   maximum in the warped view; the inputs may be z-scored or in [0, 1]): u = (x - lo) /
   (hi - lo) in [0, 1], then x' = lo + (hi - lo) (g u^gamma + o) with gamma = exp(U(-a, a)),
   a = ``view_gamma``; gain g = exp(U(-b, b)), b = ``view_intensity`` (a brightness change of
   the signal above the background); offset o ~ U(-``view_offset``, ``view_offset``). A
   constant channel (an empty one) stays as it is.
3. Gaussian blur with probability ``view_blur_p``, sigma ~ U(0.1, ``view_blur_sigma``) px
   (separable, reflect padding).
4. Additive Gaussian noise with standard deviation ~ U(0, ``view_noise``) x the channel's
   standard deviation in that cell.

Randomness: training views come from torch's global generator of the batch's device (the
training loop seeds it and its checkpoint saves the CPU one, so a resumed CPU run draws the
same views). In eval mode (validation loss, which selects the best epoch) and in
``reconstruct`` the views come from a generator seeded ``VIEW_SEED`` afresh on every call, so
the validation loss of an epoch depends on the weights only. Every operation is deterministic
on the CPU. The loop's own flips and 90-degree rotations (``augment``) still run before; the
views subsume them.

Loss terms (training and validation): ``loss`` = NT-Xent; ``pos_acc``, the fraction of views
whose most similar other view is their positive (top-1 among the 2N - 1); ``align``, the mean
squared distance between the two z of a cell; ``uniform``, log of the mean of
exp(-2 ||z_i - z_j||^2) over pairs of cells (Wang & Isola 2020; lower = more spread out).
There is no decoder: ``reconstruct`` returns one augmented view (seeded) so the training
figure shows what the augmentations do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.base import CellModel
from workflow_scripts.models.blocks import DownBlock, stage_channels

#: Seed of the views of validation batches and of ``reconstruct``.
VIEW_SEED = 0
PADDINGS = ("reflection", "zeros", "border")
#: Smallest blur sigma (px) drawn when a view is blurred.
MIN_BLUR_SIGMA = 0.1


def affine_warp(x, angle, flip, zoom, shift, padding="reflection"):
    """Flip, rotate, zoom and shift each item of a batch on its own, with bilinear resampling.

    Parameters
    ----------
    x : torch.Tensor
        Images (N, C, H, W).
    angle : torch.Tensor
        Rotation of each item (N,), radians (pi / 2 equals ``torch.rot90(x, 1, (-2, -1))``).
    flip : torch.Tensor
        Whether to flip each item horizontally (N,), bool.
    zoom : torch.Tensor
        Zoom factor of each item (N,); > 1 enlarges.
    shift : torch.Tensor
        Shift of each item (N, 2; x, y), in fractions of the size.
    padding : {"reflection", "zeros", "border"}
        ``grid_sample``'s padding outside the image.

    Returns
    -------
    torch.Tensor
        The warped images (N, C, H, W).
    """
    n = x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = 1.0 - 2.0 * flip.to(x.dtype)  # -1 mirrors the x axis of the output
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = cos * sign / zoom
    theta[:, 0, 1] = -sin / zoom
    theta[:, 1, 0] = sin * sign / zoom
    theta[:, 1, 1] = cos / zoom
    theta[:, :, 2] = 2.0 * shift  # normalised coordinates span 2 per image size
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def gaussian_blur(x, sigma, radius):
    """Blur each item with its own separable Gaussian, reflect padding; channels independently.

    Parameters
    ----------
    x : torch.Tensor
        Images (N, C, H, W), H and W > ``radius``.
    sigma : torch.Tensor
        Standard deviation of each item's kernel (N,), pixels.
    radius : int
        Kernel half-width, pixels.

    Returns
    -------
    torch.Tensor
        The blurred images (N, C, H, W).
    """
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N * C, K)
    k = 2 * radius + 1
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, 1, k), groups=n * c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, k, 1), groups=n * c)
    return y.view(n, c, h, w)


def intensity_jitter(x, gain, offset, gamma):
    """Jitter the intensities of each item and channel on the channel's own range.

    Gamma applies to the channel's min-max rescaled copy, then gain and offset in units of its
    range, mapped back.

    Parameters
    ----------
    x : torch.Tensor
        Images (N, C, H, W).
    gain, offset, gamma : torch.Tensor
        (N, C) each.

    Returns
    -------
    torch.Tensor
        The jittered images (N, C, H, W).
    """
    lo = x.amin(dim=(2, 3), keepdim=True)
    span = x.amax(dim=(2, 3), keepdim=True) - lo
    u = ((x - lo) / span.clamp_min(1e-12)).clamp(0.0, 1.0)
    u = u.pow(gamma[:, :, None, None])
    return lo + span * (gain[:, :, None, None] * u + offset[:, :, None, None])


class ViewAugment:
    """Random views of a batch (N, C, H, W); strengths as in the module docstring."""

    def __init__(
        self,
        scale=0.15,
        shift=0.08,
        padding="reflection",
        intensity=0.2,
        offset=0.1,
        gamma=0.3,
        blur_p=0.5,
        blur_sigma=1.5,
        noise=0.1,
    ):
        checks = {
            "view_scale": 0 <= scale < 1,
            "view_shift": 0 <= shift <= 0.5,
            "view_padding": padding in PADDINGS,
            "view_intensity": intensity >= 0,
            "view_offset": offset >= 0,
            "view_gamma": gamma >= 0,
            "view_blur_p": 0 <= blur_p <= 1,
            "view_blur_sigma": blur_sigma >= MIN_BLUR_SIGMA,
            "view_noise": noise >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"contrastive: invalid {', '.join(bad)} (see the schema for the ranges)")
        self.scale, self.shift, self.padding = float(scale), float(shift), padding
        self.intensity, self.offset, self.gamma = float(intensity), float(offset), float(gamma)
        self.blur_p, self.blur_sigma, self.noise = float(blur_p), float(blur_sigma), float(noise)
        self.radius = math.ceil(3 * self.blur_sigma)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one random view of each item of x (N, C, H, W).

        Parameters
        ----------
        x : torch.Tensor
            Images (N, C, H, W).
        generator : torch.Generator, optional
            Source of the randomness; torch's global generator of x's device by default.

        Returns
        -------
        torch.Tensor
            The views, in x's dtype (computed in float32).
        """
        dtype, device = x.dtype, x.device
        n, c = x.shape[:2]

        def uniform(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(n, *shape, generator=generator, device=device)

        with torch.autocast(device.type, enabled=False):
            v = x.float()
            angle = uniform(0.0, 2 * math.pi)
            flip = uniform(0.0, 1.0) < 0.5
            zoom = uniform(1 - self.scale, 1 + self.scale)
            shift = uniform(-self.shift, self.shift, 2)
            gain = torch.exp(uniform(-self.intensity, self.intensity, c))
            offset = uniform(-self.offset, self.offset, c)
            gamma = torch.exp(uniform(-self.gamma, self.gamma, c))
            blur = uniform(0.0, 1.0) < self.blur_p
            sigma = uniform(MIN_BLUR_SIGMA, self.blur_sigma)
            noise = uniform(0.0, self.noise)
            v = affine_warp(v, angle, flip, zoom, shift, self.padding)
            v = intensity_jitter(v, gain, offset, gamma)
            if self.blur_p > 0 and min(v.shape[-2:]) > self.radius:
                # Blur all, keep where drawn: no host sync, no index ops (deterministic on CUDA).
                v = torch.where(blur[:, None, None, None], gaussian_blur(v, sigma, self.radius), v)
            if self.noise > 0:
                sd = v.std(dim=(2, 3), keepdim=True) * noise[:, None, None, None]
                v = v + sd * torch.randn(v.shape, generator=generator, device=device)
        return v.to(dtype)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the NT-Xent loss of the pairs (z1[i], z2[i]) and the top-1 positive accuracy.

    Rows are L2-normalised here; computed in float32.

    Parameters
    ----------
    z1, z2 : torch.Tensor
        Projections (N, D) of the two views of each pair.
    temperature : float
        Divides the cosine similarities.

    Returns
    -------
    loss : torch.Tensor
        NT-Xent (scalar).
    acc : torch.Tensor
        Fraction of the 2N views whose most similar other view is their positive.
    """
    n = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):  # a bf16 matmul would round the logits
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        logits = (z @ z.T) / temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        target = torch.arange(2 * n, device=z.device).roll(n)
        loss = F.cross_entropy(logits, target)
        acc = (logits.detach().argmax(1) == target).float().mean()
    return loss, acc


def _full_precision(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``layer`` to x in float32 even under bf16 autocast.

    The embed layer and the projection head are a few small matrix products (no time to
    save), and the loss compares their outputs by cosine similarity at temperature 0.2, where
    bf16's 8-bit mantissa blurs neighbouring logits. The convolutional stages keep autocast's
    speed.
    """
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class ContrastiveNet(CellModel):
    """SimCLR encoder with projection head and its own view augmentation.

    Parameters
    ----------
    in_channels, input_size : int
        Image channels C and height = width (divisible by ``2**depth``).
    width, depth : int
        Channels of the first stage and number of stride-2 stages.
    embed_dim, proj_dim : int
        Size of the representation (``embed``) and of the projection z the loss sees.
    temperature : float
        NT-Xent temperature.
    view_* :
        Augmentation strengths (:class:`ViewAugment`, module docstring).
    """

    family = "contrastive"

    #: What ``reconstruct`` returns, for the training figure's title.
    reconstruction_name = "one augmented view each"

    def __init__(
        self,
        in_channels: int,
        input_size: int = 64,
        *,
        width: int = 32,
        depth: int = 4,
        embed_dim: int = 128,
        proj_dim: int = 64,
        temperature: float = 0.2,
        view_scale: float = 0.15,
        view_shift: float = 0.08,
        view_padding: str = "reflection",
        view_intensity: float = 0.2,
        view_offset: float = 0.1,
        view_gamma: float = 0.3,
        view_blur_p: float = 0.5,
        view_blur_sigma: float = 1.5,
        view_noise: float = 0.1,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if input_size % (2**depth):
            raise ValueError(f"input_size ({input_size}) must be divisible by 2**depth ({2**depth})")
        if temperature <= 0:
            raise ValueError(f"contrastive: temperature must be > 0, got {temperature}")
        if embed_dim < 1 or proj_dim < 1:
            raise ValueError(f"contrastive: embed_dim and proj_dim must be >= 1, got {embed_dim}, {proj_dim}")
        self.temperature = float(temperature)
        self.views = ViewAugment(
            view_scale,
            view_shift,
            view_padding,
            view_intensity,
            view_offset,
            view_gamma,
            view_blur_p,
            view_blur_sigma,
            view_noise,
        )
        channels = stage_channels(width, depth)
        self.blocks = nn.ModuleList(
            DownBlock(c_in, c_out) for c_in, c_out in zip([in_channels] + channels[:-1], channels)
        )
        self.embed = nn.Sequential(nn.Linear(channels[-1], embed_dim, bias=False), nn.BatchNorm1d(embed_dim), nn.ReLU())
        self.projector = nn.Sequential(
            nn.Linear(embed_dim, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, proj_dim),
        )
        self.layer_names = [f"conv{i + 1}" for i in range(depth)] + ["embed"]

    def _view_generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(VIEW_SEED)

    def _layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            maps[f"conv{i + 1}"] = x
        maps["embed"] = _full_precision(self.embed, x.mean(dim=(2, 3)))
        return maps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the representation ``embed`` (N, embed_dim) of images x (N, C, H, W)."""
        return self._layers(x)["embed"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Project two views per cell (random in training, seeded in eval).

        Parameters
        ----------
        x : torch.Tensor or dict of str to torch.Tensor
            Images (N, C, H, W), or a pair batch (``source``, ``target``) whose two cells give
            the two views.

        Returns
        -------
        dict of str to torch.Tensor
            Projections ``z1`` and ``z2`` (N, proj_dim) of the two views.
        """
        a, b = (x["source"], x["target"]) if isinstance(x, dict) else (x, x)
        generator = None if self.training else self._view_generator(a.device)
        views = torch.cat([self.views(a, generator), self.views(b, generator)])
        z1, z2 = _full_precision(self.projector, self.encode(views)).chunk(2)
        return {"z1": z1, "z2": z2}

    def loss_terms(self, x, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute NT-Xent ``loss`` and the diagnostics ``pos_acc``, ``align`` and ``uniform``.

        Parameters
        ----------
        x : torch.Tensor or dict of str to torch.Tensor
            The batch (unused: the views are in ``out``).
        out : dict of str to torch.Tensor
            :meth:`forward` of the batch.

        Returns
        -------
        dict of str to torch.Tensor
            ``loss``, ``pos_acc``, ``align``, ``uniform`` (scalars; module docstring).
        """
        loss, acc = nt_xent(out["z1"], out["z2"], self.temperature)
        with torch.no_grad(), torch.autocast(out["z1"].device.type, enabled=False):
            z1 = F.normalize(out["z1"].float(), dim=1)
            z2 = F.normalize(out["z2"].float(), dim=1)
            align = (z1 - z2).pow(2).sum(1).mean()
            n = z1.shape[0]
            if n > 1:
                i, j = torch.triu_indices(n, n, offset=1, device=z1.device)
                sq = (2.0 - 2.0 * (z1 @ z1.T)[i, j]).clamp_min(0.0)
                uniform = torch.logsumexp(-2.0 * sq, 0) - math.log(sq.numel())
            else:
                uniform = torch.zeros((), device=z1.device)
        return {"loss": loss, "pos_acc": acc, "align": align, "uniform": uniform}

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """Return one augmented view of x (seeded), in x's normalised space: there is no decoder.

        Of the first cell of each pair when batches are pairs of cells.
        """
        x = x["source"] if isinstance(x, dict) else x
        return self.views(x, self._view_generator(x.device))

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``conv<i>`` (N, C_i, H_i, W_i) for every stage and ``embed`` (N, embed_dim).

        No augmentation.
        """
        return self._layers(x)
