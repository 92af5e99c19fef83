"""A small, fast U-Net for CPU runs, smoke tests and the built-in data.

Encoder: per level ``blocks_per_level`` 3x3 conv + LeakyReLU pairs, stride-2 convs between levels;
decoder: transposed convs, skip concatenations; global residual ``x + body(x)`` with a zero-initialised
last layer, so an untrained network is the identity. No normalisation
and no buffers, so it is DDP- and batch-size-agnostic. H and W must divide by 2**(depth-1)
(:class:`~neurmap.nets.backbones.DeblurNet` pads).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet"]


def _block(in_channels: int, out_channels: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Residual U-Net: (B, in_channels, H, W) -> (B, out_channels, H, W).

    Args:
        in_channels, out_channels: image channels (the global residual needs them equal).
        width: channels at full resolution, doubled per level.
        depth: resolution levels (depth-1 downsamplings).
        blocks_per_level: conv layers per level on each side.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, width: int = 16, depth: int = 3, blocks_per_level: int = 1
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or blocks_per_level < 1:
            raise ValueError(
                f"depth, width and blocks_per_level must be >= 1, got {depth}, {width}, {blocks_per_level}"
            )
        if in_channels != out_channels:
            raise ValueError(
                f"the global residual needs in_channels == out_channels, got {in_channels}, {out_channels}"
            )
        widths = [width * 2**i for i in range(depth)]
        self.stem = _block(in_channels, widths[0], blocks_per_level)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                nn.LeakyReLU(0.2, True),
                _block(widths[i + 1], widths[i + 1], blocks_per_level),
            )
            for i in range(depth - 1)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1))
        self.fuse = nn.ModuleList(_block(2 * widths[i], widths[i], blocks_per_level) for i in range(depth - 1))
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # start as the identity: deblurring begins at the input's quality
        nn.init.zeros_(self.head.bias)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"UNet needs H and W divisible by {self.multiple}, got {tuple(x.shape[-2:])}")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.up))):
            y = self.fuse[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return x + self.head(y)
