"""Atomic file writes: the content goes to a temporary file in the destination folder, which is then renamed
into place, so a reader (or a crash) never sees half a file. The file gets the permissions a plain ``open``
would give it (0666 less the umask), not the temporary file's 0600."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "commit_temporary", "default_mode", "write_json"]


def default_mode() -> int:
    """0666 less the process umask: the mode ``open(path, "w")`` gives a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def commit_temporary(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the finished temporary file ``tmp`` the default permissions and rename it to ``path``."""
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        commit_temporary(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, content: Any) -> None:
    """``content`` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, json.dumps(content, indent=2, sort_keys=True) + "\n")
