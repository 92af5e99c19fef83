"""The mini reproduction's data: real photographs bundled with scikit-image, split by photograph, made into a
paired set (one uniform linear blur per crop), unpaired and validation sets and a held-out test set (Gong et
al.'s spatially varying camera-motion blur, with the ground-truth motion). Deterministic by the seed, cached in
``<work>/data`` with a manifest of the settings, rebuilt when they change.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurmap.cli import UsageError
from neurmap.data.io import write_image
from neurmap.experiments.mini.common import PROG, ReproError, log
from neurmap.utils.files import atomic_write

__all__ = [
    "DEFAULT_SYNTH",
    "DEFAULT_TEST_PHOTOS",
    "DEFAULT_TRAIN_PHOTOS",
    "build_data",
    "data_settings",
    "load_photo",
    "skimage_data",
]

#: Real photographs shipped in the scikit-image wheel (``skimage.data``), natural scenes and textures.
#: ``motorcycle_left``/``_right`` are the two views of ``stereo_motorcycle`` (kept in one split). ``clock`` is
#: left out: it is a real camera-shake photograph, not a sharp one.
DEFAULT_TRAIN_PHOTOS = (
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
)
DEFAULT_TEST_PHOTOS = ("astronaut", "coffee", "rocket", "camera")

#: neurmap.synthesize settings of the camera-motion sets unless --synth is given: Gong's "mild" ranges.
DEFAULT_SYNTH = ("preset=mild",)


def skimage_data() -> Any:
    try:
        import skimage.data
    except ImportError:
        raise ReproError(
            "scikit-image is not installed; it provides the photographs: pip install 'scikit-image>=0.22' "
            "(or pip install -e '.[repro]')"
        ) from None
    return skimage.data


def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float32 RGB (H, W, 3) in [0, 1] (grey replicated, alpha dropped).

    ``motorcycle_left`` / ``motorcycle_right`` are the views of ``stereo_motorcycle``.
    """
    data = skimage_data()
    try:
        if name in ("motorcycle_left", "motorcycle_right"):
            image = data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        else:
            loader = getattr(data, name, None)
            if loader is None or not callable(loader):
                raise ReproError(f"skimage.data has no image {name!r}")
            image = loader()
    except ReproError:
        raise
    except Exception as err:  # e.g. images that need pooch and a network
        raise ReproError(
            f"skimage.data.{name}() cannot be loaded offline: {' '.join(str(err).split())[:160]}"
        ) from None
    image = np.asarray(image)
    if image.dtype == bool or image.ndim not in (2, 3):
        raise ReproError(f"skimage.data.{name} is not a photograph ({image.dtype}, shape {image.shape})")
    scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    image = image.astype(np.float32) / np.float32(scale)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0))


def _crop_boxes(shape: tuple[int, int], size: int, count: int, rng: np.random.Generator | None) -> list[tuple]:
    """``count`` crop boxes (y, x, h, w) of side ``size`` (clamped to the image): random with ``rng``, else on
    an evenly spread grid, more columns along the longer side (deterministic test crops, least overlap)."""
    h, w = shape
    ch, cw = min(size, h), min(size, w)
    if rng is not None:
        return [(int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw) for _ in range(count)]
    long_side = math.ceil(math.sqrt(count))
    short_side = math.ceil(count / long_side)
    cols, rows = (long_side, short_side) if w >= h else (short_side, long_side)

    def spread(i: int, n: int, room: int) -> int:
        return round(room * i / (n - 1)) if n > 1 else room // 2

    cells = [(r, c) for r in range(rows) for c in range(cols)][:count]
    return [(spread(r, rows, h - ch), spread(c, cols, w - cw), ch, cw) for r, c in cells]


