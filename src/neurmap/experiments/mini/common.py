"""What every part of the mini reproduction shares: its error type, its log line and how paths are shown."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["PROG", "ReproError", "log", "shown"]

#: Environment variables whose values reports show by name, never as this machine's paths.
SHOWN_BY_NAME = ("NEURMAP_DMPHN_WEIGHTS",)

PROG = "neurmap.reproduce_mini"


class ReproError(RuntimeError):
    """A problem the run cannot go past (missing package, bad option, bad work folder, a failed stage); one line."""


def shown(text: str) -> str:
    """``text`` as a report prints it: the values of :data:`SHOWN_BY_NAME` as ``$NAME`` and the current folder's
    absolute path dropped, so that reports name no path of the machine they ran on."""
    for name in SHOWN_BY_NAME:
        value = os.environ.get(name)
        if value:
            for form in sorted({value, str(Path(value).resolve())}, key=len, reverse=True):
                text = text.replace(form, f"${name}")
    return text.replace(f"{Path.cwd().resolve()}/", "")


def log(message: str) -> None:
    """One progress line, with the time of day."""
    print(f"[{PROG} {time.strftime('%H:%M:%S')}] {message}", flush=True)
