"""Motion estimation network M: a per-pixel linear-trajectory map at input resolution.

A re-implementation of the authors' ``OffsetNet`` (taken over from Motion-ETR), layer for layer with ``nf = width``:

* space-to-depth by 2 (channels ordered (dy, dx, C)): (B, 4C, H/2, W/2);
* three encoder stages, each a reflection-padded 5x5 conv (stride 1, then 2, then 2) + ReLU followed by
  three residual blocks of two replication-padded 5x5 convs: widths nf, 2nf, 4nf at H/2, H/4, H/8;
* a decoder of 1x1 -> 3x3 bottlenecks (LeakyReLU 0.2, no skip) and 4x4 stride-2 transposed convs;
  the first two upsamplings are followed by LeakyReLU and concatenated with the matching encoder
  output, the last one (back to H) is not;
* a ReLU and a 5x5 conv to ``out_channels`` with a **linear** output (no tanh/sigmoid/scale).

No normalisation anywhere and every conv has a bias, so blurry, sharp and deblurred images can share
one forward pass and nothing needs syncing under DDP.

Output: (B, 2, H, W); channel 0 is the vertical (row, down positive) and channel 1 the horizontal
(column, right positive) motion, in normalised units: the reblur multiplies by alpha = 40 px of full
blur length. Sign canonicalisation (blur direction is ambiguous) is left to the caller:
:func:`reblur_motion` is the one definition of the motion R receives, in training, evaluation and deblurring.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neurmap.nets.reblur import canonicalize_motion

__all__ = ["MotionNet", "load_motion_pretrained", "reblur_motion", "reblur_motion_from_maps", "space_to_depth"]

_CKPT_PREFIX = "motion_net."  # M's keys in a neurmap checkpoint (NeurMAP or motion-pretraining runs)


def space_to_depth(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """Fold ``block`` x ``block`` pixel blocks into channels, in the authors' channel order.

    Args:
        x: (B, C, H, W), H and W divisible by ``block``.
        block: block size.

    Returns:
        (B, block*block*C, H/block, W/block); output channel ``(dy*block + dx)*C + c`` holds
        ``x[:, c, block*i + dy, block*j + dx]``.
    """
    b, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"space_to_depth needs H and W divisible by {block}, got {h}x{w}")
    x = x.view(b, c, h // block, block, w // block, block)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, block * block * c, h // block, w // block)


class _ResBlock(nn.Module):
    """x + conv5(relu(conv5(x))), each conv replication-padded by 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReplicationPad2d(2),
            nn.Conv2d(channels, channels, 5),
            nn.ReLU(inplace=True),
            nn.ReplicationPad2d(2),
            nn.Conv2d(channels, channels, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int = 3) -> nn.Sequential:
    """Reflection-padded 5x5 conv (stride 1: pad 2; stride 2: pad (1, 2, 1, 2)), ReLU, residual blocks."""
    pad = nn.ReflectionPad2d(2) if stride == 1 else nn.ReflectionPad2d((1, 2, 1, 2))
    layers = [pad, nn.Conv2d(in_channels, out_channels, 5, stride=stride), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *(_ResBlock(out_channels) for _ in range(blocks)))


