"""MPRNet: Multi-Stage Progressive image Restoration (Zamir et al., CVPR 2021), deblurring variant.

NeurMAP's second backbone: the authors fine-tune
the MPRNet authors' GoPro model ``model_deblurring.pth`` (weights under ``['state_dict']``), with
[0, 1] images in and out. Three stages work on ever larger pieces of the image:

1. the four quarters each go through a shared shallow block and a 3-level channel-attention U-Net
   encoder; left/right features are concatenated, decoded per half, and a supervised attention module
   (SAM) turns each half's decoded features into an image (residual on the input half) and gated
   features for stage 2;
2. the two halves get new shallow features, fused with the SAM features (``concat12``), and a second
   U-Net whose encoder also receives stage 1's encoder/decoder features (cross-stage feature fusion);
   the halves' features are stacked in height, decoded, and a second SAM gives stage 2's image;
3. the whole image gets shallow features fused with stage 2's SAM features (``concat23``) and three
   full-resolution groups of channel-attention blocks (ORSNet) that also absorb stage 2's U-Net
   features, upsampled; ``tail`` maps them to a residual added to the input.

Attribute and parameter names are the MPRNet authors' (``shallow_feat1.0.weight``,
``stage1_encoder.encoder_level1.0.CA.conv_du.0.weight``, ``sam12.conv1.weight``, ...), so the official
checkpoint loads strictly. One PReLU instance is shared by every CAB, as in the original: it is a single
parameter (counted once, 20.13 M in all) but appears in the state dict under every CAB that uses it.
The official forward returns ``[final, stage2, stage1]``; ours returns them final LAST.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MPRNet"]


def _conv(cin: int, cout: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    """Stride-1 'same' convolution (odd ``kernel_size``)."""
    return nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention: x * sigmoid(1x1 conv up(act(1x1 conv down(mean over H, W))))."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"channel attention needs channels >= reduction, got {channels} and {reduction}")
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: x + CA(conv(act(conv(x)))), (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module) -> None:
        super().__init__()
        self.CA = CALayer(channels, reduction, bias)  # registered before body, as in the official key order
        self.body = nn.Sequential(
            _conv(channels, channels, kernel_size, bias), act, _conv(channels, channels, kernel_size, bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.CA(self.body(x))


def _cabs(n: int, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module) -> list[CAB]:
    return [CAB(channels, kernel_size, reduction, bias, act) for _ in range(n)]


class SAM(nn.Module):
    """Supervised attention module.

    ``forward(feat, image)`` with feat (B, C, h, w) and image (B, c, h, w) returns
    (features gated by sigmoid(conv3(restored)) plus feat, restored = conv2(feat) + image).
    """

    def __init__(self, channels: int, image_channels: int, kernel_size: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, kernel_size, bias)
        self.conv2 = _conv(channels, image_channels, kernel_size, bias)
        self.conv3 = _conv(image_channels, channels, kernel_size, bias)

    def forward(self, feat: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        restored = self.conv2(feat) + image
        return feat + self.conv1(feat) * torch.sigmoid(self.conv3(restored)), restored


class _Resample(nn.Module):
    """Bilinear resize by ``scale`` then a bias-free 1x1 conv (``up.1`` / ``down.1`` in the official keys)."""

    def __init__(self, attr: str, cin: int, cout: int, scale: float) -> None:
        super().__init__()
        self.attr = attr
        layers = nn.Sequential(nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module(attr, layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = getattr(self, self.attr)(x)
        return x if skip is None else x + skip


class Encoder(nn.Module):
    """3-level U-Net encoder, widths n, n+s, n+2s at scales 1, 1/2, 1/4.

    ``forward(x, enc=None, dec=None)``: x (B, n, h, w), h and w divisible by 4; with ``csff`` the
    previous stage's encoder and decoder features (lists of 3) are added per level through 1x1 convs.
    Returns [enc1, enc2, enc3].
    """

    def __init__(
        self, n_feat: int, s: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module, cabs: int, csff: bool
    ) -> None:
        super().__init__()
        widths = (n_feat, n_feat + s, n_feat + 2 * s)
        for i, c in enumerate(widths, start=1):
            self.add_module(f"encoder_level{i}", nn.Sequential(*_cabs(cabs, c, kernel_size, reduction, bias, act)))
        self.down12 = _Resample("down", widths[0], widths[1], 0.5)
        self.down23 = _Resample("down", widths[1], widths[2], 0.5)
        self.csff = csff
        if csff:
            for kind in ("enc", "dec"):
                for i, c in enumerate(widths, start=1):
                    self.add_module(f"csff_{kind}{i}", nn.Conv2d(c, c, 1, bias=bias))

    def forward(
        self, x: torch.Tensor, enc: list[torch.Tensor] | None = None, dec: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for i in (1, 2, 3):
            if i > 1:
                x = getattr(self, f"down{i - 1}{i}")(x)
            x = getattr(self, f"encoder_level{i}")(x)
            if self.csff and enc is not None and dec is not None:
                x = x + getattr(self, f"csff_enc{i}")(enc[i - 1]) + getattr(self, f"csff_dec{i}")(dec[i - 1])
            outs.append(x)
        return outs


class Decoder(nn.Module):
    """3-level U-Net decoder: [enc1, enc2, enc3] -> [dec1, dec2, dec3], skips through a CAB each."""

    def __init__(
        self, n_feat: int, s: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module, cabs: int
    ) -> None:
        super().__init__()
        widths = (n_feat, n_feat + s, n_feat + 2 * s)
        for i, c in enumerate(widths, start=1):
            self.add_module(f"decoder_level{i}", nn.Sequential(*_cabs(cabs, c, kernel_size, reduction, bias, act)))
        self.skip_attn1 = CAB(widths[0], kernel_size, reduction, bias, act)
        self.skip_attn2 = CAB(widths[1], kernel_size, reduction, bias, act)
        self.up21 = _Resample("up", widths[1], widths[0], 2.0)
        self.up32 = _Resample("up", widths[2], widths[1], 2.0)

    def forward(self, enc: list[torch.Tensor]) -> list[torch.Tensor]:
        dec3 = self.decoder_level3(enc[2])
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc[1])))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc[0])))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: x + conv(CAB^num_cab(x)) (the trailing conv has no bias, as in the original)."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module, num_cab: int):
        super().__init__()
        self.body = nn.Sequential(
            *_cabs(num_cab, channels, kernel_size, reduction, bias, act), _conv(channels, channels, kernel_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ORSNet(nn.Module):
    """Stage-3 subnetwork at full resolution, width n + o; after each ORB adds the stage-2 U-Net's level-i
    encoder and decoder features, upsampled to full size and mapped by 1x1 convs."""

    def __init__(
        self, n_feat: int, o: int, s: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module, num_cab: int
    ) -> None:
        super().__init__()
        width = n_feat + o
        for i in (1, 2, 3):
            self.add_module(f"orb{i}", ORB(width, kernel_size, reduction, bias, act, num_cab))
        for kind in ("enc", "dec"):
            self.add_module(f"up_{kind}1", _Resample("up", n_feat + s, n_feat, 2.0))
        for kind in ("enc", "dec"):
            two = (_Resample("up", n_feat + 2 * s, n_feat + s, 2.0), _Resample("up", n_feat + s, n_feat, 2.0))
            self.add_module(f"up_{kind}2", nn.Sequential(*two))
        for kind in ("enc", "dec"):
            for i in (1, 2, 3):
                self.add_module(f"conv_{kind}{i}", nn.Conv2d(n_feat, width, 1, bias=bias))

    def forward(self, x: torch.Tensor, enc: list[torch.Tensor], dec: list[torch.Tensor]) -> torch.Tensor:
        for i in (1, 2, 3):
            x = getattr(self, f"orb{i}")(x)
            e, d = enc[i - 1], dec[i - 1]
            if i > 1:
                e, d = getattr(self, f"up_enc{i - 1}")(e), getattr(self, f"up_dec{i - 1}")(d)
            x = x + getattr(self, f"conv_enc{i}")(e) + getattr(self, f"conv_dec{i}")(d)
        return x


class MPRNet(nn.Module):
    """MPRNet, deblurring configuration by default (20.13 M parameters).

    Args:
        in_c: image channels in (the official code hard-codes 3; kept as a knob, must equal ``out_c``).
        out_c: image channels out (every stage's image is a residual on the input, so ``in_c == out_c``).
        n_feat: base feature width.
        scale_unetfeats: width added per U-Net level (levels have n, n+s, n+2s channels).
        scale_orsnetfeats: width added in ORSNet (stage 3 works at n + o channels).
        num_cab: channel-attention blocks per ORB.
        kernel_size: kernel of every non-1x1 convolution.
        reduction: channel-attention squeeze ratio.
        bias: whether the convolutions have biases (False in the release; ORB's trailing conv never has one).
        sam_kernel_size: kernel of the SAM convolutions (1 in the release).
        unet_cabs: CABs per U-Net encoder/decoder level (2 in the release).

    Input (B, in_c, H, W) in [0, 1] with H and W divisible by 8 (the stage-1 quarters pass a U-Net that
    halves twice); :class:`~neurmap.nets.backbones.DeblurNet` pads. Returns
    ``[stage1, stage2, final]``, each (B, out_c, H, W), nominally in [0, 1], not clamped.
    """

    multiple = 8

    def __init__(
        self,
        in_c: int = 3,
        out_c: int = 3,
        n_feat: int = 96,
        scale_unetfeats: int = 48,
        scale_orsnetfeats: int = 32,
        num_cab: int = 8,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
        sam_kernel_size: int = 1,
        unet_cabs: int = 2,
    ) -> None:
        super().__init__()
        if in_c != out_c:
            raise ValueError(
                f"MPRNet adds its outputs to its input image, so in_c must equal out_c, got {in_c} and {out_c}"
            )
        for name, value in (("kernel_size", kernel_size), ("sam_kernel_size", sam_kernel_size)):
            if value < 1 or value % 2 == 0:
                raise ValueError(f"MPRNet {name} must be a positive odd integer, got {value!r}")
        n, s, o, k = n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size
        act = nn.PReLU()  # one instance shared by every CAB, as in the original
        for i in (1, 2, 3):
            self.add_module(f"shallow_feat{i}", nn.Sequential(_conv(in_c, n, k, bias), CAB(n, k, reduction, bias, act)))
        self.stage1_encoder = Encoder(n, s, k, reduction, bias, act, unet_cabs, csff=False)
        self.stage1_decoder = Decoder(n, s, k, reduction, bias, act, unet_cabs)
        self.stage2_encoder = Encoder(n, s, k, reduction, bias, act, unet_cabs, csff=True)
        self.stage2_decoder = Decoder(n, s, k, reduction, bias, act, unet_cabs)
        self.stage3_orsnet = ORSNet(n, o, s, k, reduction, bias, act, num_cab)
        self.sam12 = SAM(n, out_c, sam_kernel_size, bias)
        self.sam23 = SAM(n, out_c, sam_kernel_size, bias)
        self.concat12 = _conv(2 * n, n, k, bias)
        self.concat23 = _conv(2 * n, n + o, k, bias)
        self.tail = _conv(n + o, out_c, k, bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Deblur (B, in_c, H, W) images in [0, 1]; returns [stage1, stage2, final], each (B, out_c, H, W)."""
        if x.ndim != 4 or x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(
                f"MPRNet needs (B, C, H, W) with H and W divisible by {self.multiple}, got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        halves = [x[..., :h, :], x[..., h:, :]]  # top, bottom

        # stage 1: four quarters, encoded separately, decoded per half
        feats1, decs1, sam_feats, imgs1 = [], [], [], []
        for half in halves:
            left, right = (self.stage1_encoder(self.shallow_feat1(q)) for q in (half[..., :w], half[..., w:]))
            enc = [torch.cat(pair, dim=3) for pair in zip(left, right, strict=True)]
            dec = self.stage1_decoder(enc)
            feat, img = self.sam12(dec[0], half)
            feats1.append(enc)
            decs1.append(dec)
            sam_feats.append(feat)
            imgs1.append(img)
        stage1 = torch.cat(imgs1, dim=2)

        # stage 2: two halves, fused with stage 1, decoded as one image
        enc2 = [
            self.stage2_encoder(self.concat12(torch.cat([self.shallow_feat2(half), sf], dim=1)), enc, dec)
            for half, sf, enc, dec in zip(halves, sam_feats, feats1, decs1, strict=True)
        ]
        enc2 = [torch.cat(pair, dim=2) for pair in zip(*enc2, strict=True)]
        dec2 = self.stage2_decoder(enc2)
        feat, stage2 = self.sam23(dec2[0], x)

        # stage 3: full resolution
        feat3 = self.concat23(torch.cat([self.shallow_feat3(x), feat], dim=1))
        final = self.tail(self.stage3_orsnet(feat3, enc2, dec2)) + x
        return [stage1, stage2, final]
