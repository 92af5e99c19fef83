"""DMPHN: Deep Multi-Patch Hierarchical Network (Zhang et al., CVPR 2019), levels 1-2-4 and 1-2-4-8.

The NeurMAP authors fine-tune DMPHN(1-2-4-8) (``networks.DMPHN_deblur``); the paper's 21.7 MB
"DMPHN" row is DMPHN(1-2-4) (its size matches). Every level has its own encoder (3 -> 32 -> 64 -> 128
channels, two stride-2 convs, residual blocks) and decoder (the mirror image, transposed convs up).
Level 1 sees the whole image; each finer level splits every patch of the level above in two,
alternately along height and width (level 2: top/bottom halves, level 3: quarters, level 4: eighths
stacked in height). Processing runs finest-first: sibling patches' encoder features are
concatenated back; the decoded concatenation is a residual added to the coarser level's input
patch, and the concatenation itself is added to that level's encoder features. Level 1 finally
returns ``decoder_lv1(encoder_lv1(x + residual_lv2) + features_lv2)``, a direct image (no global skip).

Attribute and parameter names are those of the authors' modules (``encoder_lv1.layer1.weight``,
``decoder_lv3.layer13.0.bias``, ...), so NeurMAP's whole-module DMPHN state dicts load as plain
state dicts, and the DMPHN authors' per-level files ``encoder_lv{i}.pkl`` / ``decoder_lv{i}.pkl``
load strictly, one file per submodule, through :meth:`DMPHN.load_released`. Those released weights
expect inputs in [-0.5, 0.5]: ``input_shift`` (a persistent buffer, so our checkpoints remember it)
is subtracted from the input and added back to the output. NeurMAP's own DMPHN works on [0, 1]
directly (shift 0, the default).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from neurmap.nets.backbones.weights import load_state_dict_strict

log = logging.getLogger(__name__)

__all__ = ["DMPHN", "DMPHNDecoder", "DMPHNEncoder", "DMPHNStack"]

RELEASED_SHIFT = 0.5  # the DMPHN authors train and test on image - 0.5 (DMPHN_1_2_4_8_test.py)


def _res(channels: int) -> nn.Sequential:
    """Residual branch conv3x3-ReLU-conv3x3 at ``channels`` (the caller adds the identity)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1)
    )