def _bottleneck(channels: int) -> nn.Sequential:
    """1x1 conv to 2x channels, LeakyReLU, 3x3 conv back, LeakyReLU (no skip connection)."""
    return nn.Sequential(
        nn.Conv2d(channels, 2 * channels, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(2 * channels, channels, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up(in_channels: int, out_channels: int, activate: bool) -> nn.Sequential:
    """4x4 stride-2 transposed conv (x2 resolution), optionally followed by LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)]
    if activate:
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class MotionNet(nn.Module):
    """M: estimates a per-pixel linear blur-motion vector from one image.

    Args:
        in_channels: image channels.
        width: base width ``nf`` (16 in the authors' code); the stages use nf, 2nf and 4nf.
        out_channels: 2 for linear trajectories (4 would be the quadratic variant's end points).

    Shapes:
        Input (B, in_channels, H, W) in [0, 1], any H and W: the network needs multiples of
        ``MotionNet.multiple`` (8) of at least ``MotionNet.min_size`` (16), so the input is
        replicate-padded at the bottom/right and the output cropped back. Output
        (B, out_channels, H, W), unbounded (linear head); channel 0 is vertical (down positive),
        channel 1 horizontal (right positive), in units of alpha pixels.

    Example:
        >>> MotionNet(width=4)(torch.rand(1, 3, 37, 53)).shape
        torch.Size([1, 2, 37, 53])
    """

    multiple: int = 8  # space-to-depth (x2) then two stride-2 stages
    min_size: int = 16  # the reflection padding of the last stride-2 stage needs H/4 and W/4 >= 3

    def __init__(self, in_channels: int = 3, width: int = 16, out_channels: int = 2) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"MotionNet {name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.enc1 = _stage(4 * in_channels, width, stride=1)  # H/2
        self.enc2 = _stage(width, 2 * width, stride=2)  # H/4
        self.enc3 = _stage(2 * width, 4 * width, stride=2)  # H/8
        self.bottleneck1 = _bottleneck(4 * width)
        self.up1 = _up(4 * width, 2 * width, activate=True)  # H/4, concat enc2 -> 4w
        self.bottleneck2 = _bottleneck(4 * width)
        self.up2 = _up(4 * width, width, activate=True)  # H/2, concat enc1 -> 2w
        self.bottleneck3 = _bottleneck(2 * width)
        self.up3 = _up(2 * width, 2 * width, activate=False)  # H
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * width, out_channels, 5, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) image in [0, 1] -> (B, out_channels, H, W) motion map."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MotionNet expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (max(n + (-n) % self.multiple, self.min_size) - n for n in (h, w))
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(space_to_depth(x))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d = torch.cat([self.up1(self.bottleneck1(e3)), e2], dim=1)
        d = torch.cat([self.up2(self.bottleneck2(d)), e1], dim=1)
        d = self.up3(self.bottleneck3(d))
        return self.head(d)[..., :h, :w]


def reblur_motion_from_maps(
    motion_blurry: torch.Tensor, motion_deblurred: torch.Tensor | None, *, relative: bool, scale: float
) -> torch.Tensor:
    """The motion R receives, from M's canonical maps of the blurry and the deblurred images.

    ``scale * (M(B) - M(S_hat))`` with ``relative`` (the paper), else ``scale * M(B)`` (``motion_deblurred`` is
    then unused and may be None). Both maps must already be canonicalised
    (:func:`~neurmap.nets.reblur.canonicalize_motion`); :func:`reblur_motion` does that from M itself. Training's
    objectives take this as their ``relative`` callable.

    Args:
        motion_blurry: (B, 2, H, W) canonical M(B), in motion units.
        motion_deblurred: (B, 2, H, W) canonical M(S_hat), in motion units.
        relative: subtract M(S_hat) (``model.relative_motion``).
        scale: length calibration (``model.motion_scale``).

    Returns:
        (B, 2, H, W) motion in motion units: R's ``alpha`` turns them into pixels of full blur length.
    """
    motion = motion_blurry - motion_deblurred if relative else motion_blurry
    return motion * scale


def reblur_motion(
    motion_net: Callable[[torch.Tensor], torch.Tensor],
    blurry: torch.Tensor,
    deblurred: torch.Tensor,
    *,
    relative: bool,
    scale: float,
) -> torch.Tensor:
    """The motion R receives: ``scale * (canon(M(B)) - canon(M(S_hat)))``, or ``scale * canon(M(B))``.

    Each of M's maps is canonicalised (horizontal component >= 0, the authors' ``vec_norm``) before the
    difference, as in training; training, evaluation, deblurring and the diagnostics all call this (or, with
    M's maps at hand, :func:`reblur_motion_from_maps`).

    Args:
        motion_net: M, (B, 3, H, W) images -> (B, 2, H, W) raw motion (any callable, e.g. a tiled M).
        blurry: B, (B, 3, H, W) in [0, 1].
        deblurred: S_hat = D(B), same shape; not run through M when ``relative`` is false.
        relative: M(B) - M(S_hat) (``model.relative_motion``), else M(B).
        scale: length calibration (``model.motion_scale``); 1 = none.

    Returns:
        (B, 2, H, W) in motion units: R's ``alpha`` (``model.reblur.alpha``, px per unit) turns them into
        pixels of full blur length.

    Example:
        >>> m = lambda x: x[:, :2]  # a stand-in M whose motion is the image's first two channels
        >>> blurry = torch.tensor([0.5, -0.25, 0.0]).view(1, 3, 1, 1)  # canonical: (-0.5, 0.25)
        >>> deblurred = torch.tensor([0.25, 0.125, 0.0]).view(1, 3, 1, 1)
        >>> reblur_motion(m, blurry, deblurred, relative=True, scale=2.0).flatten().tolist()
        [-1.5, 0.25]
        >>> reblur_motion(m, blurry, deblurred, relative=False, scale=2.0).flatten().tolist()
        [-1.0, 0.5]
    """
    motion_blurry = canonicalize_motion(motion_net(blurry))
    motion_deblurred = canonicalize_motion(motion_net(deblurred)) if relative else None
    return reblur_motion_from_maps(motion_blurry, motion_deblurred, relative=relative, scale=scale)


def load_motion_pretrained(motion_net: nn.Module, path: str | os.PathLike) -> None:
    """Load M's weights, strictly, from a neurmap checkpoint (``variant=motion_pretrain`` or a NeurMAP run:
    the ``motion_net.*`` keys of its ``state_dict``) or from a file holding M's plain state dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not readable as weights, holds no motion network, or does not fit
            ``motion_net`` (missing / unexpected / mis-shaped keys are listed).
    """
    from neurmap.nets.backbones.weights import load_state_dict_strict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.motion_pretrained: no such file '{path}' (expected a motion-pretraining ckpt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model.motion_pretrained '{path}' cannot be read as weights: {first}") from err
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.motion_pretrained '{path}' holds a {type(obj).__name__}, expected a checkpoint")
    if any(str(k).startswith(_CKPT_PREFIX) for k in state):
        state = {k.removeprefix(_CKPT_PREFIX): v for k, v in state.items() if k.startswith(_CKPT_PREFIX)}
    elif "state_dict" in obj:
        raise ValueError(
            f"model.motion_pretrained '{path}' is a checkpoint without a motion network (no '{_CKPT_PREFIX}*' "
            "keys): pass a variant=motion_pretrain run's checkpoint"
        )
    load_state_dict_strict(motion_net, state, str(path))
