"""Typed schemas of the plain commands' settings (``conf/deblur.yaml``, ``export.yaml``, ``synthesize.yaml``,
``collect.yaml``). Hydra composes each yaml over its schema (``defaults: [<name>_schema, _self_]``), so an unknown
key, a value of the wrong type (``tile=abc``) or a missing one fails before the command starts.
The values live in the yaml files, never here; ranges are checked by the command that uses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = ["CollectSettings", "DeblurSettings", "ExportSettings", "SynthesisSettings"]


@dataclass
class DeblurSettings:
    """``python -m neurmap.deblur`` (commented in conf/deblur.yaml)."""

    input: str = MISSING
    output: str = MISSING
    ckpt: str = MISSING
    model: Any = None  # {deblur: the conf/backbone node chosen by backbone=<name>}, or None
    device: str = MISSING
    precision: str = MISSING
    tile: int | None = MISSING
    overlap: int = MISSING
    motion: bool = MISSING
    compare: bool = MISSING
    suffix: str = MISSING
    bits: int = MISSING
    suffixes_16bit: list[str] = MISSING
    jpeg_quality: int = MISSING
    recursive: bool = MISSING
    overwrite: bool = MISSING
    on_error: str = MISSING


@dataclass
class ExportSettings:
    """``python -m neurmap.export`` (commented in conf/export.yaml)."""

    ckpt: str = MISSING
    model: Any = None  # {deblur: the conf/backbone node chosen by backbone=<name>}, or None
    paths: Any = None  # conf/paths/default.yaml: paths.log_dir
    format: str = MISSING
    output: str | None = MISSING
    overwrite: bool = MISSING
    example_size: list[int] = MISSING
    check: bool = MISSING
    check_sizes: list[list[int]] = MISSING
    tolerance: float = MISSING


@dataclass
class FlowRanges:
    """Gong et al.'s camera-motion parameter ranges (each drawn from U(-max, max))."""

    tx_max: float = MISSING
    ty_max: float = MISSING
    acc_max: float = MISSING
    rot_max: float = MISSING
    center_shift_max: float = MISSING
    tz_max: float = MISSING


@dataclass
class KernelSynthesis:
    blurs_per_image: int = MISSING
    include_sharp: bool = MISSING
    round_flow: bool = MISSING
    crop_boundary: bool = MISSING
    noise_std: float = MISSING
    flow: FlowRanges = field(default_factory=FlowRanges)


@dataclass
class GoproSynthesis:
    frames: int = MISSING
    stride: int | None = MISSING
    gamma: float | None = MISSING


@dataclass
class SynthesisSettings:
    """``python -m neurmap.synthesize`` (commented in conf/synthesize.yaml)."""

    src: str = MISSING
    dst: str = MISSING
    mode: str = MISSING
    seed: int = MISSING
    workers: int = MISSING
    on_error: str = MISSING
    recursive: bool = MISSING
    overwrite: bool = MISSING
    kernel: KernelSynthesis = field(default_factory=KernelSynthesis)
    gopro: GoproSynthesis = field(default_factory=GoproSynthesis)


@dataclass
class CollectSettings:
    """``python -m neurmap.collect`` (commented in conf/collect.yaml)."""

    sweep: str | None = MISSING
    latest: bool = MISSING
    root: str = MISSING
    prefix: str = MISSING
