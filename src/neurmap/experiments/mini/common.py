"""What every part of the mini reproduction shares: its error type and its log line."""

from __future__ import annotations

import time

__all__ = ["PROG", "ReproError", "log"]

PROG = "neurmap.reproduce_mini"


class ReproError(RuntimeError):
    """A problem the run cannot go past (missing package, bad option, bad work folder, a failed stage); one line."""


def log(message: str) -> None:
    """One progress line, with the time of day."""
    print(f"[{PROG} {time.strftime('%H:%M:%S')}] {message}", flush=True)
