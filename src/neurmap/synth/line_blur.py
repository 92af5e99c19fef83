"""Spatially varying blur with per-pixel anti-aliased line kernels (Gong et al. CVPR'17, Sun et al. CVPR'15).

This is the blur operator of Gong et al.'s motion-flow synthesis (``conv_opt/motionBlurConv.cc`` in
``donggong1/motion-flow-syn``, itself based on Sun et al., "Learning a convolutional neural network for
non-uniform motion blur removal", CVPR'15), which made NeurMAP's "kernel-synthesized" data set. Every
pixel ``p`` gets its own kernel, a straight segment of length ``|v(p)|`` centred on ``p`` along its
blur vector ``v(p)``, one pixel wide and anti-aliased::

    B(p) = sum_q k_p(q) S(p + q)                    (S clamped to the edge outside the image)
    k_p(q) ~ tent(perp(q)) * overlap(along(q)),     normalised so that sum_q k_p(q) = 1
    along(q) = <q, d>,  perp(q) = <q, d_perp>,      d = v(p) / |v(p)|  (d = horizontal when v(p) = 0)
    tent(x) = max(0, 1 - |x|)
    overlap(a) = |[a - 1/2, a + 1/2]  intersected with  [-L/2, L/2]|,   L = max(|v(p)|, 1)

``tent`` spreads the line over the two pixel rows (columns) it passes between; ``overlap`` is the
length of the segment inside the pixel-wide cell around ``q`` along the line, so the end points are
exact to sub-pixel precision. Consequences: a zero vector is the identity; a horizontal or vertical
vector of integer length L is exactly an L-pixel box (for even L: L - 1 full taps and two half taps
at +-L/2, the continuous box); ``v`` and ``-v`` give the same kernel. This differs from the MEX only
in details of the end-point weights (the MEX measures the distance of an end pixel to the segment's
end, and its segment spans ``|v| - 1`` between the extreme pixel centres).

The sum runs over a square window per spatial tile whose radius follows the tile's longest vector,
restricted to the offsets that the tile's range of directions can reach, so the cost follows the local
blur. Every step is element-wise in torch (no reduction across threads), so results do not depend on
the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["line_blur"]

#: Offsets gathered per vectorised weight computation (bounds memory to ~chunk * tile**2 floats).
_CHUNK = 64
#: Slack in the geometric offset test, far below any weight that matters.
_SLACK = 1e-4


def _tile_offsets(theta: torch.Tensor, l_max: float) -> list[tuple[int, int]]:
    """Integer offsets (dy, dx) that can get a non-zero weight from some pixel of a tile.

    Args:
        theta: directions of the tile's non-zero vectors, radians in [0, pi) (a line has no sign).
        l_max: longest segment length L in the tile.

    Returns:
        (dy, dx) pairs, the centre (0, 0) first.
    """
    reach = math.hypot(l_max / 2 + 0.5, 1.0)  # |q| of the farthest possibly non-zero tap
    radius = math.ceil(reach)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    rho = np.hypot(dy, dx)
    keep = rho < reach + _SLACK
    if theta.numel():
        angles = theta.double().cpu().numpy()
        # The smallest arc (on the circle of lines, period pi) holding every direction of the tile:
        # either [min, max] of angles in [0, pi), or of angles in [-pi/2, pi/2) when they straddle 0.
        folded = np.where(angles >= math.pi / 2, angles - math.pi, angles)
        lo, hi = min(((angles.min(), angles.max()), (folded.min(), folded.max())), key=lambda a: a[1] - a[0])
        phi = np.mod(np.arctan2(dy, dx) - lo, math.pi)  # offset direction, measured from lo, in [0, pi)
        span = hi - lo
        gap = np.where(phi <= span, 0.0, np.minimum(phi - span, math.pi - phi))  # angle to the arc
        keep &= rho * np.sin(np.minimum(gap, math.pi / 2)) < 1.0 + _SLACK  # |perp| < 1 for some direction
    else:
        keep &= rho == 0
    offsets = [(int(y), int(x)) for y, x in zip(dy[keep], dx[keep]) if (y, x) != (0, 0)]
    return [(0, 0), *offsets]


def _blur_one(image: torch.Tensor, flow: torch.Tensor, tile: int) -> torch.Tensor:
    """:func:`line_blur` of one (C, H, W) image with its (2, H, W) flow (float32)."""
    _, h, w = image.shape
    out = torch.empty_like(image)
    mag = torch.hypot(flow[0], flow[1])
    moving = mag > 0
    safe = torch.where(moving, mag, torch.ones_like(mag))
    dir_y = torch.where(moving, flow[0] / safe, torch.zeros_like(mag))
    dir_x = torch.where(moving, flow[1] / safe, torch.ones_like(mag))
    half = mag.clamp(min=1.0) / 2
    theta = torch.remainder(torch.atan2(dir_y, dir_x), math.pi)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            t_moving = moving[y0:y1, x0:x1]
            if not bool(t_moving.any()):
                out[:, y0:y1, x0:x1] = image[:, y0:y1, x0:x1]
                continue
            t_half = half[y0:y1, x0:x1]
            offsets = _tile_offsets(theta[y0:y1, x0:x1][t_moving], 2 * float(t_half.max()))
            r = max(max(abs(oy), abs(ox)) for oy, ox in offsets)
            rows = torch.arange(y0 - r, y1 + r, device=image.device).clamp_(0, h - 1)
            cols = torch.arange(x0 - r, x1 + r, device=image.device).clamp_(0, w - 1)
            patch = image.index_select(1, rows).index_select(2, cols)  # clamp-to-edge neighbourhood
            t_dy, t_dx = dir_y[y0:y1, x0:x1], dir_x[y0:y1, x0:x1]
            th, tw = y1 - y0, x1 - x0
            acc = torch.zeros((image.shape[0], th, tw), dtype=image.dtype, device=image.device)
            norm = torch.zeros((th, tw), dtype=image.dtype, device=image.device)
            for start in range(0, len(offsets), _CHUNK):
                chunk = offsets[start : start + _CHUNK]
                oy = torch.tensor([o[0] for o in chunk], dtype=image.dtype, device=image.device)[:, None, None]
                ox = torch.tensor([o[1] for o in chunk], dtype=image.dtype, device=image.device)[:, None, None]
                along = oy * t_dy + ox * t_dx
                perp = ox * t_dy - oy * t_dx
                tent = (1.0 - perp.abs()).clamp_(min=0.0)
                overlap = (torch.minimum(along + 0.5, t_half) - torch.maximum(along - 0.5, -t_half)).clamp_(min=0.0)
                weight = tent * overlap
                for k, (dy, dx) in enumerate(chunk):
                    shifted = patch[:, r + dy : r + dy + th, r + dx : r + dx + tw]
                    acc.addcmul_(shifted, weight[k])
                    norm += weight[k]
            out[:, y0:y1, x0:x1] = acc / norm  # norm >= 1: the centre tap always weighs 1
    return out


def line_blur(image: torch.Tensor, flow_px: torch.Tensor, tile: int = 64) -> torch.Tensor:
    """Blur an image with a per-pixel anti-aliased line kernel along a motion flow (Gong et al. CVPR'17).

    ``B(p) = sum_q k_p(q) S(p + q)`` with ``k_p(q) ~ tent(perp) * overlap(along)``, normalised to sum 1:
    ``along`` / ``perp`` are the coordinates of the offset ``q`` along / across the direction of
    ``flow(p)``, ``tent(d) = max(0, 1 - |d|)``, and ``overlap(a)`` is the length of
    ``[a - 1/2, a + 1/2]`` inside the segment ``[-L/2, L/2]``, ``L = max(|flow(p)|, 1)``. Neighbours
    outside the image are clamped to the edge. See the module docstring.

    Args:
        image: (C, H, W) or (B, C, H, W) float image (any range; the result is a convex combination).
        flow_px: (2, H, W) or (B, 2, H, W) full blur vector in pixels, channel 0 vertical (rows, down
            positive), channel 1 horizontal; the sign of a vector does not matter.
        tile: side of the square spatial tiles; each tile's window follows its own longest vector.

    Returns:
        The blurred image, same shape, dtype (float) and device as ``image``.
    """
    if image.ndim not in (3, 4) or flow_px.ndim != image.ndim:
        raise ValueError(
            f"image and flow_px must both be (C, H, W) or (B, C, H, W), got {tuple(image.shape)} and "
            f"{tuple(flow_px.shape)}"
        )
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor, got {image.dtype}")
    single = image.ndim == 3
    images, flows = (image[None], flow_px[None]) if single else (image, flow_px)
    if flows.shape[1] != 2 or flows.shape[0] != images.shape[0] or flows.shape[2:] != images.shape[2:]:
        raise ValueError(f"flow_px must be (B, 2, H, W) matching image {tuple(images.shape)}, got {tuple(flows.shape)}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not bool(torch.isfinite(flows).all()):
        raise ValueError("flow_px holds NaN or infinite values")
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    flows = flows.to(device=work.device, dtype=work.dtype)
    out = torch.stack([_blur_one(work[b], flows[b], tile) for b in range(work.shape[0])]).to(images.dtype)
    return out[0] if single else out
