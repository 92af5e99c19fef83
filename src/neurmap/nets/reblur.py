"""Parameter-free, differentiable reblurring module R.

NeurMAP models a blurry image as the average of a sharp image sampled along a straight,
per-pixel trajectory (paper eq. 4; the authors' ``BlurNet``)::

    R(S, m)(p) = 1/N * sum_k S(p + t_k * alpha * m(p)),   t_k = linspace(-1/2, 1/2, N)

``m`` is a motion map of shape (B, 2, H, W) in *normalised units*: channel 0 is the vertical (row)
component and channel 1 the horizontal (column) component, and ``alpha * m`` is the full blur
vector in pixels. With ``alpha = 40`` and ``N = 15`` this is exactly the authors' sampling grid
(offsets ``20 k / 7 * m`` for ``k = -7..7``). The samples are symmetric around the pixel, so the
sign of ``m`` does not matter; :func:`canonicalize_motion` removes that ambiguity before motion maps
are compared or subtracted.

Sampling uses :func:`kornia.geometry.transform.remap` (bilinear, ``align_corners=True``), one call
per sample, which is faster and N times lighter in memory than one batched call on CPU. The module
runs outside autocast and lifts half/bfloat16 inputs to float32: reduced-precision ``grid_sample`` is
inaccurate, on CPU even wrong (float64 stays float64, for gradcheck).
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import remap
from torch import nn

__all__ = ["Reblur", "canonicalize_motion", "reblur"]

_PADDING_MODES = ("zeros", "border", "reflection")


def canonicalize_motion(motion: torch.Tensor) -> torch.Tensor:
    """Flip motion vectors into the half-plane whose horizontal component is non-negative.

    A linear blur along ``v`` equals one along ``-v``; the authors' ``vec_norm`` therefore negates
    both components wherever the horizontal one (channel 1) is negative. The flip is a sign change,
    so gradients pass through. Maps with more than two channels (e.g. quadratic trajectories) are
    returned unchanged.

    Args:
        motion: (B, C, H, W) motion map; C == 2 is canonicalised.

    Returns:
        Tensor of the same shape.
    """
    if motion.ndim != 4:
        raise ValueError(f"motion must be (B, C, H, W), got shape {tuple(motion.shape)}")
    if motion.shape[1] != 2:
        return motion
    sign = torch.where(motion[:, 1:2] < 0, -1.0, 1.0).to(motion.dtype)
    return motion * sign


def _check_settings(n_samples: int, padding_mode: str) -> None:
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")


def _check_inputs(image: torch.Tensor, motion: torch.Tensor) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if motion.ndim != 4 or motion.shape[1] != 2:
        raise ValueError(f"motion must be (B, 2, H, W), got shape {tuple(motion.shape)}")
    if image.shape[0] != motion.shape[0] or image.shape[-2:] != motion.shape[-2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and motion {tuple(motion.shape)} must share batch and spatial size"
        )


def reblur(
    image: torch.Tensor,
    motion: torch.Tensor,
    alpha: float,
    n_samples: int = 15,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Blur ``image`` along the per-pixel linear trajectories given by ``motion``.

    Args:
        image: (B, C, H, W) image, any range.
        motion: (B, 2, H, W) motion in normalised units (channel 0 vertical, channel 1 horizontal).
        alpha: pixels per motion unit; the full blur vector is ``alpha * motion``.
        n_samples: number of equally weighted samples along the trajectory (>= 1; odd keeps the centre).
        padding_mode: value outside the image: ``border`` (clamp to edge, as Gong et al.'s blur
            synthesis), ``zeros`` (the authors' deformable-conv sampler, which darkens borders) or
            ``reflection``.

    Returns:
        (B, C, H, W) reblurred image, float32 (float64 if an input is float64).

    Example:
        >>> img = torch.rand(1, 3, 8, 8)
        >>> torch.allclose(reblur(img, torch.zeros(1, 2, 8, 8), alpha=40.0), img, atol=1e-5)
        True
    """
    _check_settings(n_samples, padding_mode)
    return _reblur(image, motion, alpha, n_samples, padding_mode)


def _reblur(image: torch.Tensor, motion: torch.Tensor, alpha: float, n_samples: int, padding_mode: str) -> torch.Tensor:
    """:func:`reblur` with its settings already checked (the module checks them once, when it is built)."""
    _check_inputs(image, motion)
    with torch.autocast(device_type=image.device.type, enabled=False):
        dtype = torch.float64 if torch.float64 in (image.dtype, motion.dtype) else torch.float32
        image = image.to(dtype)
        motion = motion.to(dtype)
        b, _, h, w = image.shape
        rows = torch.arange(h, device=image.device, dtype=dtype).view(1, h, 1)
        cols = torch.arange(w, device=image.device, dtype=dtype).view(1, 1, w)
        dy = alpha * motion[:, 0]
        dx = alpha * motion[:, 1]
        if n_samples == 1:
            return image.clone()
        out = torch.zeros_like(image)
        for k in range(n_samples):
            t = k / (n_samples - 1) - 0.5
            map_y = (rows + t * dy).expand(b, h, w)
            map_x = (cols + t * dx).expand(b, h, w)
            out = out + remap(image, map_x, map_y, mode="bilinear", padding_mode=padding_mode, align_corners=True)
        return out / n_samples


class Reblur(nn.Module):
    """Module form of :func:`reblur`; it has no parameters and no buffers.

    Args:
        alpha: pixels per motion unit (the paper's alpha = 40: the blur-size upper limit).
        n_samples: samples along each trajectory (15 in the paper and the authors' code).
        padding_mode: see :func:`reblur`.
    """

    def __init__(self, alpha: float = 40.0, n_samples: int = 15, padding_mode: str = "border") -> None:
        super().__init__()
        _check_settings(n_samples, padding_mode)
        self.alpha = float(alpha)
        self.n_samples = int(n_samples)
        self.padding_mode = padding_mode

    def forward(self, image: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return _reblur(image, motion, self.alpha, self.n_samples, self.padding_mode)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, n_samples={self.n_samples}, padding_mode={self.padding_mode!r}"