class DMPHNEncoder(nn.Module):
    """One level's encoder, (B, 3, h, w) -> (B, 128, h/4, w/4); attribute names follow the authors'."""

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
    """One level's decoder, (B, 128, h/4, w/4) -> (B, 3, h, w); attribute names follow the authors'."""

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
    """DMPHN with ``levels`` levels: 3 = DMPHN(1-2-4) (5.42 M parameters), 4 = DMPHN(1-2-4-8) (7.23 M).

    Submodules are ``encoder_lv{i}`` and ``decoder_lv{i}`` for i = 1..levels (level 1 = whole image).

    Args:
        levels: number of hierarchy levels (>= 1). Level k >= 2 halves the patches of level k-1, along
            height for even k and width for odd k (the authors define levels up to 4).
        input_shift: subtracted from the input and added to the output; 0.5 for the DMPHN authors'
            released weights (set by :meth:`load_released`), 0 for NeurMAP's [0, 1] convention.

    Input (B, 3, H, W) in [0, 1], with H and W multiples of :attr:`multiple` ((16, 8) for 4 levels,
    (8, 8) for 3); :class:`~neurmap.nets.backbones.DeblurNet` pads. Output (B, 3, H, W), nominally in
    [0, 1], not clamped.
    """

    optional_state_keys = ("input_shift",)  # absent from the authors' checkpoints; the loader keeps ours

    def __init__(self, levels: int = 4, input_shift: float = 0.0) -> None:
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"DMPHN needs levels >= 1, got {levels!r}")
        self.levels = int(levels)
        for i in range(1, self.levels + 1):
            self.add_module(f"encoder_lv{i}", DMPHNEncoder())
        for i in range(1, self.levels + 1):
            self.add_module(f"decoder_lv{i}", DMPHNDecoder())
        self.register_buffer("input_shift", torch.tensor(float(input_shift)), persistent=True)

    @property
    def multiple(self) -> tuple[int, int]:
        """(H, W) multiples the input must have: 4 (two stride-2 convs) times 2 per split of that axis."""
        splits_h = self.levels // 2  # levels 2, 4, ... split height
        splits_w = (self.levels - 1) // 2  # levels 3, 5, ... split width
        return 4 * 2**splits_h, 4 * 2**splits_w

    def _features(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, 128, h/4, w/4) of patch ``x`` at ``level``, finer levels folded in."""
        encoder = getattr(self, f"encoder_lv{level}")
        if level == self.levels:
            return encoder(x)
        dim = 2 if (level + 1) % 2 == 0 else 3  # the split that creates level + 1
        half = x.shape[dim] // 2
        merged = torch.cat(
            [
                self._features(level + 1, x.narrow(dim, 0, half)),
                self._features(level + 1, x.narrow(dim, half, x.shape[dim] - half)),
            ],
            dim=dim,
        )
        residual = getattr(self, f"decoder_lv{level + 1}")(merged)
        return encoder(x + residual) + merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur (B, 3, H, W) images in [0, 1]; returns (B, 3, H, W)."""
        mh, mw = self.multiple
        if x.ndim != 4 or x.shape[-2] % mh or x.shape[-1] % mw:
            raise ValueError(
                f"DMPHN({self.levels} levels) needs (B, 3, H, W) with H % {mh} == 0 and W % {mw} == 0, "
                f"got shape {tuple(x.shape)}"
            )
        shift = self.input_shift.to(x.dtype)
        return self.decoder_lv1(self._features(1, x - shift)) + shift

    def load_released(self, folder: str | Path) -> None:
        """Load the DMPHN authors' per-level state dicts and set ``input_shift`` to 0.5.

        Args:
            folder: directory holding ``encoder_lv{i}.pkl`` and ``decoder_lv{i}.pkl`` for i = 1..levels
                (and no deeper level: DMPHN(1-2-4) and DMPHN(1-2-4-8) are trained separately).

        Raises:
            FileNotFoundError: a file is missing (all expected names are listed).
            ValueError: the folder holds more levels than this model, or a file does not fit.
        """
        folder = Path(folder)
        names = [f"{kind}_lv{i}.pkl" for kind in ("encoder", "decoder") for i in range(1, self.levels + 1)]
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise FileNotFoundError(
                f"'{folder}' is not a DMPHN({self.levels} levels) release folder: missing {', '.join(absent)} "
                f"(expected {', '.join(names)})"
            )
        found = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"encoder_lv(\d+)\.pkl", p.name))]
        if max(found) > self.levels:
            raise ValueError(
                f"'{folder}' holds DMPHN weights for {max(found)} levels but the model has {self.levels} "
                f"(set model.deblur.net.levels={max(found)})"
            )
        for name in names:
            state = torch.load(folder / name, map_location="cpu", weights_only=True)
            load_state_dict_strict(getattr(self, name.removesuffix(".pkl")), state, str(folder / name))
        self.input_shift.fill_(RELEASED_SHIFT)
        log.info(
            "loaded DMPHN(%d levels) release weights from %s; input_shift set to %.1f (they expect image - %.1f)",
            self.levels,
            folder,
            RELEASED_SHIFT,
            RELEASED_SHIFT,
        )


