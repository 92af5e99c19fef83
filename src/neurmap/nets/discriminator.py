"""Natural-image discriminator N: a multiscale PatchGAN with instance norm, for a least-squares GAN.

pix2pixHD's multiscale discriminator as the authors configure it (paper §3/§4.1
and their ``define_D`` call). Per scale a 70x70 PatchGAN of 4x4 convolutions with padding 2 and bias:
C64 s2 (no norm) - C128 s2 - C256 s2 - C512 s1 (InstanceNorm, LeakyReLU 0.2) - C1 s1, with no
sigmoid, so the logits suit the LSGAN loss. Scale s sees the input average-pooled s times. The
authors also return every intermediate feature, but only the last map enters their loss, so only the
logits are returned here. No BatchNorm and the instance norms keep no running statistics, so nothing
needs syncing under DDP and train/eval modes behave the same.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MultiscaleDiscriminator", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake logit per overlapping image patch.

    Args:
        in_channels: image channels.
        width: channels of the first layer; doubled per following layer, capped at 8 * width.
        n_layers: stride-2 layers (3 gives pix2pix's 70x70 receptive field).

    Shapes:
        Input (B, in_channels, H, W) in [0, 1]; output (B, 1, h, w) unbounded logits. Each stride-2
        layer maps n -> n // 2 + 1 and each stride-1 layer n -> n + 1, so 256 -> 35 for n_layers = 3.

    Example:
        >>> PatchDiscriminator(width=8)(torch.rand(1, 3, 256, 256)).shape
        torch.Size([1, 1, 35, 35])
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator n_layers must be >= 1, got {n_layers}")
        if width < 1 or in_channels < 1:
            raise ValueError(f"PatchGAN width, in_channels must be >= 1, got {width}, {in_channels}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, stride=2, padding=2),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = width
        for i in range(1, n_layers + 1):  # n_layers - 1 stride-2 layers, then one stride-1 layer
            out = width * min(2**i, 8)
            layers += [
                nn.Conv2d(channels, out, 4, stride=2 if i < n_layers else 1, padding=2),
                nn.InstanceNorm2d(out, affine=False, track_running_stats=False),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=2))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, 1, h, w) logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.model(x)


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` independent PatchGANs on an average-pooling pyramid of the input.

    Args:
        in_channels: image channels.
        width: first-layer width of every scale's PatchGAN.
        n_layers: stride-2 layers of every scale's PatchGAN.
        num_scales: pyramid levels (2 in the authors' code).

    Shapes:
        Input (B, in_channels, H, W) in [0, 1]. Returns a list of ``num_scales`` (B, 1, h_s, w_s)
        logit maps, finest first; scale s sees the input downsampled s times by
        ``AvgPool2d(3, stride=2, padding=1, count_include_pad=False)``.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3, num_scales: int = 2) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"MultiscaleDiscriminator num_scales must be >= 1, got {num_scales}")
        scales = [PatchDiscriminator(in_channels, width, n_layers) for _ in range(num_scales)]
        self.scales = nn.ModuleList(scales)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in_channels, H, W) -> list of per-scale (B, 1, h_s, w_s) logits, finest first."""
        outputs = []
        for i, scale in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            outputs.append(scale(x))
        return outputs
