"""On-the-fly blur with ground-truth motion, drawn from any folder of sharp photos: M's pretraining data.

Every sample is a random crop of a sharp photo, blurred along a freshly drawn motion field with the per-pixel
line-kernel operator of :func:`neurmap.synth.line_blur.line_blur`, and returned with that field. Nothing is
written to disk, so one folder of photos gives an unbounded stream of training pairs. Two families:

* ``linear``: one straight blur for the whole crop, angle uniform in [0, pi), length uniform in
  ``length`` px (:func:`neurmap.synth.flows.uniform_linear_flow`);
* ``smooth``: a spatially varying field: a base vector (angle and length drawn as above) plus independent
  per-node perturbations on a coarse ``grid`` x ``grid`` lattice (``angle_jitter`` radians, relative
  ``length_jitter``), bicubically interpolated over the crop (:func:`smooth_field`).

Neither family is Gong et al.'s camera-motion model (translation ramps, rotation, zoom), so an M pretrained
here has not seen the family of ``neurmap.synthesize`` data.

Determinism: ``deterministic=True`` (validation) draws sample ``i`` from ``default_rng([seed, i])``, so a val
set is the same images every time. Otherwise (training) a sample draws from torch's generator, which the
training loaders seed per sample (:mod:`neurmap.data.datamodule`), so runs are reproducible and resumable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neurmap.data.io import list_images, read_image
from neurmap.synth.flows import canonicalize_flow, uniform_linear_flow
from neurmap.synth.line_blur import line_blur

__all__ = ["RandomBlur", "smooth_field"]

_FAMILIES = ("linear", "smooth")


def _length_range(length: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in length)
    if not 0 <= lo <= hi:
        raise ValueError(f"length must be (low, high) px with 0 <= low <= high, got {tuple(length)}")
    return lo, hi


def smooth_field(
    size: tuple[int, int],
    rng: np.random.Generator,
    length: Sequence[float],
    grid: Sequence[int] = (2, 4),
    angle_jitter: float = 0.5,
    length_jitter: float = 0.3,
) -> np.ndarray:
    """A smoothly varying motion field: base vector + per-node perturbations on a coarse lattice, bicubic.

    Args:
        size: (H, W) of the field.
        rng: NumPy generator.
        length: (low, high) px: the base length is uniform in it; node lengths are clipped to it.
        grid: (low, high) lattice nodes per side, drawn uniformly (2 = a linear ramp across the crop).
        angle_jitter: std of each node's angle around the base angle, radians.
        length_jitter: std of each node's length relative to the base length.

    Returns:
        (2, H, W) float32 full blur vectors in px, channel 0 vertical, channel 1 horizontal.
    """
    lo, hi = _length_range(length)
    g_lo, g_hi = (int(v) for v in grid)
    if not 2 <= g_lo <= g_hi:
        raise ValueError(f"grid must be (low, high) with 2 <= low <= high, got {tuple(grid)}")
    nodes = int(rng.integers(g_lo, g_hi + 1))
    base_length, base_angle = rng.uniform(lo, hi), rng.uniform(0.0, math.pi)
    angles = base_angle + angle_jitter * rng.standard_normal((nodes, nodes))
    lengths = np.clip(base_length * (1.0 + length_jitter * rng.standard_normal((nodes, nodes))), lo, hi)
    lattice = torch.from_numpy(np.stack([lengths * np.sin(angles), lengths * np.cos(angles)]).astype(np.float32))
    field = F.interpolate(lattice[None], size=tuple(size), mode="bicubic", align_corners=True)[0]
    return field.numpy()


class RandomBlur(Dataset):
    """Random crops of sharp photos under freshly drawn motion blur, with the motion: ``{"blur", "sharp",
    "motion", "name"}`` (images (3, S, S) in [0, 1]; motion (2, S, S) canonical full blur vectors in px).

    Args:
        root: folder of sharp images (any format OpenCV reads, searched recursively).
        samples: length of one pass (the stream itself is unbounded).
        crop_size: side S of the crops; photos smaller than S plus the blur margin are reflect-padded.
        length: (low, high) full blur length in px.
        families: family name -> relative frequency (``linear``, ``smooth``).
        smooth: keyword arguments of :func:`smooth_field` besides size, rng and length.
        noise_std: Gaussian noise std added to the blurry image (then clipped), 0 = none.
        deterministic: sample ``i`` is drawn from ``default_rng([seed, i])`` (val sets) instead of torch's
            per-sample generator (training).
        seed: the deterministic sets' seed.
        flips: random horizontal/vertical flips and 90-degree turns of the sharp crop before blurring.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        samples: int,
        crop_size: int,
        length: Sequence[float],
        families: Mapping[str, float],
        smooth: Mapping[str, Any] | None = None,
        noise_std: float = 0.0,
        deterministic: bool = False,
        seed: int = 0,
        flips: bool = True,
    ) -> None:
        if samples < 1 or crop_size < 8:
            raise ValueError(f"samples must be >= 1 and crop_size >= 8, got {samples} and {crop_size}")
        self.length = _length_range(length)
        unknown = sorted(set(families) - set(_FAMILIES))
        if unknown or not families:
            raise ValueError(f"families: unknown {unknown}, expected some of {list(_FAMILIES)}")
        weights = np.array([float(families[k]) for k in families])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"families: frequencies must be >= 0 and not all 0, got {dict(families)}")
        self.family_names = list(families)
        self.family_p = weights / weights.sum()
        self.smooth = dict(smooth or {})
        self.files = list_images(root, "sharp photos for on-the-fly blur")
        self.photos = [read_image(p) for p in self.files]
        self.samples, self.crop_size = int(samples), int(crop_size)
        self.noise_std, self.deterministic, self.seed, self.flips = float(noise_std), deterministic, seed, flips
        self.margin = math.ceil(self.length[1] / 2) + 1  # blurred with real pixels around the crop, not clamped

    def __len__(self) -> int:
        return self.samples

    def _rng(self, index: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng([int(self.seed), int(index)])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def _window(self, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        photo_index = int(rng.integers(len(self.photos)))
        photo = self.photos[photo_index]
        side = self.crop_size + 2 * self.margin
        _, h, w = photo.shape
        if h < side or w < side:
            ph, pw = max(0, side - h), max(0, side - w)
            photo = F.pad(photo[None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")[0]
            _, h, w = photo.shape
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        window = photo[:, y : y + side, x : x + side]
        if self.flips:
            if rng.random() < 0.5:
                window = window.flip(-1)
            if rng.random() < 0.5:
                window = window.flip(-2)
            window = torch.rot90(window, int(rng.integers(4)), dims=(-2, -1))
        return window.contiguous(), photo_index

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        window, photo_index = self._window(rng)
        size = tuple(window.shape[-2:])
        family = self.family_names[int(rng.choice(len(self.family_names), p=self.family_p))]
        if family == "linear":
            flow = uniform_linear_flow(size, rng, self.length)
        else:
            flow = smooth_field(size, rng, self.length, **self.smooth)
        flow_t = torch.from_numpy(flow)
        blurry = line_blur(window, flow_t)
        if self.noise_std > 0:
            noise = torch.from_numpy(rng.standard_normal(blurry.shape).astype(np.float32))
            blurry = (blurry + self.noise_std * noise).clamp(0.0, 1.0)
        m, s = self.margin, self.crop_size
        crop = (slice(None), slice(m, m + s), slice(m, m + s))
        return {
            "blur": blurry[crop].contiguous(),
            "sharp": window[crop].contiguous(),
            "motion": canonicalize_flow(flow_t[crop].contiguous()),
            "name": f"{self.files[photo_index].stem}_{family}_{index}",
        }