class DMPHNStack(nn.Module):
    """Stack(k)-DMPHN (the DMPHN paper's SDNet-k; the NeurMAP paper's Table 1 row is Stack(4)).

    ``stacks`` DMPHN(1-2-4) modules in sequence: stage s deblurs the previous stage's output, and
    every feature map of stage s - 1 (level-3 halves, level-2 halves, level 1) is added to the
    matching one of stage s. As in the authors' ``SDNet4_test.py``, from stage 2 on the level-2
    residual also receives stage 1's output. Submodules are ``encoder_s{s}_lv{l}`` /
    ``decoder_s{s}_lv{l}``, the names of the released per-file weights (``encoder_s1_lv1.pkl``, ...),
    loaded by :meth:`load_released` (which sets ``input_shift`` to 0.5 as for DMPHN).

    Returns the list of every stage's output, final last (the authors sum the MSE over stages).
    Input H and W must divide by 8 (:class:`~neurmap.nets.backbones.DeblurNet` pads).
    """

    optional_state_keys = ("input_shift",)
    multiple = (8, 8)

    def __init__(self, stacks: int = 4, input_shift: float = 0.0) -> None:
        super().__init__()
        if int(stacks) < 1:
            raise ValueError(f"DMPHNStack needs stacks >= 1, got {stacks!r}")
        self.stacks = int(stacks)
        for s in range(1, self.stacks + 1):
            for level in (1, 2, 3):
                self.add_module(f"encoder_s{s}_lv{level}", DMPHNEncoder())
                self.add_module(f"decoder_s{s}_lv{level}", DMPHNDecoder())
        self.register_buffer("input_shift", torch.tensor(float(input_shift)), persistent=True)

    def _stage(
        self, s: int, image: torch.Tensor, prev: dict[str, torch.Tensor] | None, first: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        enc = {lv: getattr(self, f"encoder_s{s}_lv{lv}") for lv in (1, 2, 3)}
        dec = {lv: getattr(self, f"decoder_s{s}_lv{lv}") for lv in (1, 2, 3)}
        h, w = image.shape[-2] // 2, image.shape[-1] // 2
        top, bottom = image[..., :h, :], image[..., h:, :]
        f: dict[str, torch.Tensor] = {
            "lv3_top": torch.cat([enc[3](top[..., :w]), enc[3](top[..., w:])], dim=3),
            "lv3_bot": torch.cat([enc[3](bottom[..., :w]), enc[3](bottom[..., w:])], dim=3),
        }
        if prev is not None:
            f = {k: v + prev[k] for k, v in f.items()}
        f["lv2_1"] = enc[2](top + dec[3](f["lv3_top"])) + f["lv3_top"]
        f["lv2_2"] = enc[2](bottom + dec[3](f["lv3_bot"])) + f["lv3_bot"]
        if prev is not None:
            f["lv2_1"], f["lv2_2"] = f["lv2_1"] + prev["lv2_1"], f["lv2_2"] + prev["lv2_2"]
        lv2 = torch.cat([f["lv2_1"], f["lv2_2"]], dim=2)
        residual = dec[2](lv2) if first is None else dec[2](lv2) + first
        f["lv1"] = enc[1](image + residual) + lv2
        if prev is not None:
            f["lv1"] = f["lv1"] + prev["lv1"]
        return dec[1](f["lv1"]), f

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"DMPHNStack needs (B, 3, H, W) with H and W divisible by 8, got {tuple(x.shape)}")
        shift = self.input_shift.to(x.dtype)
        out, features = self._stage(1, x - shift, None, None)
        first, outputs = out, [out]
        for s in range(2, self.stacks + 1):
            out, features = self._stage(s, out, features, first)
            outputs.append(out)
        return [o + shift for o in outputs]

    def load_released(self, folder: str | Path) -> None:
        """Load the authors' ``encoder_s{s}_lv{l}.pkl`` / ``decoder_s{s}_lv{l}.pkl`` and set input_shift 0.5."""
        folder = Path(folder)
        names = [
            f"{kind}_s{s}_lv{lv}"
            for s in range(1, self.stacks + 1)
            for lv in (1, 2, 3)
            for kind in ("encoder", "decoder")
        ]
        absent = [f"{n}.pkl" for n in names if not (folder / f"{n}.pkl").is_file()]
        if absent:
            raise FileNotFoundError(
                f"'{folder}' is not a Stack({self.stacks})-DMPHN release folder: missing "
                f"{', '.join(absent[:8])}{', ...' if len(absent) > 8 else ''}"
            )
        for name in names:
            path = folder / f"{name}.pkl"
            load_state_dict_strict(
                getattr(self, name), torch.load(path, map_location="cpu", weights_only=True), str(path)
            )
        self.input_shift.fill_(RELEASED_SHIFT)
        log.info(
            "loaded Stack(%d)-DMPHN release weights from %s; input_shift set to %.1f",
            self.stacks,
            folder,
            RELEASED_SHIFT,
        )
