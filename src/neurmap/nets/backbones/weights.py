"""Load pretrained weights into a :class:`~neurmap.nets.backbones.DeblurNet`, strictly.

NeurMAP fine-tunes a published backbone (DMPHN from per-level files or one whole-module
state dict, MPRNet from ``['state_dict']``, MIMO-UNet from ``['model']``), and neurmap runs start
from each other's checkpoints. :func:`load_pretrained` accepts:

(a) a neurmap / Lightning checkpoint: ``{"state_dict": {"deblur_net.net.<...>": ...}, ...}``; only
    D's keys are used, other networks' keys are ignored;
(b) a plain state-dict file, or one nested under ``key`` (when ``key`` is None: the file itself if
    it is a flat dict of tensors, else the first of ``state_dict``, ``model``, ``params``, ... that
    it holds); ``module.`` (DataParallel) prefixes and a leading ``net.`` are stripped;
(c) a directory in a backbone's own release format, for backbones that define
    ``load_released(path)``: DMPHN's per-level ``encoder_lv{i}.pkl`` / ``decoder_lv{i}.pkl``.

Files are always read with ``torch.load(map_location="cpu", weights_only=True)``. A mismatch
raises one ``ValueError`` listing missing, unexpected and mis-shaped keys. A backbone may name
``optional_state_keys`` (e.g. DMPHN's ``input_shift`` buffer, which the authors' files lack): when
a checkpoint lacks one, the model keeps its current value.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["describe_mismatch", "load_pretrained", "load_state_dict_strict"]

COMMON_KEYS = ("state_dict", "model", "params", "params_ema", "net", "generator")
NEURMAP_PREFIX = "deblur_net.net."
_SHOWN = 8  # names listed per category in error messages


def _names(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")


def describe_mismatch(state: Mapping[str, torch.Tensor], module: nn.Module) -> str | None:
    """Compare a state dict with ``module``'s.

    Returns:
        None when ``state`` fits ``module`` exactly, else one line:
        ``missing keys (N): ...; unexpected keys (M): ...; shape mismatches (K): name ckpt(..) vs model(..)``.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} ckpt{tuple(state[k].shape)} vs model{tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = [
        f"{what} ({len(items)}): {_names(items)}"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    return "; ".join(parts) or None


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state, strict=True)``, raising one readable ``ValueError`` on mismatch.

    Keys listed in ``module.optional_state_keys`` that ``state`` lacks keep the module's current values.
    """
    own = module.state_dict()
    optional = getattr(module, "optional_state_keys", ())
    state = {**{k: own[k] for k in optional if k in own and k not in state}, **state}
    problem = describe_mismatch(state, module)
    if problem:
        raise ValueError(f"checkpoint '{source}' does not fit {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=True)


def _is_flat_state(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: object, key: str | None, source: str) -> dict[str, torch.Tensor]:
    """Find the backbone's state dict in a loaded checkpoint object; see the module docstring, (a)-(b)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint '{source}' holds a {type(obj).__name__}, expected a dict of tensors")
    neurmap_ckpt = isinstance(obj.get("state_dict"), Mapping) and any(
        str(k).startswith(NEURMAP_PREFIX) for k in obj["state_dict"]
    )
    if key is not None and key not in obj and neurmap_ckpt:
        key = None  # the backbone yaml names the official release's key; our own checkpoints need none
    if key is not None:
        if key not in obj:
            raise ValueError(f"checkpoint '{source}' has no key {key!r}; its keys: {_names(sorted(map(str, obj)))}")
        obj = obj[key]
        if not isinstance(obj, Mapping):
            raise ValueError(f"checkpoint '{source}': {key!r} holds a {type(obj).__name__}, expected a state dict")
    elif not _is_flat_state(obj):
        nested = next((k for k in COMMON_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            raise ValueError(
                f"checkpoint '{source}' is not a flat state dict and has none of the keys {list(COMMON_KEYS)}; "
                f"its keys: {_names(sorted(map(str, obj)))}; name the right one with model.deblur.pretrained_key"
            )
        obj = obj[nested]
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(NEURMAP_PREFIX) for k in state):  # a neurmap checkpoint: keep only D
        state = {k.removeprefix(NEURMAP_PREFIX): v for k, v in state.items() if k.startswith(NEURMAP_PREFIX)}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if state and all(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return state


def load_pretrained(deblur_net: nn.Module, path: str | os.PathLike, key: str | None = None) -> None:
    """Load weights from ``path`` into ``deblur_net.net``, strictly.

    Args:
        deblur_net: a :class:`~neurmap.nets.backbones.DeblurNet` (a bare backbone also works).
        path: a neurmap/Lightning ``.ckpt``, a state-dict file, or a backbone's release folder.
        key: the nested key holding the state dict inside a file (None: found automatically).

    Raises:
        FileNotFoundError: ``path`` does not exist, or a release folder lacks files (they are named).
        ValueError: the weights do not fit (missing / unexpected / mis-shaped keys are listed), or the
            file cannot be read as weights.
    """
    path = Path(path)
    net = getattr(deblur_net, "net", deblur_net)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights not found: no such file or directory '{path}'")
    if path.is_dir():
        loader = getattr(net, "load_released", None)
        if loader is None:
            raise ValueError(
                f"pretrained weights '{path}' is a directory, but {type(net).__name__} has no release-folder "
                "format (DMPHN has); pass a checkpoint or state-dict file"
            )
        loader(path)
        return
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint '{path}' cannot be read as weights (torch.load weights_only): {first}") from err
    load_state_dict_strict(net, extract_state_dict(obj, key, str(path)), str(path))
