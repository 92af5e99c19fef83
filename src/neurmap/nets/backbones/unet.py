"""A small, fast residual U-Net: the CPU stand-in for D in smoke tests and on the built-in data.

NeurMAP's own backbones (DMPHN, MPRNet) take seconds per 256x256 training step on CPU;
this network takes about 30 ms for a batch of 8 64x64 crops at width 16 on 2 cores. Encoder: per
level ``blocks_per_level`` conv3x3 + LeakyReLU(0.2) layers, stride-2 convs between levels; decoder:
2x2 stride-2 transposed convs, skip concatenations, conv layers; output ``x + body(x)``. No
normalisation layers and no buffers, so it behaves identically under DDP and any batch size.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet"]


def _convs(in_channels: int, out_channels: int, n: int, slope: float) -> nn.Sequential:
    """``n`` conv3x3 + LeakyReLU layers, the first mapping in_channels -> out_channels."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(slope, inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Residual U-Net, (B, in_channels, H, W) -> (B, out_channels, H, W), images in [0, 1].

    H and W must be multiples of 2**(depth-1) (one halving per level below the first);
    :class:`~neurmap.nets.backbones.DeblurNet` pads, so set its ``pad_multiple`` to 2**(depth-1).

    Args:
        in_channels: input image channels.
        out_channels: output channels; must equal ``in_channels`` for the global residual.
        width: channels at full resolution, doubled at every level.
        depth: number of resolution levels.
        blocks_per_level: conv layers per level in the encoder and in the decoder.
        negative_slope: LeakyReLU slope.
        identity_init: zero the last conv so that the untrained network is the identity (training
            starts from the blurry input rather than from noise).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 16,
        depth: int = 3,
        blocks_per_level: int = 1,
        negative_slope: float = 0.2,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if min(depth, width, blocks_per_level) < 1:
            raise ValueError(
                f"UNet depth, width and blocks_per_level must be >= 1, got {depth}, {width}, {blocks_per_level}"
            )
        if in_channels != out_channels:
            raise ValueError(
                f"UNet's global residual needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        widths = [width * 2**i for i in range(depth)]
        self.stem = _convs(in_channels, widths[0], blocks_per_level, negative_slope)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                nn.LeakyReLU(negative_slope, inplace=True),
                _convs(widths[i + 1], widths[i + 1], blocks_per_level, negative_slope),
            )
            for i in range(depth - 1)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1))
        self.fuse = nn.ModuleList(
            _convs(2 * widths[i], widths[i], blocks_per_level, negative_slope) for i in range(depth - 1)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        if identity_init:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur (B, C, H, W) images; returns (B, C, H, W), not clamped."""
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"UNet needs H and W divisible by {self.multiple}, got {tuple(x.shape[-2:])}")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.up))):
            y = self.fuse[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return x + self.head(y)
