"""Inference building blocks: load a trained deblurrer from a checkpoint, and run a network tile by tile.

:func:`load_networks` rebuilds D (and M, for motion maps) from a neurmap checkpoint, which carries its
composed run config, so no backbone needs to be named. Release checkpoints of a backbone (DMPHN folders,
``model_deblurring.pth``, ...) load through ``backbone=<name>``. Files are read with
``torch.load(weights_only=True)``: no pickled code runs.

:func:`tiled` bounds memory on large photos: the image is cut into overlapping tiles whose origins are
multiples of the network's padding multiple, each tile runs alone, and the outputs are blended with
weights that are zero in the outer quarter of each interior overlap and ramp linearly to one across
its middle half. Where the network's receptive field is within a quarter of the overlap, the tiled
result equals the whole-image one; otherwise the ramp hides the seams.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from neurmap.config import instantiate_system
from neurmap.errors import UsageError, without_unsafe_advice
from neurmap.nets.backbones import DeblurNet, load_pretrained
from neurmap.nets.backbones.weights import load_state_dict_strict

__all__ = ["UsageError", "Networks", "load_networks", "tiled"]


@dataclass
class Networks:
    """What :func:`load_networks` returns.

    Attributes:
        deblur: D, a :class:`~neurmap.nets.backbones.DeblurNet` in eval mode.
        motion: M in eval mode, or None (release checkpoints and variants without M have none).
        alpha: pixels per motion unit (``model.reblur.alpha``), to show M's output in pixels.
        backbone: the backbone's name.
        pad_multiple: D's padding multiple (tile origins are aligned to it).
        relative_motion: the motion R used in training was M(B) - M(S_hat) (else M(B)), ``model.relative_motion``;
            None for release weights (no M).
        motion_scale: R received ``motion_scale`` times that motion (``model.motion_scale``); None for release
            weights. :func:`~neurmap.nets.motion.reblur_motion` computes that motion from these two.
        config: the run's composed config (neurmap checkpoints), None for release weights.
        state: the checkpoint's state dict (neurmap checkpoints), None for release weights.
    """

    deblur: nn.Module
    motion: nn.Module | None
    alpha: float
    backbone: str
    pad_multiple: int
    relative_motion: bool | None
    motion_scale: float | None
    config: Any = None
    state: Mapping[str, torch.Tensor] | None = None

    def system(self) -> Any:
        """The whole training system of a neurmap checkpoint (D, M, N, R with the run's settings), in eval mode,
        for diagnostics that need the training objective (:meth:`~neurmap.systems.neurmap.NeurMAPSystem.signal`)."""
        if self.config is None or self.state is None:
            raise UsageError("release weights hold D only; the training system needs a neurmap checkpoint")
        config = copy.deepcopy(self.config)
        config.model.motion_pretrained = None  # the checkpoint holds M's and D's weights
        if config.model.get("deblur") is not None:
            config.model.deblur.pretrained = None
        system = instantiate_system(config)
        system.load_state_dict(self.state)
        return system.eval()


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the same user error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"{path}: not a checkpoint torch can load safely: {without_unsafe_advice(str(err))}"
            if "Weights only load failed" in str(err)
            else f"{path}: not a checkpoint torch can load safely (weights_only=True): {first}"
        ) from err


def _prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_networks(ckpt: str | os.PathLike, backbone: DictConfig | None = None, motion: bool = True) -> Networks:
    """D (and M) from a neurmap checkpoint, or D from a backbone's release checkpoint.

    Args:
        ckpt: a neurmap ``.ckpt`` (from ``python -m neurmap.train``), or, with ``backbone``, any file or
            folder :func:`~neurmap.nets.backbones.load_pretrained` accepts.
        backbone: a ``conf/backbone`` node (``model.deblur`` of a config composed with ``backbone=<name>``). With
            a neurmap checkpoint it must name the checkpoint's own backbone (a mismatch is an error); with
            anything else it says which network to build.
        motion: also load M when the checkpoint has one.

    Raises:
        FileNotFoundError: ``ckpt`` does not exist.
        UsageError: the file is not loadable, not a neurmap checkpoint and no backbone was given,
            or it was trained with another backbone.
    """
    path = Path(ckpt).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = None if path.is_dir() else _read(path)
    config = obj.get("hyper_parameters", {}).get("config") if isinstance(obj, Mapping) else None
    if config is None:
        if backbone is None:
            raise UsageError(
                f"{path} is not a neurmap checkpoint (no hyper_parameters.config); to load a backbone's "
                "release weights, also pass backbone=<name> (e.g. backbone=dmphn_1_2_4)"
            )
        net = DeblurNet(instantiate(backbone.net), backbone.pad_multiple)
        load_pretrained(net, path, backbone.get("pretrained_key"))
        name, pad = str(backbone.name), int(backbone.pad_multiple)
        return Networks(net.eval(), None, float("nan"), name, pad, relative_motion=None, motion_scale=None)
    config = OmegaConf.create(config)
    node = config.model.get("deblur")
    if node is None:
        raise UsageError(f"{path} holds no deblurring network (a variant=motion_pretrain run trains M alone)")
    trained = str(node.name)
    if backbone is not None and str(backbone.name) != trained:
        raise UsageError(
            f"{path} was trained with backbone={trained}, not backbone={backbone.name}; drop the backbone "
            f"override (the checkpoint names its own) or pass a {backbone.name} checkpoint"
        )
    state = obj.get("state_dict", {})
    net = DeblurNet(instantiate(node.net), node.pad_multiple)
    load_state_dict_strict(net, _prefixed(state, "deblur_net."), str(path))
    motion_net = None
    motion_state = _prefixed(state, "motion_net.")
    if motion and motion_state and "motion" in config.model:
        motion_net = instantiate(config.model.motion.net)
        load_state_dict_strict(motion_net, motion_state, str(path))
        motion_net.eval()
    alpha = float(config.model.reblur.alpha)
    relative, scale = (_saved_setting(config, path, key) for key in ("relative_motion", "motion_scale"))
    pad = int(node.pad_multiple)
    return Networks(net.eval(), motion_net, alpha, trained, pad, bool(relative), float(scale), config, state)


def _saved_setting(config: DictConfig, path: Path, key: str) -> Any:
    """``model.<key>`` of a checkpoint's saved config; a config without it is an error, not a guess."""
    value = OmegaConf.select(config, f"model.{key}", default=None)
    if value is None:
        raise UsageError(
            f"{path}: the saved config has no model.{key} (what R received in training); expected a neurmap "
            "checkpoint whose config sets it"
        )
    return value


def _starts(size: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile origins covering ``[0, size)``: stride ``tile - overlap`` rounded down to ``align``, last flush."""
    if size <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, size - tile, stride))
    last = size - tile
    # the last tile is flush with the border; keep it aligned where possible (it may overlap more)
    starts.append(last // align * align if last % align and last // align * align > starts[-1] else last)
    if starts[-1] + tile < size:
        starts.append(last)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blend weights of a tile: 0 in the outer quarter of an interior overlap, linear over its middle."""
    weights = torch.ones(length, dtype=torch.float64)
    margin, width = overlap // 4, max(overlap - 2 * (overlap // 4), 1)
    position = torch.arange(length, dtype=torch.float64)
    rise = ((position - margin + 0.5) / width).clamp(0, 1)
    if not at_start:
        weights = torch.minimum(weights, rise)
    if not at_end:
        weights = torch.minimum(weights, rise.flip(0))
    return weights


@torch.no_grad()
def tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int | None,
    overlap: int = 64,
    align: int = 1,
    out_channels: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles of ``image`` (1, C, H, W) and blend the outputs.

    Args:
        fn: maps a (1, C, h, w) tile to a (1, C_out, h, w) output (on the tile's device).
        image: the input; outputs are accumulated on its device in float32.
        tile: tile side in px; None (or an image no larger than a tile) runs ``fn`` once.
        overlap: overlap between neighbouring tiles in px; receptive fields up to ``overlap / 4`` stitch exactly.
        align: tile origins are multiples of this (the network's padding multiple), so that networks that
            downsample see the same pixel grid as on the whole image.
        out_channels: channels of ``fn``'s output (default: C).
        progress: called with the number of tiles done after each tile.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiled() takes one image (1, C, H, W), got {tuple(image.shape)}")
    _, channels, height, width = image.shape
    if tile is None or (height <= tile and width <= tile):
        return fn(image).float()
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    align = max(1, int(align))
    tile = max(align, tile // align * align)
    out = torch.zeros(1, out_channels or channels, height, width, device=image.device)
    total = torch.zeros(1, 1, height, width, dtype=torch.float64, device=image.device)
    rows, cols = _starts(height, tile, overlap, align), _starts(width, tile, overlap, align)
    done = 0
    for top in rows:
        h = min(tile, height - top)
        wy = _ramp(h, overlap, top == 0, top + h >= height)
        for left in cols:
            w = min(tile, width - left)
            wx = _ramp(w, overlap, left == 0, left + w >= width)
            weight = (wy[:, None] * wx[None, :]).to(image.device)
            result = fn(image[:, :, top : top + h, left : left + w]).float()
            out[:, :, top : top + h, left : left + w] += result * weight.float()
            total[:, :, top : top + h, left : left + w] += weight
            done += 1
            if progress is not None:
                progress(done)
    if bool((total <= 0).any()):
        raise RuntimeError(f"tiling left pixels uncovered (tile={tile}, overlap={overlap}); raise the tile size")
    return out / total.float()


def n_tiles(height: int, width: int, tile: int | None, overlap: int, align: int = 1) -> int:
    """How many tiles :func:`tiled` runs for an image of this size."""
    if tile is None or (height <= tile and width <= tile):
        return 1
    tile = max(align, tile // align * align)
    return len(_starts(height, tile, overlap, align)) * len(_starts(width, tile, overlap, align))
