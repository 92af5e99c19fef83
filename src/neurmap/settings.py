"""Typed schemas of the plain commands' settings (``conf/deblur.yaml``, ``export.yaml``, ``synthesize.yaml``,
``collect.yaml``, ``reproduce_mini.yaml``). Hydra composes each yaml over its schema (``defaults: [<name>_schema,
_self_]``), so an unknown key, a value of the wrong type (``tile=abc``) or a missing one fails before the command
starts.
The values live in the yaml files, never here; ranges are checked by the command that uses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = ["CollectSettings", "DeblurSettings", "ExportSettings", "MiniData", "MiniSettings", "SynthesisSettings"]


@dataclass
class DeblurSettings:
    """``python -m neurmap.deblur`` (commented in conf/deblur.yaml)."""

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

    latest: bool = MISSING
    root: str = MISSING
    prefix: str = MISSING


@dataclass
class MiniData:
    """The mini reproduction's sets (``data`` in conf/reproduce_mini.yaml)."""

    train_photos: list[str] = MISSING
    test_photos: list[str] = MISSING
    crop: int = MISSING
    train_crops: int = MISSING
    test_crops: int = MISSING
    val_crop: int = MISSING
    val_crops: int = MISSING
    paired_val_crops: int = MISSING
    motion_procedural: int = MISSING
    paired_length: list[float] = MISSING
    synth: list[str] = MISSING


@dataclass
class MiniSettings:
    """``python -m neurmap.reproduce_mini`` (commented in conf/reproduce_mini.yaml)."""

    weights: str = MISSING
    work: str = MISSING
    out: str = MISSING
    report_name: str = MISSING
    seed: int = MISSING
    backbone_name: str = MISSING
    variants: list[str] = MISSING
    method: str = MISSING
    ceiling: bool = MISSING
    iterations: int | None = MISSING
    scratch_iterations: int | None = MISSING
    source: bool = MISSING
    source_ckpt: str | None = MISSING
    source_iterations: int | None = MISSING
    source_only: bool = MISSING
    motion_pretrain: bool = MISSING
    motion_ckpt: str | None = MISSING
    motion_iterations: int | None = MISSING
    minutes_per_method: float | None = MISSING
    jobs: int = MISSING
    threads: int = MISSING
    budget_minutes: float = MISSING
    data_only: bool = MISSING
    train_overrides: list[str] = MISSING
    motion_overrides: list[str] = MISSING
    source_overrides: list[str] = MISSING
    arm_overrides: dict[str, list[str]] = MISSING
    eval_overrides: list[str] = MISSING
    data: MiniData = field(default_factory=MiniData)
