"""What every benchmark prints the same way: the machine line (:func:`neurmap.utils.machine.machine`), a timing
row and peak memory."""

from __future__ import annotations

import resource
import statistics

from neurmap.utils.machine import cpus, machine

__all__ = ["cpus", "machine", "peak_rss_mb", "timing_row"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timing_row(name: str, times: list[float], note: str) -> str:
    """A Markdown row: name, median and min in ms, and what was timed."""
    return f"| {name} | {1000 * statistics.median(times):.1f} | {1000 * min(times):.1f} | {note} |"
