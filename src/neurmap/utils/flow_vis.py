"""Motion maps in flow colours, and image grids (torchvision is not a dependency)."""

from __future__ import annotations

import math

import torch
from kornia.color import hsv_to_rgb

__all__ = ["flow_to_color", "make_grid"]


def flow_to_color(motion: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """Colour a (B, 2, H, W) motion map: hue = direction, saturation = magnitude, value = 1.

    Channel 0 is vertical (down positive), channel 1 horizontal (right positive). Magnitudes are
    divided by ``max_magnitude`` (default: each image's maximum) and clipped to 1, so zero motion
    is white. Returns (B, 3, H, W) RGB in [0, 1].
    """
    if motion.ndim != 4 or motion.shape[1] != 2:
        raise ValueError(f"motion must be (B, 2, H, W), got shape {tuple(motion.shape)}")
    motion = motion.detach().float()
    dy, dx = motion[:, 0], motion[:, 1]
    magnitude = torch.sqrt(dx**2 + dy**2)
    if max_magnitude is None:
        scale = magnitude.flatten(1).amax(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    else:
        scale = torch.tensor(float(max_magnitude)).clamp_min(1e-8)
    hue = torch.remainder(torch.atan2(dy, dx), 2 * math.pi)
    saturation = (magnitude / scale).clamp(0, 1)
    hsv = torch.stack([hue, saturation, torch.ones_like(hue)], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def make_grid(
    images: list[torch.Tensor] | torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile (3, H, W) images (all one size) into rows of ``nrow``; returns (3, H', W')."""
    if isinstance(images, torch.Tensor):
        images = list(images)
    if not images:
        raise ValueError("make_grid needs at least one image")
    c, h, w = images[0].shape
    ncol = min(nrow, len(images))
    nrows = math.ceil(len(images) / nrow)
    grid = images[0].new_full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k, image in enumerate(images):
        r, q = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = image.to(grid)
    return grid
