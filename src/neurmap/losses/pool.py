"""Running estimate of E[|M(S)|], the expected motion magnitude of sharp images (paper eq. 7)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MotionPool"]


class MotionPool(nn.Module):
    """FIFO of the per-sample, per-channel mean |motion| of the most recent sharp images.

    The authors keep the last 50 per-sample canonical motion maps M(S) and average their magnitude
    over pool, height and width per channel. All maps share one size, so storing each sample's
    spatial mean gives exactly that statistic at a fraction of the memory. State lives in buffers
    so that checkpoints restore it and resumed runs continue with the same target.

    Args:
        size: number of samples kept (50 in the authors' code).
        channels: motion channels (2 for linear trajectories).
    """

    def __init__(self, size: int = 50, channels: int = 2) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.register_buffer("values", torch.zeros(size, channels))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, motion: torch.Tensor) -> None:
        """Add a batch of (B, C, H, W) motion maps (detached): each sample's mean magnitude per channel, oldest
        first. Under DDP every rank adds every rank's samples, in rank order, so all ranks keep the same pool (one
        large batch, as on a single device); the ranks' batches must have the same size."""
        means = motion.detach().abs().float().mean(dim=(2, 3))
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            gathered = [torch.empty_like(means) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(gathered, means)
            means = torch.cat(gathered)
        size = self.values.shape[0]
        for row in means[-size:]:
            self.values[int(self.count) % size] = row
            self.count += 1

    def expectation(self) -> torch.Tensor:
        """Per-channel mean magnitude over the filled part of the pool, shape (C,)."""
        filled = int(min(int(self.count), self.values.shape[0]))
        if filled == 0:
            raise RuntimeError("MotionPool is empty: push sharp-image motion before asking for E[|M(S)|]")
        return self.values[:filled].mean(dim=0)
