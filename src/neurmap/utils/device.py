"""The torch device a command runs on, from its ``device`` setting."""

from __future__ import annotations

import torch

from neurmap.errors import UsageError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU) or a torch device name; CUDA without a GPU is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name}: not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name}: CUDA is not available on this machine (use device=cpu or auto)")
    return device
