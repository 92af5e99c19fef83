"""Motion maps in flow colours, and image grids (torchvision is not a dependency).

``flow_to_color`` follows the authors' ``mmap2heat``: HSV with hue = direction, saturation = magnitude and
value = 1, the angle measured counter-clockwise *on screen* from "right" (OpenCV ``cartToPolar(dx, -dy)``),
so the panels look like the paper's motion figures. Unlike ``mmap2heat`` it neither canonicalises the sign
(callers do) nor min-max normalises: magnitudes are divided by a maximum (shared across panels if given), so zero
motion is white and equal motions get equal colours in every panel.
"""

from __future__ import annotations

import math

import torch
from kornia.color import hsv_to_rgb
from torch import Tensor

__all__ = ["flow_panels", "flow_to_color", "make_grid"]


def flow_to_color(motion: Tensor, max_magnitude: float | None = None, eps: float = 1e-8) -> Tensor:
    """Colour a motion map: hue from the direction, saturation from the magnitude.

    Colour wheel (full saturation): right red, up yellow-green, left cyan, down violet; hue turns
    counter-clockwise on screen. Zero motion is white.

    Args:
        motion: (B, 2, H, W); channel 0 vertical (dy, down positive), channel 1 horizontal (dx,
            right positive), any unit.
        max_magnitude: magnitude shown fully saturated (larger ones are clipped), in the unit of
            ``motion``; ``None`` uses each image's maximum.
        eps: floor of the normaliser, so an all-zero field gives white instead of NaN.

    Returns:
        (B, 3, H, W) RGB in [0, 1], float32, detached.
    """
    if motion.ndim != 4 or motion.shape[1] != 2:
        raise ValueError(f"flow_to_color expects motion of shape (B, 2, H, W), got {tuple(motion.shape)}")
    if max_magnitude is not None and not max_magnitude > 0:
        raise ValueError(f"flow_to_color max_magnitude must be > 0 or None, got {max_magnitude}")
    motion = motion.detach().float()
    dy, dx = motion[:, 0], motion[:, 1]
    magnitude = torch.hypot(dx, dy)
    if max_magnitude is None:
        scale = magnitude.flatten(1).amax(dim=1).clamp_min(eps).view(-1, 1, 1)
    else:
        scale = max(float(max_magnitude), eps)
    hue = torch.remainder(torch.atan2(-dy, dx), 2 * math.pi)  # kornia expects radians in [0, 2pi)
    saturation = (magnitude / scale).clamp(0, 1)
    return hsv_to_rgb(torch.stack([hue, saturation, torch.ones_like(hue)], dim=1)).clamp(0, 1)


def make_grid(images: list[Tensor] | Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile same-size images into rows of ``nrow``, separated and framed by ``padding`` pixels.

    Args:
        images: a list of (C, H, W) tensors or an (N, C, H, W) batch (C = 3 for RGB panels).
        nrow: images per row.
        padding: border width between and around the images.
        pad_value: border value.

    Returns:
        (C, rows * (H + padding) + padding, cols * (W + padding) + padding) with
        cols = min(nrow, N) and rows = ceil(N / nrow), on the first image's device and dtype.
    """
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"make_grid expects an (N, C, H, W) batch, got shape {tuple(images.shape)}")
        images = list(images)
    if not images:
        raise ValueError("make_grid needs at least one image, got none")
    if nrow < 1 or padding < 0:
        raise ValueError(f"make_grid needs nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    shape = images[0].shape
    bad = [tuple(im.shape) for im in images if im.shape != shape or im.ndim != 3]
    if bad:
        raise ValueError(f"make_grid needs (C, H, W) images of one shape {tuple(shape)}, got {bad[0]}")
    c, h, w = shape
    cols, rows = min(nrow, len(images)), math.ceil(len(images) / nrow)
    grid = images[0].new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for k, image in enumerate(images):
        r, q = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = image.to(grid)
    return grid


def flow_panels(flows: dict[str, Tensor]) -> dict[str, Tensor]:
    """Colour several (N, 2, H, W) motion batches (px) on one shared magnitude scale, so that predicted and
    ground-truth motion can be compared by eye; an empty dict gives an empty dict."""
    if not flows:
        return {}
    scale = max(float(f.norm(dim=1).max()) for f in flows.values())
    return {k: flow_to_color(f, max_magnitude=max(scale, 1e-3)) for k, f in flows.items()}
