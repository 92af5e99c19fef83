"""One description of the machine that figures come from, for every timing and report (the lab's among them)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["cpus", "machine"]


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU model, CPUs available, torch threads, GPU (or none), torch, Python and OS versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{_cpu_model()}; {cpus()} CPUs available, {torch.get_num_threads()} torch threads, {gpu}; "
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
