"""Benchmark: time per training iteration of NeurMAP against supervised-only training, and R alone.

``python -m lab.benchmarks.iteration [--iterations 20] [--warmup 3] [hydra overrides ...]``

Both runs use the same composed config (backbone, data, batch sizes, crop) and differ only in
``variant``: ``neurmap`` (M, N and D steps) against ``baseline`` (the D step on paired data). The
time of an iteration is measured from ``on_train_batch_start`` to ``on_train_batch_end``, so data
loading is excluded. R's forward+backward is timed on a batch of the configured crop size.
Figures are printed as a Markdown table, with the machine they ran on.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import lightning as L
import torch
from omegaconf import OmegaConf

from lab.benchmarks.common import machine, timing_row
from neurmap.config import compose, instantiate_datamodule, instantiate_system
from neurmap.nets.reblur import Reblur
from neurmap.tasks import training

__all__ = ["main", "time_iterations", "time_reblur"]


def time_iterations(overrides: list[str], iterations: int, warmup: int) -> tuple[list[float], int]:
    """Seconds per training iteration (after ``warmup``) and the batch size, for one composed config."""
    with TemporaryDirectory() as tmp:
        cfg = compose(
            [
                *overrides,
                f"iterations={iterations + warmup}",
                "logger=none",
                "callbacks=none",
                "trainer.val_check_interval=1000000",
                "trainer.num_sanity_val_steps=0",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "test=false",
            ],
            Path(tmp),
        )
        L.seed_everything(0)
        datamodule = instantiate_datamodule(cfg)
        system = instantiate_system(cfg)
        times, _ = training.time_iterations(cfg, datamodule, system, iterations + warmup)
        batch = int(cfg.data.batch_size_paired) * bool(cfg.variant.paired) + int(cfg.data.batch_size_unpaired) * bool(
            cfg.variant.unpaired
        )
    return times[warmup:], batch


def time_reblur(batch: int, size: int, n_samples: int, alpha: float, repeats: int = 10) -> list[float]:
    """Seconds for R's forward+backward on a (batch, 3, size, size) image with random motion."""
    module = Reblur(alpha=alpha, n_samples=n_samples)
    image = torch.rand(batch, 3, size, size, requires_grad=True)
    motion = (0.1 * torch.randn(batch, 2, size, size)).requires_grad_()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        module(image, motion).square().mean().backward()
        times.append(time.perf_counter() - start)
    return times[1:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backbone=dmphn")
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())

    neurmap, batch = time_iterations([*args.overrides, "variant=neurmap"], args.iterations, args.warmup)
    baseline, paired = time_iterations([*args.overrides, "variant=baseline"], args.iterations, args.warmup)
    same, _ = time_iterations(
        [*args.overrides, "variant=baseline", f"data.batch_size_paired={batch}"], args.iterations, args.warmup
    )
    cfg = compose(list(args.overrides), Path("."))
    crop = int(
        OmegaConf.select(cfg, "data.paired.transform.crop_size") or OmegaConf.select(cfg, "data.paired.image_size")
    )
    reblur_times = time_reblur(batch, crop, int(cfg.model.reblur.n_samples), float(cfg.model.reblur.alpha))

    print(f"machine: {machine()}")
    print(f"config: backbone={cfg.model.deblur.name} crop={crop} overrides={args.overrides or '-'}\n")
    print("| step | median ms | min ms | what |")
    print("|---|---|---|---|")
    print(timing_row("NeurMAP iteration", neurmap, f"D fwd once + M, N, D steps; {batch} blurry images"))
    print(timing_row("supervised iteration", baseline, f"D step only, {paired} paired images (same data config)"))
    print(timing_row("supervised iteration", same, f"D step only, {batch} paired images (same image count)"))
    print(
        timing_row("R forward+backward", reblur_times, f"{batch}x3x{crop}x{crop}, {cfg.model.reblur.n_samples} samples")
    )
    ratio = statistics.median(neurmap) / statistics.median(baseline)
    print(f"\nNeurMAP / supervised time per iteration: {ratio:.2f}x")


if __name__ == "__main__":
    main()
