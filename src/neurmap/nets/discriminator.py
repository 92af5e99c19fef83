"""Natural-image discriminator N: a multiscale PatchGAN with instance norm, trained with LSGAN.

pix2pixHD's multiscale discriminator as the authors configure it (notes §1.3): per scale a 70x70
PatchGAN of 4x4 convolutions with padding 2 (C64-C128-C256-C512-C1, the first without norm, the
last without activation, so logits suit the least-squares loss), and the second scale sees the input
average-pooled by 2. No BatchNorm, so nothing needs syncing under DDP.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MultiscaleDiscriminator", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, C, H, W) -> (B, 1, h, w) logits, one per overlapping patch.

    Args:
        in_channels: image channels.
        width: channels of the first layer; doubled per stride-2 layer, capped at 8x.
        n_layers: stride-2 layers (3 gives the 70x70 receptive field).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True)]
        channels = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=2),
                nn.InstanceNorm2d(out, affine=False),
                nn.LeakyReLU(0.2, True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=2))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs; scale s sees the input average-pooled s times.

    Returns a list of per-scale logit maps, finest first.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3, num_scales: int = 2) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, width, n_layers) for _ in range(num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, scale in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            outputs.append(scale(x))
        return outputs
