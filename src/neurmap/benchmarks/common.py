"""What every benchmark prints the same way: the machine line, a timing row, CPU count and peak memory."""

from __future__ import annotations

import os
import platform
import resource
import statistics

import torch

__all__ = ["cpus", "machine", "peak_rss_mb", "timing_row"]


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> str:
    """One line naming the machine the figures come from."""
    return (
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {cpus()} CPUs, "
        f"torch {torch.__version__}, {platform.processor() or platform.platform()}"
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timing_row(name: str, times: list[float], note: str) -> str:
    """A Markdown row: name, median and min in ms, and what was timed."""
    return f"| {name} | {1000 * statistics.median(times):.1f} | {1000 * min(times):.1f} | {note} |"
