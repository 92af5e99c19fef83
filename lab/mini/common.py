"""What every part of the mini reproduction shares: its error types, its log line and how paths are shown."""

from __future__ import annotations

import os
import time
from pathlib import Path

from neurmap.errors import UsageError

__all__ = ["PROG", "ReproError", "StageFailed", "log", "shown"]

PROG = "lab.reproduce_mini"


class ReproError(UsageError):
    """A problem the run cannot go past (missing package, bad setting, bad work folder); one line, exit status 2."""


class StageFailed(RuntimeError):
    """A stage's command failed (its name, exit status and log in the message); one line, exit status 1."""


def shown(text: str) -> str:
    """``text`` as a report prints it: the releases folder as ``$NEURMAP_RELEASES`` and the current
    folder's absolute path dropped, so that reports name no path of the machine they ran on."""
    value = os.environ.get("NEURMAP_RELEASES")
    if value:
        for form in sorted({value, str(Path(value).resolve())}, key=len, reverse=True):
            text = text.replace(form, "$NEURMAP_RELEASES")
    return text.replace(f"{Path.cwd().resolve()}/", "")


def log(message: str) -> None:
    """One progress line, with the time of day."""
    print(f"[{PROG} {time.strftime('%H:%M:%S')}] {message}", flush=True)
