"""What every part of the mini reproduction shares: its error type, its log line and how paths are shown."""

from __future__ import annotations

import os
import time
from pathlib import Path

from neurmap.cli import UsageError

__all__ = ["METHODS", "PROG", "ReproError", "StageFailed", "log", "shown"]

#: Environment variables whose values reports show by name, never as this machine's paths.
SHOWN_BY_NAME = ("NEURMAP_DMPHN_WEIGHTS",)

PROG = "neurmap.reproduce_mini"

#: Rows of the results table: run key -> label.
METHODS = {
    "baseline": "supervised fine-tune (paired only)",
    "neurmap": "NeurMAP (natural-image discriminator)",
    "net1": "Net1 (no M/R, sharp/blurry discriminator)",
    "net2": "Net2 (M + R, no discriminator)",
    "net3": "Net3 (M + R, sharp-image discriminator)",
    "oracle_motion": "*ablation:* NeurMAP with oracle motion (R gets the true motion)",
    "ceiling": "*ceiling:* supervised on the target family's own pairs (unavailable to a real user)",
}


class ReproError(UsageError):
    """A problem the run cannot go past (missing package, bad option, bad work folder); one line, exit status 2."""


class StageFailed(RuntimeError):
    """A stage's command failed (its name, exit status and log in the message); one line, exit status 1."""


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
