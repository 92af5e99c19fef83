"""NAFNet: Nonlinear Activation Free Network (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022).

A stronger, newer deblurring backbone D for NeurMAP (the paper fine-tunes published GoPro-trained
backbones). NAFNet is a 4-level U-Net of NAF blocks: each block is
LayerNorm -> 1x1 conv -> 3x3 depth-wise conv -> SimpleGate (split channels in two, multiply) ->
simplified channel attention (global average pool, 1x1 conv, multiply) -> 1x1 conv, added back with a
learnable per-channel scale ``beta``; then LayerNorm -> 1x1 conv -> SimpleGate -> 1x1 conv, added back
with scale ``gamma``. ``beta`` and ``gamma`` start at zero, so every block starts as the identity.
Downsampling is a 2x2 stride-2 conv doubling the channels; upsampling a bias-free 1x1 conv doubling
them followed by PixelShuffle(2); encoder features are added (not concatenated) to the decoder's;
the output is ``ending(features) + input`` (a global residual).

The GoPro models are width 32 (17.11 M parameters) and width 64 (67.89 M), both with encoder blocks
(1, 1, 1, 28), one middle block and decoder blocks (1, 1, 1, 1) (``options/test/GoPro/NAFNet-width*.yml``
of ``megvii-research/NAFNet``). Attribute and parameter names equal the official ones
(``intro``, ``encoders.i.j``, ``downs.i``, ``middle_blks.j``, ``ups.i.0``, ``decoders.i.j``,
``ending``; blocks hold ``conv1..conv5``, ``sca.1``, ``norm1``/``norm2`` and ``beta``/``gamma``), so the
released checkpoints (state dict under ``params``) load strictly.

Differences from the official code, none affecting the weights or the function computed:
:class:`LayerNorm2d` uses plain differentiable tensor ops instead of a custom autograd Function (which
breaks tracing and ONNX export); the input is not zero-padded inside the network (``DeblurNet`` pads
to a multiple of ``2 ** len(enc_blk_nums)``; a wrong size raises); the test-time "TLC" local
statistics of ``NAFNetLocal`` are not implemented (the plain global pooling is used).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LayerNorm2d", "NAFBlock", "NAFNet", "SimpleGate"]


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of (B, C, H, W) maps, at every pixel separately.

    Equal to ``F.layer_norm`` over C on the (B, H, W, C) permutation (biased variance), written with
    mean/var ops so autograd, ``torch.jit.trace`` and ONNX export handle it.

    Args:
        channels: C.
        eps: added to the variance (the official 1e-6).

    Parameters ``weight`` (C,) = 1 and ``bias`` (C,) = 0 at init (official names and shapes).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"LayerNorm2d needs channels >= 1, got {channels!r}")
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(int(channels)))
        self.bias = nn.Parameter(torch.zeros(int(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize (B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class SimpleGate(nn.Module):
    """Split (B, 2C, H, W) into two halves along channels and return their product (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """One NAF block at ``channels`` channels, (B, C, H, W) -> (B, C, H, W); identity at init.

    Args:
        channels: C.
        dw_expand: channel factor of the depth-wise branch (C -> dw_expand * C, gated back to half).
        ffn_expand: channel factor of the feed-forward branch.
        dropout: dropout rate after each branch (0: none, the GoPro setting).
        eps: LayerNorm2d epsilon.
    """

    def __init__(
        self, channels: int, dw_expand: int = 2, ffn_expand: int = 2, dropout: float = 0.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        c, dw, ffn = channels, channels * dw_expand, channels * ffn_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c, eps)
        self.norm2 = LayerNorm2d(c, eps)
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.sg(self.conv2(self.conv1(self.norm1(x))))
        h = self.dropout1(self.conv3(h * self.sca(h)))
        y = x + h * self.beta
        h = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return y + h * self.gamma


class NAFNet(nn.Module):
    """NAFNet U-Net; official GoPro configurations: width 32 (17.11 M parameters) and 64 (67.89 M).

    Args:
        img_channel: image channels in and out.
        width: channels at full resolution (doubled at every downsampling).
        middle_blk_num: NAF blocks at the lowest resolution.
        enc_blk_nums: NAF blocks per encoder level (each level ends with a downsampling).
        dec_blk_nums: NAF blocks per decoder level (each level starts with an upsampling); as many
            levels as ``enc_blk_nums``.
        dw_expand: see :class:`NAFBlock`.
        ffn_expand: see :class:`NAFBlock`.
        dropout: see :class:`NAFBlock`.
        eps: see :class:`NAFBlock`.

    Input (B, img_channel, H, W) in [0, 1] with H and W multiples of :attr:`multiple`
    (= 2 ** len(enc_blk_nums); :class:`~neurmap.nets.backbones.DeblurNet` pads). Output the same shape,
    nominally in [0, 1], not clamped.
    """

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 32,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        dw_expand: int = 2,
        ffn_expand: int = 2,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        enc_blk_nums, dec_blk_nums = [int(n) for n in enc_blk_nums], [int(n) for n in dec_blk_nums]
        if int(width) < 1 or int(img_channel) < 1:
            raise ValueError(f"NAFNet needs width >= 1 and img_channel >= 1, got {width!r} and {img_channel!r}")
        if len(dec_blk_nums) != len(enc_blk_nums) or min(enc_blk_nums + dec_blk_nums + [int(middle_blk_num)]) < 0:
            raise ValueError(
                f"NAFNet needs non-negative block counts and len(dec_blk_nums) == len(enc_blk_nums), got "
                f"enc_blk_nums={enc_blk_nums}, middle_blk_num={middle_blk_num}, dec_blk_nums={dec_blk_nums}"
            )

        def blocks(channels: int, n: int) -> nn.Sequential:
            return nn.Sequential(*(NAFBlock(channels, dw_expand, ffn_expand, dropout, eps) for _ in range(n)))

        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        chan = int(width)
        for n in enc_blk_nums:
            self.encoders.append(blocks(chan, n))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))
            chan *= 2
        self.middle_blks = blocks(chan, int(middle_blk_num))
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(blocks(chan, n))
        self.multiple = 2 ** len(enc_blk_nums)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur (B, C, H, W) images in [0, 1]; returns (B, C, H, W)."""
        tracing = torch.jit.is_tracing()  # shapes are tensors then; the check would freeze into the trace
        if not tracing and (x.ndim != 4 or x.shape[-2] % self.multiple or x.shape[-1] % self.multiple):
            raise ValueError(
                f"NAFNet needs (B, C, H, W) with H and W multiples of {self.multiple}, got shape {tuple(x.shape)}"
            )
        h = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.middle_blks(h)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            h = decoder(up(h) + skip)
        return self.ending(h) + x
