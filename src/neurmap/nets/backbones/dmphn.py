"""DMPHN: Deep Multi-Patch Hierarchical Network (Zhang et al., CVPR 2019), levels 1-2-4 and 1-2-4-8.

The NeurMAP authors fine-tune DMPHN(1-2-4-8); the paper's 21.7 MB "DMPHN" row is DMPHN(1-2-4)
(notes §1.1). Each level has its own encoder (3 -> 32 -> 64 -> 128 channels, two stride-2 convs,
residual blocks) and decoder (mirror image with transposed convs). Level 1 sees the whole image;
each finer level splits every patch of the previous one in two, alternately along height and
width (level 2: top/bottom halves, level 3: quarters, level 4: eighths). Processing runs
coarsest-first: sibling patches' features are concatenated back, decoded into a residual that is
added to the next level's input patch, and added to that level's features.

Parameter names match the authors' per-level files (``encoder_lv{i}.pkl``: ``layer1``,
``layer2.0``, ...), so the released GoPro weights load strictly through :meth:`DMPHN.load_released`.
Those weights expect inputs in [-0.5, 0.5]: ``input_shift`` (a persistent buffer, so our own
checkpoints remember it) subtracts it from the input and adds it back to the output. NeurMAP's own
copy of DMPHN works on [0, 1] directly (shift 0).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from neurmap.nets.backbones.weights import load_state_dict_strict

log = logging.getLogger(__name__)

__all__ = ["DMPHN", "DMPHNDecoder", "DMPHNEncoder"]


def _res(channels: int) -> nn.Sequential:
    """Residual branch conv-ReLU-conv (the identity is added by the caller)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1)
    )


class DMPHNEncoder(nn.Module):
    """(B, 3, h, w) -> (B, 128, h/4, w/4). Attribute names follow the authors' ``Encoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Conv2d(3, 32, 3, padding=1)
        self.layer2, self.layer3 = _res(32), _res(32)
        self.layer5 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.layer6, self.layer7 = _res(64), _res(64)
        self.layer9 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.layer10, self.layer11 = _res(128), _res(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        x = x + self.layer2(x)
        x = x + self.layer3(x)
        x = self.layer5(x)
        x = x + self.layer6(x)
        x = x + self.layer7(x)
        x = self.layer9(x)
        x = x + self.layer10(x)
        return x + self.layer11(x)


class DMPHNDecoder(nn.Module):
    """(B, 128, h/4, w/4) -> (B, 3, h, w). Attribute names follow the authors' ``Decoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer13, self.layer14 = _res(128), _res(128)
        self.layer16 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1)
        self.layer17, self.layer18 = _res(64), _res(64)
        self.layer20 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.layer21, self.layer22 = _res(32), _res(32)
        self.layer24 = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer13(x)
        x = x + self.layer14(x)
        x = self.layer16(x)
        x = x + self.layer17(x)
        x = x + self.layer18(x)
        x = self.layer20(x)
        x = x + self.layer21(x)
        x = x + self.layer22(x)
        return self.layer24(x)


class DMPHN(nn.Module):
    """DMPHN with ``levels`` levels: 3 = DMPHN(1-2-4), 4 = DMPHN(1-2-4-8).

    Args:
        levels: number of hierarchy levels (>= 1).
        input_shift: subtracted from the input and added to the output (0.5 for the released weights).

    Input (B, 3, H, W) in [0, 1]; H must divide by 4 * 2**ceil((levels-1)/2) and W by
    4 * 2**floor((levels-1)/2) (16 and 8 for levels 4); :class:`DeblurNet` pads.
    """

    def __init__(self, levels: int = 4, input_shift: float = 0.0) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"DMPHN needs levels >= 1, got {levels}")
        self.levels = int(levels)
        self.encoders = nn.ModuleList(DMPHNEncoder() for _ in range(levels))  # index 0 = level 1
        self.decoders = nn.ModuleList(DMPHNDecoder() for _ in range(levels))
        self.register_buffer("input_shift", torch.tensor(float(input_shift)))

    @property
    def multiple(self) -> tuple[int, int]:
        """(H, W) multiples the input must have."""
        splits_h = sum(1 for level in range(2, self.levels + 1) if level % 2 == 0)
        splits_w = self.levels - 1 - splits_h
        return 4 * 2**splits_h, 4 * 2**splits_w

    def _features(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of patch ``x`` at ``level`` (1-based), with all coarser levels folded in."""
        if level == self.levels:
            return self.encoders[level - 1](x)
        dim = 2 if (level + 1) % 2 == 0 else 3  # level 2 splits height, level 3 width, level 4 height ...
        half = x.shape[dim] // 2
        first, second = x.narrow(dim, 0, half), x.narrow(dim, half, x.shape[dim] - half)
        merged = torch.cat([self._features(level + 1, first), self._features(level + 1, second)], dim=dim)
        residual = self.decoders[level](merged)
        return self.encoders[level - 1](x + residual) + merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mh, mw = self.multiple
        if x.shape[-2] % mh or x.shape[-1] % mw:
            raise ValueError(
                f"DMPHN({self.levels} levels) needs H % {mh} == 0 and W % {mw} == 0, got {tuple(x.shape[-2:])}"
            )
        shift = self.input_shift.to(x.dtype)
        return self.decoders[0](self._features(1, x - shift)) + shift

    def load_released(self, folder: str | Path) -> None:
        """Load the authors' per-level ``encoder_lv{i}.pkl`` / ``decoder_lv{i}.pkl`` state dicts and set
        ``input_shift`` to 0.5, the convention those weights were trained with."""
        folder = Path(folder)
        names = [f"{kind}_lv{i}.pkl" for i in range(1, self.levels + 1) for kind in ("encoder", "decoder")]
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise FileNotFoundError(
                f"{folder} is not a DMPHN({self.levels} levels) release folder: "
                f"missing {', '.join(absent)} (expected {', '.join(names)})"
            )
        for i in range(self.levels):
            for kind, modules in (("encoder", self.encoders), ("decoder", self.decoders)):
                path = folder / f"{kind}_lv{i + 1}.pkl"
                state = torch.load(path, map_location="cpu", weights_only=True)
                load_state_dict_strict(modules[i], state, str(path))
        self.input_shift.fill_(0.5)
        log.info(
            "loaded DMPHN release weights from %s; input_shift set to 0.5 (they expect inputs in [-0.5, 0.5])", folder
        )
