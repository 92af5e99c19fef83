"""Training augmentations on sample dicts: random crop and flips (albumentations).

:class:`PairedTransform` gives the blurry and sharp images of a pair the *same* crop and flips (the
authors' loaders: a random 256 px crop and a horizontal flip shared by B and S, notes §5);
:class:`SingleTransform` augments the one image of an unpaired sample, independently of every other
sample. Images smaller than the crop are reflect-padded first (with one warning per transform).

Only training sets are augmented: flipping would also have to flip ground-truth motion, and evaluation
runs on whole images. A sample carrying ``motion`` is therefore rejected.

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


def _to_hwc(image: torch.Tensor, key: str) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(
            f"sample[{key!r}] must be a (C, H, W) tensor, got {type(image).__name__} "
            f"{tuple(getattr(image, 'shape', ()))}"
        )
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


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
        self._compose = A.Compose(ops, additional_targets={"image1": "image"})
        self._warned = False

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment ``sample`` (float (3, H, W) tensors under ``blur``/``sharp``); returns a new dict."""
        if "motion" in sample:
            raise ValueError("transforms are for training samples only; got a sample with 'motion' (val/test data)")
        keys = [k for k in IMAGE_KEYS if k in sample]
        if len(keys) not in self.expected_images:
            raise ValueError(
                f"{type(self).__name__} expects {' or '.join(map(str, self.expected_images))} of "
                f"the images {IMAGE_KEYS}, got keys {sorted(sample)}"
            )
        arrays = [_to_hwc(sample[k], k) for k in keys]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"images of one sample must share a shape, got {[a.shape for a in arrays]}")
        h, w = arrays[0].shape[:2]
        if self.crop_size is not None and min(h, w) < self.crop_size and not self._warned:
            warnings.warn(
                f"image {h}x{w} is smaller than crop_size={self.crop_size}: padded by reflection",
                stacklevel=2,
            )
            self._warned = True
        self._compose.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        targets = {"image": arrays[0]} | ({"image1": arrays[1]} if len(arrays) > 1 else {})
        result = self._compose(**targets)
        out = dict(sample)
        for key, target in zip(keys, ("image", "image1")):
            out[key] = _to_chw(result[target])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, hflip={self.hflip}, vflip={self.vflip})"


class PairedTransform(_DictTransform):
    """Same random crop and flips for ``blur`` and ``sharp`` of a paired sample.

    Args:
        crop_size: side of the square random crop in px; None = no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip upside-down with probability 0.5.

    Call: ``{"blur": (3, H, W), "sharp": (3, H, W), ...} -> same keys, (3, crop, crop)``.
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
