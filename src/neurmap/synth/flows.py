"""Motion-flow families for the built-in data, and blurring a sharp image along a flow.

A flow is the per-pixel *full* linear blur vector in pixels, float32 (2, H, W): channel 0 vertical
(rows, down positive), channel 1 horizontal (columns), the layout of :mod:`neurmap.nets.reblur`.
A blur along ``v`` equals one along ``-v``; :func:`canonicalize_flow` picks the representative with a
non-negative horizontal component (Gong et al.'s ``uv_half``, NeurMAP's ``vec_norm``).

Two families:

* :func:`uniform_linear_flow`: one straight blur for the whole image (random angle and length), a
  stand-in for the roughly uniform blur of GoPro-style paired training data.
* :func:`camera_flow`: the spatially varying camera-motion model of Gong et al. (CVPR'17), which made
  NeurMAP's "kernel-synthesized" set (Gong's ``script_data_gen.m``): x/y translation with a
  linear acceleration ramp, in-plane rotation about a shifted centre and zoom, summed. Differences from
  the released MATLAB: the rotation field is exactly tangential (theirs carries a ``%????``), flows are
  not rounded to integers, and the default ranges are scaled to ~100 px images (theirs: 27 px translation
  on BSD500-size images).

:func:`apply_blur` synthesises the blurry image with the same operator R the network uses for reblurring
(:func:`neurmap.nets.reblur.reblur`), so the built-in data follow the paper's blur model exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from neurmap.nets.reblur import canonicalize_motion, reblur

__all__ = ["apply_blur", "camera_flow", "canonicalize_flow", "uniform_linear_flow"]


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def uniform_linear_flow(
    size: int | Sequence[int], rng: np.random.Generator, length_range: Sequence[float] = (3.0, 12.0)
) -> np.ndarray:
    """A spatially uniform straight blur with a random direction and length.

    Args:
        size: ``(H, W)`` or one int.
        rng: NumPy random generator.
        length_range: (low, high) full blur length in pixels, drawn uniformly.

    Returns:
        (2, H, W) float32 flow in pixels; the angle is uniform in [0, pi), so channel 0 is >= 0.
    """
    h, w = _hw(size)
    lo, hi = (float(v) for v in length_range)
    if not 0 <= lo <= hi:
        raise ValueError(f"length_range must be (low, high) with 0 <= low <= high, got {tuple(length_range)}")
    length = rng.uniform(lo, hi)
    angle = rng.uniform(0.0, math.pi)
    vec = np.array([length * math.sin(angle), length * math.cos(angle)], np.float32)
    return np.broadcast_to(vec[:, None, None], (2, h, w)).copy()


def camera_flow(
    size: int | Sequence[int],
    rng: np.random.Generator,
    tx_max: float = 8.0,
    ty_max: float = 8.0,
    acc_max: float = 0.3,
    rot_max: float = math.pi / 70,
    center_shift_max: float = 4.0,
    tz_max: float = 6e-3,
) -> np.ndarray:
    """Gong et al. (CVPR'17) camera-motion flow: translation ramps + in-plane rotation + zoom.

    Every parameter is drawn uniformly in ``[-max, max]``:

    * x-translation ``tx`` scaled by a ramp across columns from ``1 - acc_x/2`` (left) to ``1 + acc_x/2``
      (right); y-translation ``ty`` likewise across rows from the bottom up with its own ``acc_y``;
    * rotation by ``rot`` about the image centre shifted by up to ``center_shift_max`` px per axis: a
      tangential displacement of magnitude ``tan(rot) * r``, r = distance to that centre in px;
    * zoom ``tz``: a radial displacement of ``tz * r**1.5`` px about the same centre.

    Args:
        size: ``(H, W)`` or one int.
        rng: NumPy random generator.
        tx_max: largest horizontal translation blur in px.
        ty_max: largest vertical translation blur in px.
        acc_max: largest acceleration ramp (relative change of the translation across the image).
        rot_max: largest in-plane rotation in radians (Gong's strong setting: pi / 70).
        center_shift_max: largest shift of the rotation/zoom centre from the image centre, px per axis.
        tz_max: largest zoom coefficient (px per px**1.5).

    Returns:
        (2, H, W) float32 flow in pixels (channel 0 vertical, channel 1 horizontal), not canonicalised.
    """
    h, w = _hw(size)
    for name, value in (
        ("tx_max", tx_max),
        ("ty_max", ty_max),
        ("acc_max", acc_max),
        ("rot_max", rot_max),
        ("center_shift_max", center_shift_max),
        ("tz_max", tz_max),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    tx, ty, acc_x, acc_y, rot, shift_y, shift_x, tz = rng.uniform(-1.0, 1.0, 8) * np.array(
        [tx_max, ty_max, acc_max, acc_max, rot_max, center_shift_max, center_shift_max, tz_max]
    )
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    ramp_x = (1 - acc_x / 2) + acc_x * cols / max(w - 1, 1)
    ramp_y = (1 - acc_y / 2) + acc_y * (h - 1 - rows) / max(h - 1, 1)
    oy = rows - ((h - 1) / 2 + shift_y)
    ox = cols - ((w - 1) / 2 + shift_x)
    radial = tz * np.sqrt(np.hypot(oy, ox))  # tz * r**1.5 along the unit vector (oy, ox) / r
    t = math.tan(rot)
    flow_y = ty * ramp_y + t * ox + radial * oy
    flow_x = tx * ramp_x - t * oy + radial * ox
    return np.stack(np.broadcast_arrays(flow_y, flow_x)).astype(np.float32)


def canonicalize_flow(flow: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Negate the vectors whose horizontal component (channel 1) is negative.

    Args:
        flow: (2, H, W) or (B, 2, H, W) flow, tensor or array.

    Returns:
        The same type and shape, with channel 1 >= 0 everywhere.
    """
    if isinstance(flow, np.ndarray):
        return canonicalize_flow(torch.from_numpy(flow)).numpy()
    if flow.ndim == 3:
        return canonicalize_motion(flow[None])[0]
    return canonicalize_motion(flow)


def apply_blur(
    sharp: torch.Tensor,
    flow_px: torch.Tensor,
    alpha: float = 40.0,
    padding_mode: str = "border",
    n_samples: int | None = None,
) -> torch.Tensor:
    """Blur a sharp image along a per-pixel linear flow with the reblurring operator R.

    R averages ``n_samples`` bilinear samples spread evenly over the segment ``[-v/2, v/2]`` around each
    pixel. By default ``n_samples = 2 * ceil(max |v|) + 1`` (odd, so the centre is sampled): the samples
    are at most half a pixel apart, so the result approximates the continuous line integral without
    visible ghosting; a zero flow gives one sample, i.e. the sharp image itself.

    Args:
        sharp: (3, H, W) or (B, 3, H, W) image in [0, 1].
        flow_px: (2, H, W) or (B, 2, H, W) full blur vectors in pixels (channel 0 vertical).
        alpha: pixels per motion unit passed to R (``motion = flow_px / alpha``); the blur itself does not
            depend on it.
        padding_mode: outside-image values, see :func:`neurmap.nets.reblur.reblur` (``border``: as Gong).
        n_samples: samples along each trajectory; None = the rule above.

    Returns:
        Blurred image of the shape of ``sharp``, float32 in [0, 1].
    """
    if sharp.ndim not in (3, 4) or flow_px.ndim != sharp.ndim:
        raise ValueError(
            f"sharp and flow_px must both be (C, H, W) or (B, C, H, W), got {tuple(sharp.shape)} "
            f"and {tuple(flow_px.shape)}"
        )
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    single = sharp.ndim == 3
    image, flow = (sharp[None], flow_px[None]) if single else (sharp, flow_px)
    if n_samples is None:
        longest = float(torch.hypot(flow[:, 0], flow[:, 1]).max()) if flow.numel() else 0.0
        n_samples = 2 * math.ceil(longest) + 1
    out = reblur(image.float(), flow.float() / alpha, alpha, n_samples, padding_mode).clamp_(0.0, 1.0)
    return out[0] if single else out
