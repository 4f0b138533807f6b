"""Building blocks shared by the conv model families."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn


def stage_channels(width: int, depth: int, cap: int = 16) -> list[int]:
    """Return the channels of each stride-2 stage: width, 2*width, 4*width, ... capped at cap*width.

    Parameters
    ----------
    width : int
        Channels of the first stage.
    depth : int
        Number of stages.
    cap : int, default=16
        Largest multiple of ``width``.

    Returns
    -------
    list of int
        ``depth`` channel counts.

    Examples
    --------
    >>> stage_channels(32, 4)
    [32, 64, 128, 256]
    >>> stage_channels(8, 4, cap=2)
    [8, 16, 16, 16]
    """
    return [width * min(2**i, cap) for i in range(depth)]


class DownBlock(nn.Module):
    """4x4 stride-2 convolution + batch norm + LeakyReLU(0.2): halves H and W.

    With ``skip=True`` (SC-VAE) the input, average-pooled to the output size and projected by
    a 1x1 convolution, is added to the block's output.
    """

    def __init__(self, in_channels: int, out_channels: int, skip: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(in_channels, out_channels, 1)) if skip else None

    def forward(self, x):
        """Map (N, C_in, H, W) to (N, C_out, H / 2, W / 2)."""
        y = self.act(self.norm(self.conv(x)))
        return y + self.skip(x) if self.skip is not None else y


class UpBlock(nn.Module):
    """4x4 stride-2 transposed convolution + batch norm + LeakyReLU(0.2): doubles H and W.

    With ``skip=True`` the input, upsampled (nearest) and projected by a 1x1 convolution, is
    added to the block's output.
    """

    def __init__(self, in_channels: int, out_channels: int, skip: bool = False):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if skip else None

    def forward(self, x):
        """Map (N, C_in, H, W) to (N, C_out, 2 H, 2 W)."""
        y = self.act(self.norm(self.conv(x)))
        if self.skip is not None:
            y = y + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))
        return y


class ConvEncoder(nn.Module):
    """``depth`` DownBlocks, then a dense layer to ``out_features`` values.

    ``forward`` returns the dense output; ``stages`` the activation of every block.
    """

    def __init__(self, in_channels: int, input_size: int, width: int, depth: int, out_features: int, skip=False):
        super().__init__()
        if input_size % (2**depth):
            raise ValueError(f"input_size ({input_size}) must be divisible by 2**depth ({2**depth})")
        channels = stage_channels(width, depth)
        self.blocks = nn.ModuleList(
            DownBlock(c_in, c_out, skip) for c_in, c_out in zip([in_channels] + channels[:-1], channels)
        )
        self.bottleneck = (channels[-1], input_size // 2**depth, input_size // 2**depth)
        self.dense = nn.Linear(math.prod(self.bottleneck), out_features)

    def stages(self, x):
        """Return the activation of every block, (N, C_i, H_i, W_i) each, in order."""
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def forward(self, x):
        """Map images (N, C, H, W) to the dense output (N, out_features)."""
        return self.dense(self.stages(x)[-1].flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: a dense layer to the bottleneck, then ``depth - 1`` UpBlocks.

    A final transposed convolution maps to ``out_channels`` (no activation).
    """

    def __init__(self, out_channels: int, input_size: int, width: int, depth: int, in_features: int, skip=False):
        super().__init__()
        channels = stage_channels(width, depth)[::-1]
        self.bottleneck = (channels[0], input_size // 2**depth, input_size // 2**depth)
        self.dense = nn.Linear(in_features, math.prod(self.bottleneck))
        self.blocks = nn.Sequential(*(UpBlock(c_in, c_out, skip) for c_in, c_out in zip(channels[:-1], channels[1:])))
        self.head = nn.ConvTranspose2d(channels[-1], out_channels, 4, stride=2, padding=1)

    def forward(self, z):
        """Map codes (N, in_features) to images (N, out_channels, H, W)."""
        h = F.leaky_relu(self.dense(z), 0.2).view(-1, *self.bottleneck)
        return self.head(self.blocks(h))
