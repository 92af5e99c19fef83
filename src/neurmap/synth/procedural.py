"""Dead-leaves images: procedural sharp images with natural-image statistics, made in memory.

The dead-leaves model (Matheron; Lee, Mumford & Huang, IJCV 2001) stacks random occluding shapes
whose sizes follow a power law ``p(r) ∝ r^-3``. That law makes the image statistics scale invariant
and gives the 1/f amplitude spectrum of natural photographs, with sharp occlusion edges at every
scale: exactly the structure motion blur destroys. It is the stand-in for GoPro/BSD photos in the
built-in data (:mod:`neurmap.synth.builtin`), so a full training run needs no download.

Rendering is painter's-order: shapes are drawn back to front into an integer label map with OpenCV
(sub-pixel centres), then every pixel looks up its shape's colour, a linear shading gradient and a
faint oriented grating (fine detail to deblur) in one vectorised pass. A 128x128 image takes a few ms.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["dead_leaves", "power_law"]

_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel shape coordinates
_SCALE = 1 << _SHIFT


def power_law(rng: np.random.Generator, n: int, lo: float, hi: float, exponent: float) -> np.ndarray:
    """Draw ``n`` values from ``p(r) ∝ r^-exponent`` on ``[lo, hi]`` by inverting the CDF.

    Args:
        rng: NumPy random generator.
        n: number of samples.
        lo: lower bound, > 0.
        hi: upper bound, >= lo.
        exponent: power-law exponent (3 is the scale-invariant dead-leaves model).

    Returns:
        (n,) float64 array in [lo, hi].
    """
    if not 0 < lo <= hi:
        raise ValueError(f"power_law needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    u = rng.random(n)
    if np.isclose(exponent, 1.0):
        return lo * (hi / lo) ** u
    e = 1.0 - exponent
    return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)


def _mean_r2(lo: float, hi: float, exponent: float) -> float:
    """E[r^2] under the power law of :func:`power_law` (closed form)."""

    def integral(k: float) -> float:  # int_lo^hi r^k dr
        return float(np.log(hi / lo)) if np.isclose(k, -1.0) else (hi ** (k + 1) - lo ** (k + 1)) / (k + 1)

    if lo == hi:
        return lo**2
    return integral(2.0 - exponent) / integral(-exponent)


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(value)}")
    return lo, hi


def dead_leaves(
    size: int | Sequence[int],
    rng: np.random.Generator,
    r_min: float = 2.0,
    r_max: float = 48.0,
    radius_exponent: float = 3.0,
    n_shapes: int | None = None,
    coverage: float = 4.0,
    rect_prob: float = 0.25,
    rect_aspect: Sequence[float] = (0.3, 1.0),
    gradient_strength: float = 0.15,
    texture_strength: float = 0.08,
    texture_freq: Sequence[float] = (0.05, 0.25),
) -> np.ndarray:
    """Render one dead-leaves image.

    Args:
        size: ``(H, W)`` or one int for a square image, in pixels.
        rng: NumPy random generator (the only source of randomness).
        r_min: smallest shape radius in pixels (> 0).
        r_max: largest shape radius in pixels (>= r_min).
        radius_exponent: exponent ``a`` of the radius law ``p(r) ∝ r^-a`` (3: scale invariant, 1/f spectrum).
        n_shapes: number of shapes; None derives it from ``coverage``.
        coverage: expected number of shapes over each pixel when ``n_shapes`` is None; a pixel shows the
            random background with probability about ``exp(-coverage)``.
        rect_prob: probability that a shape is a rotated rectangle instead of a disk.
        rect_aspect: (low, high) range of a rectangle's short/long half-side ratio; the long half-side is r.
        gradient_strength: largest linear shading across a shape (added intensity from centre to rim).
        texture_strength: largest amplitude of the oriented sinusoidal grating inside each shape.
        texture_freq: (low, high) grating frequency in cycles per pixel (keep high <= 0.5, the Nyquist limit).

    Returns:
        (H, W, 3) float32 array in [0, 1].
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 < r_min <= r_max:
        raise ValueError(f"need 0 < r_min <= r_max, got r_min={r_min}, r_max={r_max}")
    if not 0 <= rect_prob <= 1:
        raise ValueError(f"rect_prob must be in [0, 1], got {rect_prob}")
    a_lo, a_hi = _pair(rect_aspect, "rect_aspect")
    f_lo, f_hi = _pair(texture_freq, "texture_freq")
    if n_shapes is None:
        if coverage <= 0:
            raise ValueError(f"coverage must be > 0 when n_shapes is None, got {coverage}")
        shape_area = _mean_r2(r_min, r_max, radius_exponent) * (
            (1 - rect_prob) * np.pi + rect_prob * 2.0 * (a_lo + a_hi)
        )
        n_shapes = int(np.ceil(coverage * h * w / shape_area))
    if n_shapes < 0:
        raise ValueError(f"n_shapes must be >= 0, got {n_shapes}")

    # Label 0 is the background; labels 1..n are the shapes in drawing order (later = on top).
    n = n_shapes
    radius = power_law(rng, n, r_min, r_max, radius_exponent)
    cy = rng.uniform(0, h, n)
    cx = rng.uniform(0, w, n)
    is_rect = rng.random(n) < rect_prob
    aspect = rng.uniform(a_lo, a_hi, n)
    theta = rng.uniform(0, np.pi, n)

    labels = np.zeros((h, w), np.int32)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    # Rotated-rectangle corners (n, 4, 2) in (x, y), as fixed-point ints for OpenCV.
    half_l, half_s = radius, radius * aspect
    sx = np.array([1.0, -1.0, -1.0, 1.0])
    sy = np.array([1.0, 1.0, -1.0, -1.0])
    dx = half_l[:, None] * sx * cos_t[:, None] - half_s[:, None] * sy * sin_t[:, None]
    dy = half_l[:, None] * sx * sin_t[:, None] + half_s[:, None] * sy * cos_t[:, None]
    corners = np.rint(np.stack([cx[:, None] + dx, cy[:, None] + dy], axis=-1) * _SCALE).astype(np.int32)
    centres = np.rint(np.stack([cx, cy], axis=1) * _SCALE).astype(np.int64).tolist()
    radii = np.rint(radius * _SCALE).astype(np.int64).tolist()
    for i, rect in enumerate(is_rect.tolist()):
        if rect:
            cv2.fillConvexPoly(labels, corners[i], i + 1, cv2.LINE_8, _SHIFT)
        else:
            cv2.circle(labels, centres[i], radii[i], i + 1, -1, cv2.LINE_8, _SHIFT)

    # Per-label appearance: colour, linear shading, oriented grating. Background is centred on the image.
    m = n + 1
    colour = rng.random((m, 3))
    ref_y = np.concatenate([[h / 2], cy])
    ref_x = np.concatenate([[w / 2], cx])
    ref_r = np.concatenate([[max(h, w) / 2], radius])
    grad_amp = rng.uniform(0, gradient_strength, m) / ref_r
    grad_dir = rng.uniform(0, 2 * np.pi, m)
    tex_amp = rng.uniform(0, texture_strength, m)
    tex_freq = 2 * np.pi * rng.uniform(f_lo, f_hi, m)
    tex_dir = rng.uniform(0, np.pi, m)
    tex_phase = rng.uniform(0, 2 * np.pi, m)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lab = labels
    ry, rx = yy - ref_y[lab], xx - ref_x[lab]
    shade = grad_amp[lab] * (rx * np.cos(grad_dir)[lab] + ry * np.sin(grad_dir)[lab])
    proj = xx * np.cos(tex_dir)[lab] + yy * np.sin(tex_dir)[lab]
    shade += tex_amp[lab] * np.sin(tex_freq[lab] * proj + tex_phase[lab])
    image = colour[lab] + shade[..., None]
    return np.clip(image, 0.0, 1.0).astype(np.float32)
