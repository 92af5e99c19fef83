"""Training augmentations on sample dicts: random crop and flips (albumentations).

:class:`PairedTransform` gives the blurry and sharp images of a pair the *same* crop and flips (the
authors' loaders: a random 256 px crop and a horizontal flip shared by B and S);
:class:`SingleTransform` augments the one image of an unpaired sample, independently of every other
sample. Images smaller than the crop are reflect-padded first (with one warning per transform).

Ground-truth motion (``motion``, (2, H, W) full blur vectors in px, channel 0 vertical, canonical: channel 1
>= 0), where a paired training set has it, gets the same crop and flips. A flip mirrors the field *and* the
vectors: one flip (either axis) maps a canonical (v, h) to (-v, h) up to the sign a line blur ignores, two
flips leave it unchanged. Evaluation runs on whole images and is not augmented.

Randomness: each call reseeds albumentations from torch's generator, which DataLoader seeds per worker
and Lightning's ``seed_everything`` seeds in the main process, so crops are reproducible and differ
across workers (albumentations' own state would be duplicated by every forked worker).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import warnings  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["PairedTransform", "SingleTransform"]

IMAGE_KEYS = ("blur", "sharp")
_FLIPS = ("HorizontalFlip", "VerticalFlip")


def _to_hwc(image: torch.Tensor, key: str) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(
            f"sample[{key!r}] must be a (C, H, W) tensor, got {type(image).__name__} "
            f"{tuple(getattr(image, 'shape', ()))}"
        )
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _flip_motion(motion: torch.Tensor, flips: int) -> torch.Tensor:
    """Canonical motion after ``flips`` mirror flips of the image: an odd number negates the vertical
    component of a canonical (v, h) (the mirrored vector is (v, -h) or (-v, h), the same line blur)."""
    if flips % 2 == 0:
        return motion
    out = motion.clone()
    out[0] = -out[0]
    return out


class _DictTransform:
    """Shared crop + flips applied with one set of random parameters to the images of a sample."""

    expected_images: tuple[int, ...] = ()

    def __init__(self, crop_size: int | None = None, hflip: bool = True, vflip: bool = False) -> None:
        if crop_size is not None and int(crop_size) < 1:
            raise ValueError(f"crop_size must be a positive int or None, got {crop_size}")
        self.crop_size = None if crop_size is None else int(crop_size)
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        ops: list[A.BasicTransform] = []
        if self.crop_size is not None:
            ops.append(
                A.RandomCrop(
                    self.crop_size,
                    self.crop_size,
                    pad_if_needed=True,
                    border_mode=cv2.BORDER_REFLECT_101,
                    p=1.0,
                )
            )
        if self.hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if self.vflip:
            ops.append(A.VerticalFlip(p=0.5))
        targets = {"image1": "image", "motion": "image"}
        self._compose = A.Compose(ops, additional_targets=targets, save_applied_params=True)
        self._warned = False

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment ``sample`` (float (3, H, W) tensors under ``blur``/``sharp``, optional (2, H, W) ``motion``);
        returns a new dict."""
        keys = [k for k in IMAGE_KEYS if k in sample]
        if len(keys) not in self.expected_images:
            raise ValueError(
                f"{type(self).__name__} expects {' or '.join(map(str, self.expected_images))} of "
                f"the images {IMAGE_KEYS}, got keys {sorted(sample)}"
            )
        arrays = [_to_hwc(sample[k], k) for k in keys]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"images of one sample must share a shape, got {[a.shape for a in arrays]}")
        motion = sample.get("motion")
        if motion is not None and (
            not isinstance(motion, torch.Tensor)
            or motion.ndim != 3
            or motion.shape[0] != 2
            or tuple(motion.shape[1:]) != arrays[0].shape[:2]
        ):
            raise ValueError(
                f"sample['motion'] must be a (2, H, W) tensor matching the images {arrays[0].shape[:2]}, got "
                f"{tuple(getattr(motion, 'shape', ()))}"
            )
        h, w = arrays[0].shape[:2]
        if self.crop_size is not None and min(h, w) < self.crop_size and not self._warned:
            warnings.warn(
                f"image {h}x{w} is smaller than crop_size={self.crop_size}: padded by reflection",
                stacklevel=2,
            )
            self._warned = True
        self._compose.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        targets = {"image": arrays[0]} | ({"image1": arrays[1]} if len(arrays) > 1 else {})
        if motion is not None:
            targets["motion"] = _to_hwc(motion, "motion")
        result = self._compose(**targets)
        out = dict(sample)
        for key, target in zip(keys, ("image", "image1")):
            out[key] = _to_chw(result[target])
        if motion is not None:
            flips = sum(name in _FLIPS for name, _ in result["applied_transforms"])
            out["motion"] = _flip_motion(_to_chw(result["motion"]), flips)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, hflip={self.hflip}, vflip={self.vflip})"


class PairedTransform(_DictTransform):
    """Same random crop and flips for ``blur`` and ``sharp`` of a paired sample.

    Args:
        crop_size: side of the square random crop in px; None = no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip upside-down with probability 0.5.

    Call: ``{"blur": (3, H, W), "sharp": (3, H, W), "motion"?: (2, H, W), ...} -> same keys, cropped``.
    """

    expected_images = (2,)


class SingleTransform(_DictTransform):
    """Random crop and flips for the one image (``blur`` or ``sharp``) of an unpaired sample.

    Args:
        crop_size: side of the square random crop in px; None = no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip upside-down with probability 0.5.

    Call: ``{"blur": (3, H, W), ...}`` or ``{"sharp": ...}`` -> same keys, (3, crop, crop).
    """

    expected_images = (1,)
