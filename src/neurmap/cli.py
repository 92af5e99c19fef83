"""Shared pieces of the non-Hydra command lines (``neurmap.deblur``, ``neurmap.export``, ``neurmap.synthesize``):
settings from a yaml in ``conf/`` with ``key=value`` overrides (one loader), and one error type with one-line
messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from neurmap.config import CONFIG_DIR, backbone_node

__all__ = ["SettingsError", "UsageError", "backbone_config", "fail", "load_settings", "parser", "resolve_device"]


class SettingsError(ValueError):
    """A bad setting, override, path or value of a command; the message names the key, file or value and
    what was expected. The one error type of every non-Hydra command (deblur, export, synthesize, evaluate's
    checks)."""


#: The former name of :class:`SettingsError` (same class).
UsageError = SettingsError


def _known_keys(node: DictConfig | Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of ``node`` (values are not resolved: ``???`` is fine)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        keys.extend(_known_keys(value, f"{full}.") if isinstance(value, Mapping) else [full])
    return keys


def _merge(base: DictConfig, layer: DictConfig, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as err:
        key = getattr(err, "full_key", None) or str(getattr(err, "key", "")) or str(err).splitlines()[0]
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(base, parent) if parent else base
        known = _known_keys(node, f"{parent}.") if parent and isinstance(node, DictConfig) else _known_keys(base)
        raise SettingsError(f"unknown setting '{key}' in {origin} (known: {', '.join(known)})") from None
    except OmegaConfBaseException as err:
        raise SettingsError(f"bad setting in {origin}: {str(err).splitlines()[0]}") from None


def load_settings(
    name: str,
    overrides: Sequence[str] = (),
    required: Sequence[str] = (),
    layers: Sequence[tuple[Mapping[str, Any] | DictConfig, str]] = (),
    preset_key: str | None = None,
) -> DictConfig:
    """``conf/<name>.yaml``, then each ``(mapping, origin)`` layer, then ``key=value`` overrides, in struct mode.

    With ``preset_key``, the value of that key (after all layers) names a preset file next to ``<name>.yaml``
    that is merged over the base before the layers are applied again (``preset=mild``).

    Raises:
        SettingsError: a malformed override, an unknown key (the known ones are listed), an unknown preset, or
            a ``required`` key left at ``???``.
    """
    path = Path(CONFIG_DIR) / f"{name}.yaml"
    base = OmegaConf.load(path)
    OmegaConf.set_struct(base, True)
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise SettingsError(f"{item!r} is not key=value (settings: {', '.join(_known_keys(base))})")
    try:
        cli = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise SettingsError(f"cannot parse the overrides: {str(err).splitlines()[0]}") from None
    stack = [
        (OmegaConf.create(OmegaConf.to_container(c) if isinstance(c, DictConfig) else dict(c)), origin)
        for c, origin in layers
    ]
    stack.append((cli, "the overrides"))

    def apply(start: DictConfig) -> DictConfig:
        for layer, origin in stack:
            start = _merge(start, layer, origin)
        return start

    merged = apply(base)
    if preset_key is not None and merged[preset_key] is not None:
        preset = merged[preset_key]
        preset_path = path.parent / f"{preset}.yaml"
        if not isinstance(preset, str) or preset_path == path or not preset_path.is_file():
            names = sorted(p.stem for p in path.parent.glob("*.yaml") if p != path)
            raise SettingsError(f"{preset_key} must be null or one of {names} (files in {path.parent}), got {preset!r}")
        merged = apply(_merge(base, OmegaConf.load(preset_path), str(preset_path)))
    for key in required:
        try:
            OmegaConf.select(merged, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise SettingsError(f"{key}=... is required") from None
    return merged


def fail(prog: str, message: str, status: int = 2) -> int:
    """Print ``<prog>: error: <message>`` (one line) on stderr and return ``status``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return status


def backbone_config(name: str | None) -> DictConfig | None:
    """``conf/backbone/<name>.yaml`` (None for None); an unknown name lists the choices."""
    if name is None:
        return None
    path = Path(CONFIG_DIR) / "backbone" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise UsageError(f"backbone={name}: no such backbone; choose one of {names}")
    return backbone_node(name)


def parser(prog: str, usage: str, description: str, settings: str) -> argparse.ArgumentParser:
    """An argument parser whose help ends with the commented settings file ``conf/<settings>.yaml``."""
    text = (Path(CONFIG_DIR) / f"{settings}.yaml").read_text()
    return argparse.ArgumentParser(
        prog=prog,
        usage=usage,
        description=description,
        epilog=f"settings (conf/{settings}.yaml):\n{text}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU) or a torch device name; CUDA without a GPU is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name}: CUDA is not available on this machine (use device=cpu or auto)")
    return device
