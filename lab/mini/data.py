"""The mini reproduction's data: photographs bundled with scikit-image, split by photograph, made into a paired
set and its validation split (one uniform linear blur per crop: the source family), unpaired and validation sets
and a held-out test set (Gong et al.'s spatially varying camera-motion blur, the target family, with the
ground-truth motion; his strong ranges unless ``data.synth=[preset=mild]``), and the sharp images of M's
pretraining (the training crops and procedural dead-leaves images). Deterministic by the seed, cached in
``<work>/data`` with a manifest of the settings and of the sub-folders it wrote, rebuilt when the settings change;
a rebuild removes only those sub-folders, never another file of the folder."""

from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lab.mini.common import PROG, ReproError, log
from neurmap.data.io import write_image, write_mfmap
from neurmap.errors import UsageError
from neurmap.utils.files import atomic_write

__all__ = ["ENTRIES", "MANIFEST", "build_data", "load_photo", "skimage_data"]

#: The record of the settings a data folder was built with and of what the build wrote there.
MANIFEST = "manifest.json"
#: What a build writes in the data folder besides its manifest.
ENTRIES = ("photos", "paired", "kernel_synth")


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
    """A scikit-image photograph as float32 RGB (H, W, 3) in [0, 1] (grey replicated, alpha dropped);
    ``motorcycle_left`` / ``motorcycle_right`` are the views of ``stereo_motorcycle``."""
    data = skimage_data()
    try:
        if name in ("motorcycle_left", "motorcycle_right"):
            image = data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        elif callable(getattr(data, name, None)):
            image = getattr(data, name)()
        else:
            raise ReproError(f"skimage.data has no image {name!r}")
    except ReproError:
        raise
    except Exception as err:  # e.g. images that need pooch and a network
        raise ReproError(
            f"skimage.data.{name}() cannot be loaded offline: {' '.join(str(err).split())[:160]}"
        ) from None
    image = np.asarray(image)
    if image.dtype == bool or image.ndim not in (2, 3):
        raise ReproError(f"skimage.data.{name} is not a photograph ({image.dtype}, shape {image.shape})")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
    image = image.astype(np.float32) / np.float32(scale)
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0))


def crop_boxes(shape: tuple[int, int], size: int, count: int, rng: np.random.Generator | None) -> list[tuple]:
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


