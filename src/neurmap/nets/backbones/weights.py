"""Load pretrained weights into a :class:`~neurmap.nets.backbones.DeblurNet`, strictly.

Accepted sources:

* a neurmap / Lightning checkpoint (``state_dict`` with ``deblur_net.net.*`` keys);
* a plain state-dict file, or one nested under ``key`` (``state_dict``, ``model``, ``params`` are
  tried when ``key`` is None), with ``module.`` (DataParallel) prefixes stripped;
* a directory of a backbone's own release format, for backbones that define
  ``load_released(path)`` (DMPHN's per-level ``encoder_lv*.pkl`` / ``decoder_lv*.pkl``).

Files are always read with ``torch.load(weights_only=True)``. A mismatch raises one readable error
listing missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["describe_mismatch", "load_pretrained", "load_state_dict_strict"]

_COMMON_KEYS = ("state_dict", "model", "params", "params_ema", "net", "generator")
_SHOWN = 8


def _names(keys: list[str]) -> str:
    head = ", ".join(keys[:_SHOWN])
    return head + (", ..." if len(keys) > _SHOWN else "")


def describe_mismatch(state: Mapping[str, torch.Tensor], module: nn.Module) -> str | None:
    """None when ``state`` fits ``module`` exactly, else a one-line description of the differences."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} ckpt{tuple(state[k].shape)} vs model{tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {_names(shapes)}")
    return "; ".join(parts) or None


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a readable one-line error."""
    problem = describe_mismatch(state, module)
    if problem:
        raise ValueError(f"checkpoint '{source}' does not fit {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=True)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _extract(obj: object, key: str | None, source: str) -> dict[str, torch.Tensor]:
    """Find the backbone's state dict inside a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint '{source}' holds a {type(obj).__name__}, expected a state dict")
    if key is not None:
        if key not in obj:
            raise ValueError(
                f"checkpoint '{source}' has no key {key!r}; top-level keys: {_names(sorted(map(str, obj)))}"
            )
        obj = obj[key]
    elif (
        "state_dict" in obj
        and isinstance(obj["state_dict"], Mapping)
        and any(str(k).startswith("deblur_net.") for k in obj["state_dict"])
    ):
        # a neurmap checkpoint: keep only the deblurring network
        return {k[len("deblur_net.net.") :]: v for k, v in obj["state_dict"].items() if k.startswith("deblur_net.net.")}
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((k for k in _COMMON_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            raise ValueError(
                f"checkpoint '{source}' is not a state dict and has none of the keys {list(_COMMON_KEYS)}; "
                "name the right one with backbone.pretrained_key"
            )
        obj = obj[nested]
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "deblur_net.net.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = _strip(state, prefix)
    return state


def load_pretrained(deblur_net: nn.Module, path: str | os.PathLike, key: str | None = None) -> None:
    """Load weights from ``path`` into ``deblur_net.net`` (strict). See the module docstring for formats."""
    path = Path(path)
    net = getattr(deblur_net, "net", deblur_net)
    if not path.exists():
        raise FileNotFoundError(f"backbone.pretrained: no such file or directory: {path}")
    if path.is_dir():
        loader = getattr(net, "load_released", None)
        if loader is None:
            raise ValueError(
                f"backbone.pretrained: {path} is a directory, but {type(net).__name__} has no "
                "release-folder format; pass a checkpoint or state-dict file"
            )
        loader(path)
        return
    obj = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_strict(net, _extract(obj, key, str(path)), str(path))
