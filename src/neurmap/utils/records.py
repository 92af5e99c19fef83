"""Settings records beside a command's outputs: a re-run with other settings, another model or other data is
refused instead of mixing, skipping or replacing earlier results without a word.

A command writes ``<folder>/<name>`` (JSON: the settings that shape its outputs) when it writes there, and
before any work compares it with the settings of the run at hand (:func:`check_record`). Output folders are
checked for writability before any work too (:func:`check_writable`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from neurmap.cli import UsageError
from neurmap.utils.files import write_json

__all__ = ["check_record", "check_writable", "differences", "read_record", "write_record"]


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none (an unreadable one counts as a different run)."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=old -> new`` for every key whose value differs (flat keys of the records)."""
    now = _plain(now)
    return [
        f"{key}={before.get(key)} -> {now.get(key)}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]


def check_record(path: Path, now: dict[str, Any], *, what: str, overwrite: bool) -> None:
    """Refuse (one line) when the record at ``path`` was written by a run with other settings than ``now``,
    unless ``overwrite``. ``what`` names the outputs in the message (``deblurred images in out/``)."""
    before = read_record(path)
    if before is None or overwrite:
        return
    changed = differences(before, now)
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise UsageError(
            f"{what} were made by another run ({path.name}: {shown}); pass overwrite=true to replace them, "
            "or choose another output"
        )


def write_record(path: Path, now: dict[str, Any]) -> None:
    """Write the record of this run (atomically); a record that already says the same is left as it is."""
    if read_record(path) != _plain(now):
        write_json(path, _plain(now))


def check_writable(path: Path, key: str) -> None:
    """Refuse (one line naming ``key``) an output folder that cannot be created or written: the nearest existing
    folder of ``path`` must be a writable folder."""
    path = Path(path).expanduser().absolute()
    folder = next((p for p in (path, *path.parents) if p.exists()), path)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{key}={path}: cannot write in {folder} (permission denied or not a folder)")