def uniform_pair(sharp: np.ndarray, rng: np.random.Generator, length: list[float]) -> tuple[np.ndarray, ...]:
    """(blurry, sharp, flow px (2, H, W)) of one crop under one uniform linear blur, borders cropped by half the
    blur (Gong)."""
    from neurmap.synth.flows import uniform_linear_flow
    from neurmap.synth.line_blur import line_blur

    h, w, _ = sharp.shape
    flow = uniform_linear_flow((h, w), rng, tuple(length))
    blurry = line_blur(torch.from_numpy(sharp.transpose(2, 0, 1).copy()), torch.from_numpy(flow))
    bh, bw = (int(abs(float(flow[c, 0, 0])) // 2) for c in (0, 1))
    crop = np.s_[bh : h - bh, bw : w - bw]
    return blurry.numpy().transpose(1, 2, 0)[crop], sharp[crop], flow[(slice(None), *crop)]


def check_data_settings(data: DictConfig) -> None:
    overlap = sorted(set(data.train_photos) & set(data.test_photos))
    if overlap:
        raise ReproError(
            f"data: photographs {overlap} are in both train_photos and test_photos; test photos are held out"
        )
    low, high = data.paired_length
    if not 0 <= low <= high:
        raise ReproError(f"data.paired_length must be [LOW, HIGH] with 0 <= LOW <= HIGH, got [{low}, {high}]")


def owned_entries(manifest: Any, path: Path) -> list[str]:
    """The entries of the data folder that the build recorded in ``manifest`` wrote (:data:`ENTRIES` for a
    manifest of this command written before it listed them: its settings hold ``layout``).

    Raises:
        ReproError: the manifest was not written by this command, or lists something else than plain names of
            the folder's entries.
    """
    record = manifest if isinstance(manifest, dict) else {}
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    if "entries" not in record and "layout" not in settings:
        raise ReproError(f"{path} was not written by {PROG}; move the folder away or choose another work=")
    entries = record.get("entries", list(ENTRIES))
    plain = isinstance(entries, list) and all(isinstance(e, str) and Path(e).name == e for e in entries)
    if not plain or {".", "..", "", MANIFEST} & set(entries):
        raise ReproError(f"{path}: 'entries' must list sub-folder names of the data folder, got {entries!r}")
    return entries


def remove_entries(data_dir: Path, entries: list[str]) -> None:
    """Delete the listed files or folders of ``data_dir`` (those that exist), nothing else."""
    for name in entries:
        path = data_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def build_data(cfg: DictConfig, data_dir: Path) -> dict[str, Any]:
    """Build (or reuse) the paired, unpaired, validation and test sets of ``cfg.data`` under ``data_dir``;
    returns the manifest. A rebuild deletes only what the manifest says an earlier build wrote.

    Raises:
        ReproError: a photograph is in both splits or cannot be loaded, a ``data.synth`` setting is wrong, or
            ``data_dir`` holds files that were not made by this command.
    """
    from neurmap.synth.procedural import dead_leaves
    from neurmap.synth.synthesis import load_config, synthesize

    data = cfg.data
    check_data_settings(data)
    settings = {"seed": cfg.seed, **OmegaConf.to_container(data), "layout": 3}
    manifest_path = data_dir / MANIFEST
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text())
        if isinstance(previous, dict) and previous.get("settings") == settings:
            log(f"data: reusing {data_dir} (same settings)")
            return previous
        log(f"data: settings changed, rebuilding {data_dir} (files it did not write stay)")
        owned = owned_entries(previous, manifest_path)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise ReproError(f"{data_dir} exists without {MANIFEST} (not made by {PROG}); choose another work=")
    else:
        owned = []
    try:
        synth = load_config([f"seed={cfg.seed}", "workers=1", *data.synth])
    except UsageError as err:
        raise ReproError(f"data.synth: {err}") from None
    # Until the build ends, the manifest names no settings and every entry it may leave: an interrupted build is
    # cleaned up by the next one, and nothing else of the folder is ever deleted.
    pending = sorted({*owned, *ENTRIES})
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest_path, json.dumps({"settings": None, "entries": pending}, indent=2))
    remove_entries(data_dir, pending)

    start = time.perf_counter()
    photos = {s: data_dir / "photos" / s for s in ("train", "val", "test", "motion")}
    counts = {"paired": 0, "paired_val": 0, "unpaired": 0, "val": 0, "test": 0, "motion_photos": 0}

    def pair(stem: Path, crop: np.ndarray, rng: np.random.Generator) -> None:
        blurry, sharp, flow = uniform_pair(crop, rng, list(data.paired_length))
        write_image(stem.with_name(f"{stem.name}_blurryimg.png"), blurry)
        write_image(stem.with_name(f"{stem.name}_gtimg.png"), sharp)
        write_mfmap(stem.with_name(f"{stem.name}_mfmap.mat"), flow)

    def crops(photo: np.ndarray, name: str, size: int, count: int, stream: int | None) -> list[tuple[int, Any, Any]]:
        """(index, crop, its generator) of ``count`` crops: random from stream ``stream``, or a grid (None)."""
        rng = None if stream is None else np.random.default_rng([cfg.seed, stream, zlib.crc32(name.encode())])
        boxes = crop_boxes(photo.shape[:2], size, count, rng)
        return [(j, photo[y : y + h, x : x + w], rng) for j, (y, x, h, w) in enumerate(boxes)]

    for name in [*data.train_photos, *data.test_photos]:
        photo = load_photo(name)
        if name in data.test_photos:
            for j, crop, _ in crops(photo, name, data.crop, data.test_crops, None):
                write_image(photos["test"] / f"{name}_{j}.png", crop)
            continue
        for j, crop, _ in crops(photo, name, data.crop, data.train_crops, 1):
            write_image(photos["train"] / f"{name}_{j}.png", crop)
            write_image(photos["motion"] / f"{name}_{j}.png", crop)
        for j, crop, rng in crops(photo, name, data.crop, data.train_crops, 2):
            pair(data_dir / "paired" / "train" / f"{name}_{j}", crop, rng)
            counts["paired"] += 1
        for j, crop, rng in crops(photo, name, data.val_crop, data.paired_val_crops, 4):  # the source's plateau
            pair(data_dir / "paired" / "val" / f"{name}_{j}", crop, rng)
            counts["paired_val"] += 1
        for j, crop, _ in crops(
            photo, name, data.val_crop, data.val_crops, 3
        ):  # M's EPE curve and D's PSNR in training
            write_image(photos["val"] / f"{name}_{j}.png", crop)
    leaves = np.random.default_rng([cfg.seed, 5])
    for k in range(data.motion_procedural):  # M's pretraining sees more scenes than eleven photographs
        write_image(photos["motion"] / f"leaves_{k:04d}.png", dead_leaves(data.crop, leaves, r_max=data.crop / 6))
    counts["motion_photos"] = len(data.train_photos) * data.train_crops + data.motion_procedural
    for split, seed in (("train", cfg.seed), ("val", cfg.seed + 2), ("test", cfg.seed + 1)):
        split_cfg = synth.copy()
        split_cfg.seed = seed
        summary = synthesize(photos[split], data_dir / "kernel_synth" / split, split_cfg, progress=False)
        counts["unpaired" if split == "train" else split] = summary["written"]
    flow = OmegaConf.to_container(synth.kernel.flow)
    manifest = {"settings": settings, "entries": list(ENTRIES), "counts": counts, "flow": flow,
                "seconds": time.perf_counter() - start}  # fmt: skip
    atomic_write(manifest_path, json.dumps(manifest, indent=2))
    return manifest
