"""Built-in training and evaluation sets: dead-leaves images blurred by synthetic motion flows.

Nothing is read from disk or downloaded: every set renders its images in memory when constructed
(a few hundred ~100 px images take seconds), which makes ``python -m neurmap.train`` runnable anywhere
and gives evaluation sets with exact ground-truth motion.

* :class:`BuiltinPaired`: sharp images blurred by one uniform linear blur each (GoPro stand-in).
* :class:`BuiltinUnpairedBlur` and :class:`BuiltinUnpairedSharp`: the unpaired training domains.
  The blurry images come from Gong et al.'s camera-motion flows; their sharp sources are never exposed,
  and the sharp set renders *other* images. The authors' unpaired loader returned each blurry image's
  exact ground truth as its "unpaired" sharp partner (their ``unpaired_dataset``); here no
  pairing can leak.
* :class:`BuiltinTest`: camera-motion blur with the sharp image and the ground-truth motion.

Determinism: image ``i`` of a set is drawn from ``np.random.default_rng([seed, stream, i])``
(:func:`sample_rng`), with one stream per set (:data:`STREAMS`), so the same seed gives bitwise identical
data, sets never share images, and an image does not depend on how many others the set holds.

Samples are dicts: images float32 (3, H, W) in [0, 1] under ``blur``/``sharp``, ``motion`` the
canonical full blur vector in pixels, float32 (2, H, W) (channel 0 vertical, channel 1 horizontal >= 0),
and ``name`` a str.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from neurmap.synth.flows import apply_blur, camera_flow, canonicalize_flow, uniform_linear_flow
from neurmap.synth.procedural import dead_leaves

__all__ = [
    "STREAMS",
    "BuiltinPaired",
    "BuiltinTest",
    "BuiltinUnpairedBlur",
    "BuiltinUnpairedSharp",
    "sample_rng",
]

#: Seed stream of each set; images of different streams are independent draws.
STREAMS = {"paired": 1, "unpaired_blur": 2, "unpaired_sharp": 3, "val": 4, "test": 5}

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` of set ``stream`` (a key of :data:`STREAMS`)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}, expected one of {sorted(STREAMS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([int(seed), STREAMS[stream], int(index)])


def _options(fn: Callable[..., Any], options: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Keyword arguments for ``fn`` from a config mapping, rejecting unknown keys with one clear line."""
    options = dict(options or {})
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("size", "rng")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}, expected some of {allowed}")
    return {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in options.items()}


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size}")
    return hw


