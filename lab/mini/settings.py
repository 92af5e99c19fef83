"""Typed schema of the mini reproduction's settings (``conf/reproduce_mini.yaml``, ``defaults:
[reproduce_mini_schema, _self_]``): an unknown key, a value of the wrong type or a missing one fails before the
run starts. The values live in the yaml file, never here; ranges are checked by :func:`lab.mini.run.run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

__all__ = ["CONFIG", "MiniData", "MiniSettings", "load_settings", "store_schema"]

#: The settings file in conf/ (and its schema's name in Hydra's ConfigStore, with ``_schema``).
CONFIG = "reproduce_mini"


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
    """``python -m lab.reproduce_mini`` (commented in conf/reproduce_mini.yaml)."""

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


def store_schema() -> None:
    """Register :class:`MiniSettings` in Hydra's ConfigStore as ``reproduce_mini_schema``, the name
    conf/reproduce_mini.yaml extends; composing that file needs it first (storing it again replaces it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=f"{CONFIG}_schema", node=MiniSettings)


def load_settings(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/reproduce_mini.yaml composed over its schema with the ``key=value`` ``overrides``.

    Raises:
        UsageError: a malformed override, an unknown key or a value of the wrong type (neurmap.cli.settings).
    """
    from neurmap.composition import settings

    store_schema()
    return settings(CONFIG, overrides)
