"""Shared pieces of the non-Hydra command lines (``neurmap.deblur``, ``neurmap.export``): settings from a
yaml in ``conf/`` with ``key=value`` overrides, and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from neurmap.config import CONFIG_DIR, backbone_node

__all__ = ["UsageError", "backbone_config", "fail", "load_settings", "parser", "resolve_device"]


class UsageError(ValueError):
    """A bad command-line setting; the message names the key or value and what was expected."""


def load_settings(name: str, overrides: Sequence[str], required: Sequence[str] = ()) -> DictConfig:
    """``conf/<name>.yaml`` with ``key=value`` overrides merged on top, in struct mode.

    Raises:
        UsageError: a malformed override, an unknown key, or a ``required`` key left at ``???``.
    """
    path = Path(CONFIG_DIR) / f"{name}.yaml"
    base = OmegaConf.load(path)
    OmegaConf.set_struct(base, True)
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"{item!r} is not key=value (settings: {', '.join(map(str, base))})")
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except ConfigKeyError as err:
        key = getattr(err, "full_key", None) or str(err).splitlines()[0]
        raise UsageError(f"unknown setting {key!r}; settings are {', '.join(map(str, base))} ({path})") from None
    except OmegaConfBaseException as err:
        raise UsageError(f"bad override: {str(err).splitlines()[0]}") from None
    for key in required:
        try:
            OmegaConf.select(merged, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise UsageError(f"{key}=... is required") from None
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
