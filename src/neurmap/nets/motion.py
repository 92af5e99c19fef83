"""Motion estimation network M: a per-pixel linear-trajectory map at input resolution.

A re-implementation of the authors' ``OffsetNet`` (from Motion-ETR; notes §1.2): space-to-depth,
three 5x5 residual stages (full/2, /4, /8 resolution), a U-Net style decoder with 1x1/3x3
bottlenecks and transposed convolutions, and a linear 5x5 head. No normalisation anywhere, so a
batch of several image kinds (blurry, sharp, deblurred) can go through one forward pass.

Output: (B, 2, H, W), channel 0 the vertical and channel 1 the horizontal motion component, in
normalised units (the reblur module multiplies by alpha). Canonicalisation is left to the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MotionNet", "space_to_depth"]


def space_to_depth(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, block*block*C, H/block, W/block), channels ordered (dy, dx, C) as the authors'."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // block, block, w // block, block)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, block * block * c, h // block, w // block)


class _ResBlock(nn.Module):
    """Two replication-padded 5x5 convolutions with a ReLU between them, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReplicationPad2d(2),
            nn.Conv2d(channels, channels, 5),
            nn.ReLU(inplace=True),
            nn.ReplicationPad2d(2),
            nn.Conv2d(channels, channels, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int = 3) -> nn.Sequential:
    """Reflection-padded 5x5 conv (stride 1 or 2), ReLU, then ``blocks`` residual blocks."""
    pad = nn.ReflectionPad2d(2) if stride == 1 else nn.ReflectionPad2d((1, 2, 1, 2))
    layers = [pad, nn.Conv2d(in_channels, out_channels, 5, stride=stride), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *(_ResBlock(out_channels) for _ in range(blocks)))


def _bottleneck(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 2 * channels, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(2 * channels, channels, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)
    )


class MotionNet(nn.Module):
    """M: estimates a per-pixel motion vector from one image.

    Args:
        in_channels: image channels (3).
        width: base width ``nf`` (16 in the paper's code); stages use width, 2x and 4x.
        out_channels: 2 for linear trajectories.

    Input (B, in_channels, H, W) in [0, 1], any size: it is replicate-padded to a multiple of
    ``multiple`` (8) and the output cropped back to (B, out_channels, H, W).
    """

    multiple = 8

    def __init__(self, in_channels: int = 3, width: int = 16, out_channels: int = 2) -> None:
        super().__init__()
        self.enc1 = _stage(4 * in_channels, width, stride=1)  # H/2
        self.enc2 = _stage(width, 2 * width, stride=2)  # H/4
        self.enc3 = _stage(2 * width, 4 * width, stride=2)  # H/8
        self.bottleneck1 = _bottleneck(4 * width)
        self.up1 = _up(4 * width, 2 * width)  # H/4, concat enc2 -> 4w
        self.bottleneck2 = _bottleneck(4 * width)
        self.up2 = _up(4 * width, width)  # H/2, concat enc1 -> 2w
        self.bottleneck3 = _bottleneck(2 * width)
        self.up3 = _up(2 * width, 2 * width)  # H
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * width, out_channels, 5, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"MotionNet expects (B, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(space_to_depth(x))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d = torch.cat([self.up1(self.bottleneck1(e3)), e2], dim=1)
        d = torch.cat([self.up2(self.bottleneck2(d)), e1], dim=1)
        d = self.up3(self.bottleneck3(d))
        return self.head(d)[..., :h, :w]
