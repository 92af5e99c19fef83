"""Released weights: one variable, one layout, one resolver.

The environment variable ``NEURMAP_RELEASES`` names a folder laid out as::

    $NEURMAP_RELEASES/
    ├── weights/<name>       a release as its authors publish it: a folder (DMPHN's encoder_lv*.pkl /
    │                        decoder_lv*.pkl) or one file (MPRNet's model_deblurring.pth saved as mprnet.pth)
    └── fixtures/<name>/     the authors' published outputs (only the tests that compare with them read these)

Config recipes read a release with the interpolation ``${neurmap_release:<name>}`` (or
``${neurmap_release:<name>,<default>}``: the default when the variable is unset), and the commands take
``ckpt=release:<name>`` (``model.deblur.pretrained=release:<name>`` for train); both resolve through
:func:`release_path`, so a missing variable, an unknown name or a missing entry is the same one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neurmap.errors import UsageError

__all__ = ["PREFIX", "RELEASES_ENV", "release_path", "weights_path"]

#: The environment variable that names the releases folder.
RELEASES_ENV = "NEURMAP_RELEASES"
#: How a command-line value names a release instead of a path.
PREFIX = "release:"


def release_path(name: str) -> Path:
    """``$NEURMAP_RELEASES/weights/<name>``.

    Raises:
        UsageError: the variable is unset, ``name`` is not a plain name, or the entry does not exist; one line
            naming the variable and the layout expected.
    """
    name = str(name)
    if not name or name in (".", "..") or Path(name).name != name:
        raise UsageError(
            f"{PREFIX}{name}: expected the name of an entry of $NEURMAP_RELEASES/weights, e.g. dmphn_1_2_4"
        )
    root = os.environ.get(RELEASES_ENV)
    if not root:
        raise UsageError(
            f"{PREFIX}{name} needs {RELEASES_ENV}=<folder> holding weights/{name} (a release folder or file; "
            "see README 'Released weights')"
        )
    path = Path(root).expanduser() / "weights" / name
    if not path.exists():
        raise UsageError(
            f"{PREFIX}{name}: {path} does not exist ({RELEASES_ENV}={root} must hold weights/{name}, a release "
            "folder or file; see README 'Released weights')"
        )
    return path


def weights_path(value: Any) -> Any:
    """``value`` with ``release:<name>`` replaced by :func:`release_path` (as a string); anything else unchanged."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return str(release_path(value.removeprefix(PREFIX)))
    return value


_UNSET = object()


def resolve_release(name: str, default: Any = _UNSET) -> Any:
    """The ``${neurmap_release:<name>[,<default>]}`` interpolation: :func:`release_path` as a string; with a
    default, that default while ``NEURMAP_RELEASES`` is unset (a set variable without the entry is still an
    error, so a typo never falls back silently)."""
    if default is not _UNSET and not os.environ.get(RELEASES_ENV):
        return default
    return str(release_path(name))
