"""Building blocks shared by the conv model families."""

from __future__ import annotations

from torch import nn


def stage_channels(width: int, depth: int, cap: int = 16) -> list[int]:
    """Channels of each stride-2 stage: width, 2*width, 4*width, ... capped at cap*width."""
    return [width * min(2**i, cap) for i in range(depth)]


class DownBlock(nn.Module):
    """4x4 stride-2 convolution + batch norm + LeakyReLU(0.2): halves H and W."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class UpBlock(nn.Module):
    """4x4 stride-2 transposed convolution + batch norm + LeakyReLU(0.2): doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))
