"""MIMO-UNet and MIMO-UNet+ (Cho et al., "Rethinking Coarse-to-Fine Approach in Single Image Deblurring", ICCV 2021).

NeurMAP's third backbone is MIMO-UNet+ (the authors' code builds ``MIMOUNetPlus()``, weights
under ``['model']``). One U-Net with three scales both ways (multi-input, multi-output):

* the encoder runs at 1, 1/2 and 1/4 resolution (``base_channel`` x 1, 2, 4 channels, ``num_res``
  residual blocks per scale); at 1/2 and 1/4 the nearest-downsampled input image enters through a
  shallow convolution module (SCM) and is fused with the strided-conv features by a feature
  attention module (FAM: ``a + conv(a * b)``);
* asymmetric feature fusion (AFF) mixes all three encoder scales (resized to 1 and 1/2) into the
  skip connections of the two finer decoder scales;
* the decoder emits a residual image at every scale, added to the input downsampled to that scale.

MIMO-UNet is ``num_res=8`` (6.81 M parameters), MIMO-UNet+ is ``num_res=20`` with channel dropout
0.1 on the two fused skips (16.11 M); the published "++" model is MIMO-UNet+ at test time only.
Attribute and parameter names follow the authors' ``models/MIMOUNet.py`` (``Encoder.0.layers.0.
main.0.main.0.weight``, ``feat_extract.3.main.0.weight``, ``SCM1.main.0.main.0.weight``, ...), so
their checkpoints load strictly (dropout has no state, so both variants share the key layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AFF", "FAM", "SCM", "ConvAct", "MIMOUNet", "ResBlock", "ResStack"]


class ConvAct(nn.Module):
    """Conv (or stride-2 transposed conv, kernel 4) with bias, optionally followed by ReLU, as ``self.main``.

    Padding keeps the size for odd kernels; the transposed conv exactly doubles it.
    """

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int = 1, relu: bool = True, transpose: bool = False
    ) -> None:
        super().__init__()
        if transpose:
            conv: nn.Module = nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding=kernel_size // 2 - 1)
        else:
            conv = nn.Conv2d(cin, cout, kernel_size, stride, padding=kernel_size // 2)
        self.main = nn.Sequential(conv, nn.ReLU(inplace=True)) if relu else nn.Sequential(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ResBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(ConvAct(channels, channels, 3), ConvAct(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class ResStack(nn.Module):
    """``num_res`` residual blocks in sequence (the authors' EBlock / DBlock)."""

    def __init__(self, channels: int, num_res: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(ResBlock(channels) for _ in range(num_res)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SCM(nn.Module):
    """Shallow convolution module: (B, 3, h, w) image -> (B, channels, h, w) features.

    Four convs (3x3, 1x1, 3x3, 1x1; widths c/4, c/2, c/2, c - 3) whose output is concatenated to the
    image itself, then a 1x1 conv without activation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, h = channels // 4, channels // 2
        self.main = nn.Sequential(ConvAct(3, q, 3), ConvAct(q, h, 1), ConvAct(h, h, 3), ConvAct(h, channels - 3, 1))
        self.conv = ConvAct(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, self.main(x)], dim=1))


class FAM(nn.Module):
    """Feature attention module: ``a + conv3x3(a * b)`` for equally shaped (B, C, h, w) ``a`` and ``b``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = ConvAct(channels, channels, 3, relu=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + self.merge(a * b)


class AFF(nn.Module):
    """Asymmetric feature fusion: concatenate three same-size maps, 1x1 conv + ReLU, 3x3 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(ConvAct(cin, cout, 1), ConvAct(cout, cout, 3, relu=False))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2, x4], dim=1))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Nearest resize by ``factor`` (0.5 keeps every other pixel), as the authors' ``F.interpolate``."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


class MIMOUNet(nn.Module):
    """MIMO-UNet (``num_res=8``, 6.81 M parameters) or MIMO-UNet+ (``num_res=20, dropout=0.1``, 16.11 M).

    Args:
        num_res: residual blocks per encoder and per decoder scale (>= 1).
        base_channel: width at full resolution; 1/2 and 1/4 scales use 2x and 4x (>= 4, a multiple of 4
            so the SCM's c/4 and c/2 widths are whole).
        dropout: ``Dropout2d`` probability on the two AFF outputs during training (0 for MIMO-UNet, 0.1 for
            MIMO-UNet+); no parameters, so it does not change the state-dict layout.

    Input (B, 3, H, W) in [0, 1] with H and W multiples of 4 (:class:`~neurmap.nets.backbones.DeblurNet`
    pads). Returns ``[out_4, out_2, out]``: (B, 3, H/4, W/4), (B, 3, H/2, W/2) and the final (B, 3, H, W),
    each a residual on the nearest-downsampled input, nominally in [0, 1], not clamped.
    """

    multiple = 4

    def __init__(self, num_res: int = 8, base_channel: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if int(num_res) < 1:
            raise ValueError(f"MIMOUNet needs num_res >= 1, got {num_res!r}")
        if int(base_channel) < 4 or int(base_channel) % 4:
            raise ValueError(f"MIMOUNet needs base_channel a positive multiple of 4, got {base_channel!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MIMOUNet needs 0 <= dropout < 1, got {dropout!r}")
        n, c = int(num_res), int(base_channel)
        self.Encoder = nn.ModuleList([ResStack(c, n), ResStack(2 * c, n), ResStack(4 * c, n)])
        self.feat_extract = nn.ModuleList(
            [
                ConvAct(3, c, 3),
                ConvAct(c, 2 * c, 3, stride=2),
                ConvAct(2 * c, 4 * c, 3, stride=2),
                ConvAct(4 * c, 2 * c, 4, stride=2, transpose=True),
                ConvAct(2 * c, c, 4, stride=2, transpose=True),
                ConvAct(c, 3, 3, relu=False),
            ]
        )
        self.Decoder = nn.ModuleList([ResStack(4 * c, n), ResStack(2 * c, n), ResStack(c, n)])
        self.Convs = nn.ModuleList([ConvAct(4 * c, 2 * c, 1), ConvAct(2 * c, c, 1)])
        self.ConvsOut = nn.ModuleList([ConvAct(4 * c, 3, 3, relu=False), ConvAct(2 * c, 3, 3, relu=False)])
        self.AFFs = nn.ModuleList([AFF(7 * c, c), AFF(7 * c, 2 * c)])
        self.FAM1, self.SCM1 = FAM(4 * c), SCM(4 * c)  # 1/4 scale
        self.FAM2, self.SCM2 = FAM(2 * c), SCM(2 * c)  # 1/2 scale
        self.drop1 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.drop2 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Deblur (B, 3, H, W) images in [0, 1]; returns the 1/4, 1/2 and full-resolution outputs."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(
                f"MIMOUNet needs (B, 3, H, W) with H and W divisible by {self.multiple}, got {tuple(x.shape)}"
            )
        x_2 = _resize(x, 0.5)
        x_4 = _resize(x_2, 0.5)

        res1 = self.Encoder[0](self.feat_extract[0](x))
        res2 = self.Encoder[1](self.FAM2(self.feat_extract[1](res1), self.SCM2(x_2)))
        z = self.Encoder[2](self.FAM1(self.feat_extract[2](res2), self.SCM1(x_4)))

        z42 = _resize(z, 2.0)
        skip2 = self.drop2(self.AFFs[1](_resize(res1, 0.5), res2, z42))
        skip1 = self.drop1(self.AFFs[0](res1, _resize(res2, 2.0), _resize(z42, 2.0)))

        z = self.Decoder[0](z)
        out_4 = self.ConvsOut[0](z) + x_4
        z = self.Decoder[1](self.Convs[0](torch.cat([self.feat_extract[3](z), skip2], dim=1)))
        out_2 = self.ConvsOut[1](z) + x_2
        z = self.Decoder[2](self.Convs[1](torch.cat([self.feat_extract[4](z), skip1], dim=1)))
        return [out_4, out_2, self.feat_extract[5](z) + x]
