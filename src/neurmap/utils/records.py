"""Settings records beside a command's outputs: a re-run with other settings, another model or other data is
refused instead of mixing, skipping or replacing earlier results without a word.

A command writes ``<folder>/<name>`` (JSON: the settings that shape its outputs) when it writes there, and
before any work compares it with the settings of the run at hand (:func:`check_record`). Output folders are
checked for writability before any work too (:func:`check_writable`). A run folder that holds a finished run
or a stopped one is never started over (:func:`check_not_finished`, :func:`check_not_stopped`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from neurmap.config import FINAL_METRICS
from neurmap.errors import UsageError
from neurmap.utils.files import write_json

__all__ = [
    "check_not_finished",
    "check_not_stopped",
    "check_record",
    "check_writable",
    "differences",
    "read_record",
    "write_record",
]


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


def check_not_finished(output_dir: Path, key: str = "paths.output_dir") -> None:
    """A run never writes into a finished run's folder (its ``final_metrics.json`` and records would be
    replaced): one line that says how to go on from it instead."""
    if (output_dir / FINAL_METRICS).is_file():
        ckpt = output_dir / "checkpoints" / "last.ckpt"
        raise UsageError(
            f"{key}={output_dir} holds a finished run ({FINAL_METRICS}); a new or resumed run writes its own folder: "
            f"leave {key} out, and to go on from it pass model.deblur.pretrained={ckpt}"
        )


def check_not_stopped(output_dir: Path, ckpt_path: object, key: str = "paths.output_dir") -> None:
    """A new run (no ``ckpt_path``) never starts over in the folder of a stopped one, whose checkpoints it would
    replace: one line that says ``ckpt_path=last``."""
    if ckpt_path not in (None, ""):
        return
    folder = output_dir / "checkpoints"
    found = [name for name in ("interrupted.ckpt", "last.ckpt") if (folder / name).is_file()]
    if found:
        raise UsageError(
            f"{key}={output_dir} holds a stopped run (checkpoints/{found[0]}); resume it with ckpt_path=last, "
            f"or leave {key} out for a new run"
        )
