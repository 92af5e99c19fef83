"""Tiny fake dataset trees in the documented layouts (README "Data"), for the data and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurmap.data.io import write_image, write_mfmap

SIZE = (40, 56)  # H, W: small, non-square, smaller than the default 256 crop


def image(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A smooth random RGB image (H, W, 3) in [0, 1]."""
    coarse = rng.random((size[0] // 8 + 2, size[1] // 8 + 2, 3))
    rows = np.linspace(0, coarse.shape[0] - 1.001, size[0])
    cols = np.linspace(0, coarse.shape[1] - 1.001, size[1])
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def pair(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp): the blurry one is a horizontal 3-tap average of the sharp one."""
    sharp = image(rng, size)
    padded = np.pad(sharp, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3, sharp


def gopro(root: Path, sequences: int = 2, frames: int = 3, seed: int = 0) -> Path:
    """``root/GOPRO_Large/{train,test}/<seq>/{blur,blur_gamma,sharp}/<frame>.png``."""
    rng = np.random.default_rng(seed)
    base = root / "GOPRO_Large"
    for split in ("train", "test"):
        for s in range(sequences):
            for f in range(frames):
                blur, sharp = pair(rng)
                seq = base / split / f"GOPR0{s}_11_00"
                write_image(seq / "blur" / f"{f:06d}.png", blur)
                write_image(seq / "blur_gamma" / f"{f:06d}.png", blur**0.9)
                write_image(seq / "sharp" / f"{f:06d}.png", sharp)
    return base


def realblur(root: Path, scenes: int = 2, per_scene: int = 2, seed: int = 1) -> Path:
    """``root/RealBlur`` with RealBlur-J/-R scene folders and the official-style list files."""
    rng = np.random.default_rng(seed)
    base = root / "RealBlur"
    for subset, folder in (("J", "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"), ("R", "RealBlur-R_BM3D_ECC")):
        for split, offset in (("train", 0), ("test", scenes)):
            lines = []
            for s in range(offset, offset + scenes):
                for i in range(1, per_scene + 1):
                    blur, sharp = pair(rng)
                    scene = f"{folder}/scene{s:03d}"
                    gt_rel, blur_rel = f"{scene}/gt/gt_{i}.png", f"{scene}/blur/blur_{i}.png"
                    write_image(base / gt_rel, sharp)
                    write_image(base / blur_rel, blur)
                    lines.append(f"{gt_rel} {blur_rel}")
            (base / f"RealBlur_{subset}_{split}_list.txt").write_text("\n".join(lines) + "\n")
    return base


def kernel_synth(root: Path, per_split: int = 3, seed: int = 2) -> Path:
    """``root/kernel_synth/{train,val,test}/<name>_{blurryimg.png,gtimg.png,mfmap.mat}``."""
    rng = np.random.default_rng(seed)
    base = root / "kernel_synth"
    for split in ("train", "val", "test"):
        for i in range(per_split):
            blur, sharp = pair(rng)
            stem = base / split / f"img{i}_000"
            write_image(f"{stem}_blurryimg.png", blur)
            write_image(f"{stem}_gtimg.png", sharp)
            motion = np.zeros((2, *SIZE), np.float32)
            motion[1] = 3.0  # the 3-tap horizontal blur of pair()
            write_mfmap(f"{stem}_mfmap.mat", motion)
    return base


def urb(root: Path, scenes: int = 2, per_scene: int = 2, seed: int = 3) -> Path:
    """``root/URB/{blur,sharp,test}/<scene>/*.{png,jpg}``: unpaired, no ground truth."""
    rng = np.random.default_rng(seed)
    base = root / "URB"
    for part in ("blur", "sharp", "test"):
        for s in range(scenes):
            for i in range(per_scene):
                suffix = ".jpg" if i % 2 else ".png"
                write_image(base / part / f"scene{s}" / f"{part}_{i}{suffix}", image(rng))
    return base


def folders(root: Path, count: int = 3, seed: int = 4) -> Path:
    """``root/folders/paired/{train,test}/{input,target}`` and ``root/folders/unpaired/{blur,sharp}``."""
    rng = np.random.default_rng(seed)
    base = root / "folders"
    for split in ("train", "test"):
        for i in range(count):
            blur, sharp = pair(rng)
            write_image(base / "paired" / split / "input" / f"{i}.png", blur)
            write_image(base / "paired" / split / "target" / f"{i}.png", sharp)
    for key in ("blur", "sharp"):
        for i in range(count):
            write_image(base / "unpaired" / key / "a" / f"{i}.png", image(rng))
    return base


def mini(root: Path) -> Path:
    """``root/{paired/{train,val}, kernel_synth/{train,val,test}}`` in the kernel_synth layout and the sharp photo
    crops ``photos/{train,val,motion}``: the tree ``lab.reproduce_mini`` builds for ``experiment=mini_*``
    (``paths.mini``).
    """
    kernel_synth(root)
    for folder in ("paired/train", "paired/val", "kernel_synth/val"):
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for f in (root / "kernel_synth" / "test").iterdir():
            (target / f.name).write_bytes(f.read_bytes())
    for split in ("train", "val", "motion"):
        photos = root / "photos" / split
        photos.mkdir(parents=True, exist_ok=True)
        for f in (root / "kernel_synth" / "test").glob("*_gtimg.png"):
            (photos / f.name).write_bytes(f.read_bytes())
    return root


def all_layouts(root: Path) -> dict[str, Path]:
    """Every layout under ``root`` (a NEURMAP_DATA folder); returns the dataset roots by name."""
    return {
        "gopro": gopro(root),
        "realblur": realblur(root),
        "kernel_synth": kernel_synth(root),
        "urb": urb(root),
        "folders": folders(root),
    }