def _uniform_pair(sharp: np.ndarray, rng: np.random.Generator, length: Sequence[float]) -> tuple[np.ndarray, ...]:
    """(blurry, sharp, flow px (2, H, W)) of one crop under one uniform linear blur, borders cropped by half the
    blur (Gong)."""
    from neurmap.synth.flows import uniform_linear_flow
    from neurmap.synth.line_blur import line_blur

    h, w, _ = sharp.shape
    flow = uniform_linear_flow((h, w), rng, tuple(length))
    image = torch.from_numpy(sharp.transpose(2, 0, 1).copy())
    blurry = line_blur(image, torch.from_numpy(flow)).numpy().transpose(1, 2, 0)
    bh, bw = (int(abs(float(flow[c, 0, 0])) // 2) for c in (0, 1))
    return blurry[bh : h - bh, bw : w - bw], sharp[bh : h - bh, bw : w - bw], flow[:, bh : h - bh, bw : w - bw]


def data_settings(opts: argparse.Namespace) -> dict[str, Any]:
    """Everything the data depends on (stored in ``<work>/data/manifest.json``; a change rebuilds it)."""
    return {
        "seed": opts.seed,
        "train_photos": list(opts.train_photos),
        "test_photos": list(opts.test_photos),
        "crop": opts.crop,
        "train_crops": opts.train_crops,
        "test_crops": opts.test_crops,
        "val_crop": opts.val_crop,
        "val_crops": opts.val_crops,
        "layout": 2,  # 2: paired set in the kernel_synth layout with its motion, and a val split
        "paired_length": list(opts.paired_length),
        "synth": list(opts.synth),
    }


def build_data(opts: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Build (or reuse) the paired, unpaired and test sets under ``data_dir``; returns the manifest.

    Raises:
        ReproError: a photograph is in both splits or cannot be loaded, or ``data_dir`` holds files that
            were not made by this command.
    """
    from neurmap.synth.synthesis import load_config, synthesize

    settings = data_settings(opts)
    manifest_path = data_dir / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings:
            log(f"data: reusing {data_dir} (same settings)")
            return manifest
        log(f"data: settings changed, rebuilding {data_dir}")
        shutil.rmtree(data_dir)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise ReproError(f"{data_dir} exists without manifest.json (not made by {PROG}); pass another --work")
    overlap = sorted(set(opts.train_photos) & set(opts.test_photos))
    if overlap:
        raise ReproError(
            f"photographs {overlap} are in both --train-photos and --test-photos; test photos are held out"
        )
    try:
        synth_cfg = load_config([f"seed={opts.seed}", "workers=1", *opts.synth])
    except UsageError as err:
        raise ReproError(f"--synth: {err}") from None

    start = time.perf_counter()
    staging = data_dir.with_name(data_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    from neurmap.data.io import write_mfmap

    sources = {s: staging / "photos" / s for s in ("train", "val", "test")}
    counts = {"paired": 0, "unpaired": 0, "val": 0, "test": 0}
    for name in [*opts.train_photos, *opts.test_photos]:
        photo = load_photo(name)
        key = zlib.crc32(name.encode())
        if name in opts.test_photos:
            for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.test_crops, None)):
                write_image(sources["test"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
            continue
        unpaired_rng = np.random.default_rng([opts.seed, 1, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.train_crops, unpaired_rng)):
            write_image(sources["train"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
        paired_rng = np.random.default_rng([opts.seed, 2, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.train_crops, paired_rng)):
            blurry, sharp, flow = _uniform_pair(photo[y : y + h, x : x + w], paired_rng, opts.paired_length)
            stem = staging / "paired" / "train" / f"{name}_{j}"
            write_image(stem.with_name(f"{stem.name}_blurryimg.png"), blurry)
            write_image(stem.with_name(f"{stem.name}_gtimg.png"), sharp)
            write_mfmap(stem.with_name(f"{stem.name}_mfmap.mat"), flow)
            counts["paired"] += 1
        # validation (M's EPE curve, D's PSNR during training): other crops of the *training* photographs
        val_rng = np.random.default_rng([opts.seed, 3, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.val_crop, opts.val_crops, val_rng)):
            write_image(sources["val"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
    for split, seed in (("train", opts.seed), ("val", opts.seed + 2), ("test", opts.seed + 1)):
        cfg = synth_cfg.copy()
        cfg.seed = seed
        summary = synthesize(sources[split], staging / "kernel_synth" / split, cfg, progress=False)
        counts["unpaired" if split == "train" else split] = summary["written"]
    manifest = {
        "settings": settings,
        "counts": counts,
        "synthesize": {k: v for k, v in _plain(synth_cfg).items() if k in ("kernel", "seed")},
        "seconds": time.perf_counter() - start,
    }
    atomic_write(staging / "manifest.json", json.dumps(manifest, indent=2))
    shutil.rmtree(data_dir, ignore_errors=True)
    staging.rename(data_dir)
    return manifest


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