def _render(
    num_images: int,
    image_size: int | Sequence[int],
    seed: int,
    stream: str,
    leaves: Mapping[str, Any] | None,
    flow: Callable[[tuple[int, int], np.random.Generator], np.ndarray] | None,
    alpha: float,
    noise_std: float,
) -> dict[str, torch.Tensor]:
    """Render ``num_images`` sharp images (and, with ``flow``, their blurred versions and flows)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    size = _size(image_size)
    leaves = _options(dead_leaves, leaves, "leaves")
    sharps, blurs, flows = [], [], []
    for i in range(num_images):
        rng = sample_rng(seed, stream, i)
        sharp = torch.from_numpy(dead_leaves(size, rng, **leaves)).permute(2, 0, 1).contiguous()
        sharps.append(sharp)
        if flow is None:
            continue
        flow_px = torch.from_numpy(flow(size, rng))
        blur = apply_blur(sharp, flow_px, alpha)
        if noise_std > 0:
            noise = rng.normal(0.0, noise_std, blur.shape).astype(np.float32)
            blur = (blur + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        blurs.append(blur)
        flows.append(canonicalize_flow(flow_px))
    out = {"sharp": torch.stack(sharps)}
    if flow is not None:
        out |= {"blur": torch.stack(blurs), "motion": torch.stack(flows)}
    return out


class _InMemorySet(Dataset):
    """Indexes stacked tensors; ``keys`` selects what a sample exposes."""

    def __init__(
        self, tensors: dict[str, torch.Tensor], keys: Sequence[str], prefix: str, transform: Transform | None
    ) -> None:
        self._tensors = {k: tensors[k] for k in keys}
        self._prefix = prefix
        self.transform = transform

    def __len__(self) -> int:
        return len(next(iter(self._tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        sample: dict[str, Any] = {k: v[index] for k, v in self._tensors.items()}
        sample["name"] = f"{self._prefix}_{index:05d}"
        return self.transform(sample) if self.transform is not None else sample


class BuiltinPaired(_InMemorySet):
    """Paired training set: dead leaves blurred by a spatially uniform linear blur per image.

    Args:
        num_images: number of pairs.
        image_size: side (int) or (H, W) in pixels.
        seed: data seed (>= 0).
        blur_length: (low, high) full blur length in px, uniform; the angle is uniform.
        alpha: pixels per motion unit of the reblur operator used for synthesis.
        noise_std: std of Gaussian noise added to the blurry image (0 = none).
        leaves: keyword arguments of :func:`neurmap.synth.procedural.dead_leaves`.
        transform: applied to each sample dict (e.g. :class:`neurmap.data.transforms.PairedTransform`).

    Samples: ``{"blur", "sharp", "motion", "name"}``; ``motion`` is the ground-truth full blur in px (used only
    by motion pretraining's optional direct supervision of M).
    """

    def __init__(
        self,
        num_images: int = 256,
        image_size: int | Sequence[int] = 96,
        seed: int = 0,
        blur_length: Sequence[float] = (3.0, 12.0),
        alpha: float = 40.0,
        noise_std: float = 0.0,
        leaves: Mapping[str, Any] | None = None,
        transform: Transform | None = None,
    ) -> None:
        length_range = tuple(float(v) for v in blur_length)

        def flow(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
            return uniform_linear_flow(size, rng, length_range)

        data = _render(num_images, image_size, seed, "paired", leaves, flow, alpha, noise_std)
        super().__init__(data, ("blur", "sharp", "motion"), "builtin_paired", transform)


def _camera(camera: Mapping[str, Any] | None) -> Callable[[tuple[int, int], np.random.Generator], np.ndarray]:
    kwargs = _options(camera_flow, camera, "camera")

    def flow(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        return camera_flow(size, rng, **kwargs)

    return flow


class BuiltinUnpairedBlur(_InMemorySet):
    """Unpaired blurry domain: dead leaves blurred by Gong et al.'s camera-motion flows.

    Args:
        num_images: number of blurry images.
        image_size: side (int) or (H, W) in pixels.
        seed: data seed (>= 0).
        camera: keyword arguments of :func:`neurmap.synth.flows.camera_flow` (ranges of the flow family).
        alpha: pixels per motion unit of the reblur operator used for synthesis.
        noise_std: std of Gaussian noise added to the blurry image (0 = none).
        leaves: keyword arguments of :func:`neurmap.synth.procedural.dead_leaves`.
        transform: applied to each sample dict (e.g. :class:`neurmap.data.transforms.SingleTransform`).

    Samples: ``{"blur", "name"}``; the sharp sources are discarded.
    """

    def __init__(
        self,
        num_images: int = 256,
        image_size: int | Sequence[int] = 96,
        seed: int = 0,
        camera: Mapping[str, Any] | None = None,
        alpha: float = 40.0,
        noise_std: float = 0.0,
        leaves: Mapping[str, Any] | None = None,
        transform: Transform | None = None,
    ) -> None:
        data = _render(num_images, image_size, seed, "unpaired_blur", leaves, _camera(camera), alpha, noise_std)
        super().__init__(data, ("blur",), "builtin_unpaired_blur", transform)


class BuiltinUnpairedSharp(_InMemorySet):
    """Unpaired sharp domain: dead-leaves images from their own seed stream (never a blurry set's source).

    Args:
        num_images: number of sharp images.
        image_size: side (int) or (H, W) in pixels.
        seed: data seed (>= 0).
        leaves: keyword arguments of :func:`neurmap.synth.procedural.dead_leaves`.
        transform: applied to each sample dict (e.g. :class:`neurmap.data.transforms.SingleTransform`).

    Samples: ``{"sharp", "name"}``.
    """

    def __init__(
        self,
        num_images: int = 256,
        image_size: int | Sequence[int] = 96,
        seed: int = 0,
        leaves: Mapping[str, Any] | None = None,
        transform: Transform | None = None,
    ) -> None:
        data = _render(num_images, image_size, seed, "unpaired_sharp", leaves, None, 0.0, 0.0)
        super().__init__(data, ("sharp",), "builtin_unpaired_sharp", transform)


class BuiltinTest(_InMemorySet):
    """Evaluation set with ground truth: camera-motion blur, sharp image and canonical motion in px.

    Args:
        num_images: number of images.
        image_size: side (int) or (H, W) in pixels.
        seed: data seed (>= 0).
        camera: keyword arguments of :func:`neurmap.synth.flows.camera_flow`.
        alpha: pixels per motion unit of the reblur operator used for synthesis.
        noise_std: std of Gaussian noise added to the blurry image (0 = none).
        leaves: keyword arguments of :func:`neurmap.synth.procedural.dead_leaves`.
        split: ``val`` or ``test``: picks the seed stream, so a val and a test set never share images.

    Samples: ``{"blur", "sharp", "motion", "name"}``; no transform (evaluation sees whole images).
    """

    def __init__(
        self,
        num_images: int = 32,
        image_size: int | Sequence[int] = 96,
        seed: int = 0,
        camera: Mapping[str, Any] | None = None,
        alpha: float = 40.0,
        noise_std: float = 0.0,
        leaves: Mapping[str, Any] | None = None,
        split: str = "test",
    ) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        data = _render(num_images, image_size, seed, split, leaves, _camera(camera), alpha, noise_std)
        super().__init__(data, ("blur", "sharp", "motion"), f"builtin_{split}", None)
