"""Benchmark: on-disk loader throughput and the blur generator's speed.

``python -m lab.benchmarks.data [--images 16] [--workers 0 1 2] [--batches 24] [--crop 256] ...``

* Loader: writes ``--images`` procedural 1280x720 PNG pairs in the GoPro layout to a temporary folder,
  then times the paired training pipeline (:func:`neurmap.data.layouts.gopro` records ->
  :class:`~neurmap.data.folders.PairedImages` with the 256 px :class:`~neurmap.data.transforms.PairedTransform`
  -> DataLoader) for each worker count: crops per second after one warm-up batch. Each crop decodes two
  full PNGs, so the figure is decode-bound.
* Generator: ``python -m neurmap.synthesize`` in kernel mode (Gong et al.'s strong flows, per-pixel line
  kernels) on ``--gen-images`` sources of ``--gen-size``: images per second for each ``--gen-workers``.

Figures are printed as Markdown tables with the machine they ran on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from lab.benchmarks.common import machine
from neurmap.data.folders import PairedImages
from neurmap.data.io import write_image
from neurmap.data.layouts import gopro
from neurmap.data.transforms import PairedTransform
from neurmap.synth.procedural import dead_leaves

__all__ = ["main", "time_generator", "time_loader", "time_transform", "write_gopro_tree"]


def write_gopro_tree(root: Path, images: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``images`` procedural PNG pairs in the GoPro layout under ``root/GOPRO_Large/train/seq``."""
    rng = np.random.default_rng(seed)
    seq = root / "GOPRO_Large" / "train" / "seq"
    for i in range(images):
        sharp = dead_leaves(size, rng, r_max=max(size) / 6)
        blur = (sharp + np.roll(sharp, 3, axis=1) + np.roll(sharp, -3, axis=1)) / 3
        write_image(seq / "sharp" / f"{i:06d}.png", sharp)
        write_image(seq / "blur" / f"{i:06d}.png", blur)
    return root / "GOPRO_Large"


def time_loader(root: Path, workers: int, batches: int, batch_size: int, crop: int) -> float:
    """Crops per second of the paired GoPro pipeline with ``workers`` loader processes."""
    dataset = PairedImages(gopro(root, "train"), transform=PairedTransform(crop_size=crop))
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + 1) * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start-up and the first decode
    start = time.perf_counter()
    count = sum(batch["blur"].shape[0] for batch in iterator)
    return count / (time.perf_counter() - start)


def time_transform(size: tuple[int, int], crop: int, samples: int = 200) -> float:
    """Samples per second of the paired crop + flips alone (with a motion field), on one in-memory pair."""
    sample = {"blur": torch.rand(3, *size), "sharp": torch.rand(3, *size), "motion": torch.rand(2, *size)}
    transform = PairedTransform(crop_size=crop)
    transform(sample)
    start = time.perf_counter()
    for _ in range(samples):
        transform(sample)
    return samples / (time.perf_counter() - start)


def time_generator(src: Path, dst: Path, workers: int, overrides: list[str]) -> tuple[float, int]:
    """Images per second of ``neurmap.synthesize`` (kernel mode) from ``src`` into a fresh ``dst``."""
    from neurmap.synth.synthesis import load_config, synthesize

    cfg = load_config([f"workers={workers}", *overrides])
    start = time.perf_counter()
    summary = synthesize(src, dst, cfg, progress=False)
    elapsed = time.perf_counter() - start
    return summary["written"] / elapsed, summary["written"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="1280x720 pairs written for the loader test")
    parser.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, nargs="+", default=(0, 1, 2))
    parser.add_argument("--batches", type=int, default=24, help="timed batches per worker count")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--gen-images", type=int, default=4, help="sources for the generator test (0: skip)")
    parser.add_argument("--gen-size", type=int, nargs="+", default=(320, 480, 720, 1280), metavar="H W")
    parser.add_argument("--gen-workers", type=int, nargs="+", default=(1, 2))
    args = parser.parse_args(argv)
    if len(args.gen_size) % 2:
        parser.error("--gen-size takes H W pairs")
    print(f"machine: {machine()}")
    with TemporaryDirectory() as tmp:
        root = write_gopro_tree(Path(tmp), args.images, tuple(args.size))
        rate = time_transform(tuple(args.size), args.crop)
        print(f"\ntransform: {args.crop}^2 paired crop + flips of a {args.size[1]}x{args.size[0]} pair: {rate:.0f} /s")
        print(f"\nloader: {args.crop}^2 paired crops from {args.size[1]}x{args.size[0]} PNGs, batch {args.batch_size}")
        print("| workers | crops/s |\n|---|---|")
        for workers in args.workers:
            rate = time_loader(root, workers, args.batches, args.batch_size, args.crop)
            print(f"| {workers} | {rate:.1f} |", flush=True)
        if args.gen_images <= 0:
            return
        print("\ngenerator: python -m neurmap.synthesize (kernel mode, Gong's strong flows)")
        print("| source size | workers | images/s |\n|---|---|---|")
        sizes = list(zip(args.gen_size[::2], args.gen_size[1::2]))
        for h, w in sizes:
            src = Path(tmp) / f"src_{h}x{w}"
            rng = np.random.default_rng(1)
            for i in range(args.gen_images):
                write_image(src / f"{i:03d}.png", dead_leaves((h, w), rng, r_max=max(h, w) / 6))
            for workers in args.gen_workers:
                rate, _ = time_generator(src, Path(tmp) / f"dst_{h}x{w}_{workers}", workers, [])
                print(f"| {w}x{h} | {workers} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
