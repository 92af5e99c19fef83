"""The one interface every deblurring backbone D sits behind.

A backbone is any ``nn.Module`` mapping a (B, 3, H, W) image in [0, 1] to the deblurred image, or to
a list/tuple of outputs whose last element is the final full-resolution image (multi-stage and
multi-scale networks). :class:`DeblurNet` pads the input to the multiple the backbone needs, crops
the outputs back and exposes ``forward`` (final image) and ``forward_stages`` (all outputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeblurNet"]


class DeblurNet(nn.Module):
    """Wrap a backbone so that any input size works.

    Args:
        net: the backbone (``self.net``; state-dict keys are ``net.<...>``).
        pad_multiple: H and W are padded up to multiples of this before ``net`` runs.
        pad_mode: ``reflect`` (falls back to ``replicate`` when the image is smaller than the padding).
    """

    def __init__(self, net: nn.Module, pad_multiple: int = 1, pad_mode: str = "reflect") -> None:
        super().__init__()
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        self.net = net
        self.pad_multiple = int(pad_multiple)
        self.pad_mode = pad_mode

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.pad_multiple, (-w) % self.pad_multiple
        if not (ph or pw):
            return x
        mode = self.pad_mode if (self.pad_mode != "reflect" or (ph < h and pw < w)) else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All outputs of the backbone, final last. Full-resolution outputs are cropped to (H, W); an
        output of padded-scale size (h', w') is cropped to (ceil(H h'/Hp), ceil(W w'/Wp))."""
        h, w = x.shape[-2:]
        padded = self._pad(x)
        hp, wp = padded.shape[-2:]
        out = self.net(padded)
        outputs = list(out) if isinstance(out, (list, tuple)) else [out]
        cropped = []
        for o in outputs:
            oh, ow = o.shape[-2:]
            cropped.append(o[..., : math.ceil(h * oh / hp), : math.ceil(w * ow / wp)])
        return cropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The final deblurred image, (B, 3, H, W)."""
        return self.forward_stages(x)[-1]
