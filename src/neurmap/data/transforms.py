"""Training augmentations on sample dicts: random crop and flips as tensor ops, and opt-in camera degradations
of the blurry image (albumentations).

:class:`PairedTransform` gives the blurry and sharp images of a pair the *same* crop and flips (the
authors' loaders: a random 256 px crop and a horizontal flip shared by B and S);
:class:`SingleTransform` augments the one image of an unpaired sample, independently of every other
sample. Images smaller than the crop are reflect-padded first (with one warning per transform).

Ground-truth motion (``motion``, (2, H, W) full blur vectors in px, channel 0 vertical, canonical: channel 1
>= 0), where a paired training set has it, gets the same crop and flips. A flip mirrors the field *and* the
vectors: one flip (either axis) maps a canonical (v, h) to (-v, h) up to the sign a line blur ignores, two
flips leave it unchanged. Evaluation runs on whole images and is not augmented.

Randomness comes from torch's generator, which DataLoader seeds per worker and Lightning's
``seed_everything`` seeds in the main process, so crops are reproducible, differ across workers and resume
exactly. Crop and flips are slicing and ``torch.flip`` on (C, H, W) tensors, with no HWC round trip: 25x the
samples per second of the same crop and flips through albumentations on 720p pairs (1 thread; the figures are in
reports/benchmarks.md). :class:`Degradation` (off unless ``p > 0``) adds what real blurry photographs also carry,
sensor noise and JPEG compression, to the blurry image of a cropped sample only: albumentations' GaussNoise and
ImageCompression, seeded from torch's generator like the crop.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Degradation", "PairedTransform", "SingleTransform"]

IMAGE_KEYS = ("blur", "sharp")


def _check_image(image: Any, key: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(
            f"sample[{key!r}] must be a (C, H, W) tensor, got {type(image).__name__} "
            f"{tuple(getattr(image, 'shape', ()))}"
        )
    return image


def _flip_motion(motion: torch.Tensor, flips: int) -> torch.Tensor:
    """Canonical motion after ``flips`` mirror flips of the image: an odd number negates the vertical
    component of a canonical (v, h) (the mirrored vector is (v, -h) or (-v, h), the same line blur)."""
    if flips % 2 == 0:
        return motion
    out = motion.clone()
    out[0] = -out[0]
    return out


class Degradation:
    """Gaussian noise, then JPEG compression, each with probability ``p``, on a (3, H, W) image in [0, 1].

    Args:
        noise_std: range of the noise's standard deviation, in units of the [0, 1] range.
        jpeg_quality: range of the JPEG quality (1-100).
        p: probability of each degradation; 0 turns the whole transform off (no conversion at all).
    """

    def __init__(self, noise_std: tuple[float, float], jpeg_quality: tuple[int, int], p: float) -> None:
        import albumentations as A

        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"degrade.p must be in [0, 1], got {p}")
        self.p = float(p)
        self._compose = A.Compose(
            [
                A.GaussNoise(std_range=(float(noise_std[0]), float(noise_std[1])), p=self.p),
                A.ImageCompression(quality_range=(int(jpeg_quality[0]), int(jpeg_quality[1])), p=self.p),
            ]
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return image
        self._compose.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        hwc = image.permute(1, 2, 0).contiguous().numpy()
        out = self._compose(image=hwc)["image"]
        return torch.from_numpy(out).permute(2, 0, 1).float().clamp(0.0, 1.0).contiguous()


class _DictTransform:
    """Shared crop + flips applied with one set of random parameters to the images of a sample."""

    expected_images: tuple[int, ...] = ()

    def __init__(
        self,
        crop_size: int | None = None,
        hflip: bool = True,
        vflip: bool = False,
        degrade: Degradation | None = None,
    ) -> None:
        if crop_size is not None and int(crop_size) < 1:
            raise ValueError(f"crop_size must be a positive int or None, got {crop_size}")
        self.crop_size = None if crop_size is None else int(crop_size)
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.degrade = degrade
        self._warned = False

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (C, H, W) up to the crop size by reflection (OpenCV's BORDER_REFLECT_101, torch's ``reflect``),
        repeated while the pad is larger than the image; a 1-px side is replicated."""
        while True:
            h, w = x.shape[-2:]
            ph, pw = max(0, self.crop_size - h), max(0, self.crop_size - w)
            if not ph and not pw:
                return x
            mode = "reflect" if min(h, w) > 1 else "replicate"
            if mode == "reflect":
                ph, pw = min(ph, h - 1), min(pw, w - 1)
            top, left = ph // 2, pw // 2
            x = F.pad(x[None], (left, pw - left, top, ph - top), mode=mode)[0]

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment ``sample`` (float (3, H, W) tensors under ``blur``/``sharp``, optional (2, H, W) ``motion``);
        returns a new dict."""
        keys = [k for k in IMAGE_KEYS if k in sample]
        if len(keys) not in self.expected_images:
            raise ValueError(
                f"{type(self).__name__} expects {' or '.join(map(str, self.expected_images))} of "
                f"the images {IMAGE_KEYS}, got keys {sorted(sample)}"
            )
        images = [_check_image(sample[k], k) for k in keys]
        if len({tuple(x.shape) for x in images}) > 1:
            raise ValueError(f"images of one sample must share a shape, got {[tuple(x.shape) for x in images]}")
        motion = sample.get("motion")
        if motion is not None and (
            not isinstance(motion, torch.Tensor)
            or motion.ndim != 3
            or motion.shape[0] != 2
            or tuple(motion.shape[1:]) != tuple(images[0].shape[1:])
        ):
            raise ValueError(
                f"sample['motion'] must be a (2, H, W) tensor matching the images {tuple(images[0].shape[1:])}, "
                f"got {tuple(getattr(motion, 'shape', ()))}"
            )
        fields = images + ([motion] if motion is not None else [])
        if self.crop_size is not None:
            h, w = images[0].shape[-2:]
            if min(h, w) < self.crop_size:
                if not self._warned:
                    warnings.warn(
                        f"image {h}x{w} is smaller than crop_size={self.crop_size}: padded by reflection",
                        stacklevel=2,
                    )
                    self._warned = True
                fields = [self._pad(x) for x in fields]
                h, w = fields[0].shape[-2:]
            top = int(torch.randint(0, h - self.crop_size + 1, ()))
            left = int(torch.randint(0, w - self.crop_size + 1, ()))
            fields = [x[:, top : top + self.crop_size, left : left + self.crop_size] for x in fields]
        flips = 0
        for enabled, dim in ((self.hflip, -1), (self.vflip, -2)):
            if enabled and bool(torch.rand(()) < 0.5):
                fields = [torch.flip(x, dims=(dim,)) for x in fields]
                flips += 1
        out = dict(sample)
        for key, x in zip(keys, fields):
            out[key] = x.contiguous()
        if self.degrade is not None and "blur" in out:
            out["blur"] = self.degrade(out["blur"])
        if motion is not None:
            out["motion"] = _flip_motion(fields[-1].contiguous(), flips)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, hflip={self.hflip}, vflip={self.vflip})"


class PairedTransform(_DictTransform):
    """Same random crop and flips for ``blur`` and ``sharp`` of a paired sample.

    Args:
        crop_size: side of the square random crop in px; None = no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip upside-down with probability 0.5.
        degrade: camera noise and JPEG on the blurry image after the crop (:class:`Degradation`); None = off.

    Call: ``{"blur": (3, H, W), "sharp": (3, H, W), "motion"?: (2, H, W), ...} -> same keys, cropped``.
    """

    expected_images = (2,)


class SingleTransform(_DictTransform):
    """Random crop and flips for the one image (``blur`` or ``sharp``) of an unpaired sample.

    Args:
        crop_size: side of the square random crop in px; None = no crop.
        hflip: flip left-right with probability 0.5.
        vflip: flip upside-down with probability 0.5.
        degrade: camera noise and JPEG on a ``blur`` sample after the crop (:class:`Degradation`); None = off.

    Call: ``{"blur": (3, H, W), ...}`` or ``{"sharp": ...}`` -> same keys, (3, crop, crop).
    """

    expected_images = (1,)
