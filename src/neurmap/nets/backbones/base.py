"""The one interface every deblurring backbone D sits behind (the paper's DMPHN, MPRNet, MIMO-UNet).

A backbone is any ``nn.Module`` mapping a (B, 3, H, W) image in [0, 1] either to the deblurred image
or to a list/tuple of outputs whose last element is the final full-resolution image (multi-stage
networks such as MPRNet, multi-scale ones such as MIMO-UNet). Backbones only accept sizes that are
multiples of their total downsampling; :class:`DeblurNet` pads the input up to ``pad_multiple``
(as the authors' ``test.py`` pads to 16), runs the backbone and crops every output back, so the rest
of neurmap can feed any image size and read one (B, 3, H, W) tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeblurNet"]

_PAD_MODES = ("reflect", "replicate", "constant", "circular")


class DeblurNet(nn.Module):
    """Wrap a backbone so that any input size works.

    Args:
        net: the backbone, stored as ``self.net`` (state-dict keys are ``net.<...>``).
        pad_multiple: H and W are padded at the bottom/right up to multiples of this before ``net`` runs.
        pad_mode: ``F.pad`` mode; ``reflect`` falls back to ``replicate`` when a side is too short for it.
    """

    def __init__(self, net: nn.Module, pad_multiple: int = 1, pad_mode: str = "reflect") -> None:
        super().__init__()
        if int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be an integer >= 1, got {pad_multiple!r}")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}")
        self.net = net
        self.pad_multiple = int(pad_multiple)
        self.pad_mode = pad_mode

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DeblurNet expects a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.pad_multiple, (-w) % self.pad_multiple
        if not (ph or pw):
            return x
        mode = self.pad_mode
        if mode == "reflect" and (ph >= h or pw >= w):  # reflect needs the padding shorter than the side
            mode = "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the backbone and return all of its outputs, final last.

        Args:
            x: (B, 3, H, W) blurry images in [0, 1].

        Returns:
            The backbone's outputs in its own order. A full-resolution output is cropped to (B, C, H, W).
            A lower-scale output of size (h', w'), computed on the padded (Hp, Wp) input, is cropped to
            (ceil(H h' / Hp), ceil(W w' / Wp)): the part that covers the unpadded image.
        """
        h, w = x.shape[-2:]
        padded = self._pad(x)
        hp, wp = padded.shape[-2:]
        out = self.net(padded)
        outputs = list(out) if isinstance(out, (list, tuple)) else [out]
        return [o[..., : math.ceil(h * o.shape[-2] / hp), : math.ceil(w * o.shape[-1] / wp)] for o in outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur ``x``.

        Args:
            x: (B, 3, H, W) blurry images in [0, 1], any H and W.

        Returns:
            (B, 3, H, W) deblurred images, nominally in [0, 1] (not clamped).
        """
        return self.forward_stages(x)[-1]
