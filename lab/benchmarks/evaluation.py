"""Benchmark: evaluation throughput per metric, and deblur time and peak memory on large photos.

``python -m lab.benchmarks.evaluation [--metric-size 384 512] [--photo-sizes 720 1280 3000 4000]
[--backbone dmphn_1_2_4] [--ckpt PATH] [--tile 512]``

* Metrics: images per second of each metric of ``python -m neurmap.evaluate`` on ``--metric-images``
  procedural pairs of ``--metric-size`` (after one warm-up call).
* Deblur: ``python -m neurmap.deblur`` on one procedural photo per ``--photo-sizes`` (H W pairs), tiled, each
  in a fresh process so that its peak resident memory (``ru_maxrss``) is its own. Without ``--ckpt`` the
  backbone has random weights: the time and memory are the same as with trained ones.

Figures are printed as Markdown tables with the machine they ran on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from lab.benchmarks.common import machine
from neurmap.data.io import write_image
from neurmap.synth.procedural import dead_leaves

__all__ = ["main", "time_metrics"]


def _pairs(count: int, size: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        sharp = torch.from_numpy(dead_leaves(size, rng, r_max=max(size) / 6)).permute(2, 0, 1)[None]
        blurry = (sharp + sharp.roll(2, -1) + sharp.roll(-2, -1) + sharp.roll(1, -2)) / 4
        out.append((blurry.float(), sharp.float()))
    return out


def time_metrics(count: int, size: tuple[int, int]) -> dict[str, float]:
    """Images per second of each evaluation metric on ``count`` pairs of ``size``."""
    from neurmap.metrics import LPIPS, MetricUnavailable, align_realblur, load_niqe_params, niqe_score, psnr, ssim

    pairs = _pairs(count, size)
    metrics: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "psnr": psnr,
        "ssim (torchmetrics)": lambda x, y: ssim(x, y, "torchmetrics"),
        "ssim (matlab, Y)": lambda x, y: ssim(x, y, "matlab"),
        "ssim (matlab_gray)": lambda x, y: ssim(x, y, "matlab_gray"),
        "realblur alignment (ECC)": lambda x, y: align_realblur(x[0], y[0]),
    }
    try:
        lpips = LPIPS.from_pretrained()
        metrics["lpips (alex)"] = lambda x, y: lpips(x, y)
    except MetricUnavailable as err:
        print(f"lpips skipped: {err}")
    try:
        params = load_niqe_params()
        metrics["niqe"] = lambda x, y: niqe_score(x[0], params)
    except MetricUnavailable as err:
        print(f"niqe skipped: {err}")
    rates = {}
    with torch.no_grad():
        for name, fn in metrics.items():
            fn(*pairs[0])
            start = time.perf_counter()
            for x, y in pairs:
                fn(x, y)
            rates[name] = len(pairs) / (time.perf_counter() - start)
    return rates


_CHILD = """
import resource, sys, time
from neurmap.deblur import main
start = time.perf_counter()
status = main(sys.argv[1:])
print(f"RESULT {time.perf_counter() - start:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
sys.exit(status)
"""


def time_deblur(photo: Path, out: Path, ckpt: str, backbone: str | None, tile: int | None) -> tuple[float, float]:
    """Seconds and peak resident GiB of ``neurmap.deblur`` on one photo, in a fresh process."""
    tile_setting = f"tile={'null' if tile is None else tile}"
    args = [f"input={photo}", f"output={out}", f"ckpt={ckpt}", tile_setting, "overwrite=true"]
    if backbone:
        args.append(f"backbone={backbone}")
    result = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"deblur failed on {photo}: {result.stderr.strip().splitlines()[-1:]}")
    seconds, kib = lines[-1].split()[1:]
    return float(seconds), int(kib) / 2**20


def _random_weights(backbone: str, folder: Path) -> Path:
    """A state-dict file of ``backbone`` with seeded random weights (for timing without a checkpoint)."""
    from hydra.utils import instantiate

    from neurmap.config import backbone_node

    cfg = backbone_node(backbone)
    torch.manual_seed(0)
    path = folder / f"{backbone}_random.pth"
    torch.save(instantiate(cfg.net).state_dict(), path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metric-images", type=int, default=8)
    parser.add_argument("--metric-size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    parser.add_argument("--photo-sizes", type=int, nargs="+", default=(720, 1280, 3000, 4000), metavar="H W")
    parser.add_argument("--backbone", default="dmphn_1_2_4", help="conf/backbone name (random weights)")
    parser.add_argument("--ckpt", default=None, help="a checkpoint instead of random weights")
    parser.add_argument("--tile", type=int, default=512, help="deblur tile size (0: whole image)")
    args = parser.parse_args(argv)
    if len(args.photo_sizes) % 2:
        parser.error("--photo-sizes takes H W pairs")
    print(f"machine: {machine()}")
    h, w = args.metric_size
    print(f"\nmetrics on {args.metric_images} pairs of {w}x{h}\n| metric | images/s |\n|---|---|")
    for name, rate in time_metrics(args.metric_images, (h, w)).items():
        print(f"| {name} | {rate:.1f} |", flush=True)
    tile = args.tile or None
    with TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = args.ckpt or str(_random_weights(args.backbone, folder))
        backbone = args.backbone if args.ckpt is None or not args.ckpt.endswith(".ckpt") else None
        print(f"\ndeblur ({backbone or 'checkpoint'}, tile {tile}, overlap 64)\n| photo | seconds | peak RSS GiB |")
        print("|---|---|---|")
        rng = np.random.default_rng(1)
        for ph, pw in zip(args.photo_sizes[::2], args.photo_sizes[1::2]):
            photo = folder / f"photo_{pw}x{ph}.png"
            write_image(photo, dead_leaves((ph, pw), rng, r_max=max(ph, pw) / 6))
            seconds, gib = time_deblur(photo, folder / "out", ckpt, backbone, tile)
            print(f"| {pw}x{ph} ({ph * pw / 1e6:.1f} MP) | {seconds:.1f} | {gib:.2f} |", flush=True)


if __name__ == "__main__":
    main()
