"""Evaluate a checkpoint with the paper's metrics: ``python -m neurmap.evaluate ckpt=PATH data=realblur``.

Also ``neurmap-evaluate``. Settings: ``conf/evaluate.yaml``; the data choice is the same group as training,
and its ``test`` sets (or ``split=val``) are evaluated on whole images, one at a time: PSNR, SSIM, LPIPS and
NIQE of the output and of the blurry input, RealBlur's alignment on ``realblur*`` sets, and the motion-map
errors where a set has ground-truth motion (the metrics in detail: :mod:`neurmap.tasks.evaluation`).

Outputs go next to the checkpoint, ``<run>/eval/<data>-<split>/`` (``output_dir=...`` to change):
``<set>_per_image.csv``, ``summary.csv`` and ``summary.md`` (means per set), optionally the deblurred images.
Unreadable images are reported and skipped; the rest completes. The Hydra run folder (one per job of a
multirun, ``python -m neurmap.evaluate -m ckpt=a.ckpt,b.ckpt``) gets ``final_metrics.json``, so
``python -m neurmap.collect`` tabulates an evaluation sweep as it does a training sweep.
"""

from __future__ import annotations

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from neurmap.cli import UsageError, fail
from neurmap.config import CONFIG_DIR
from neurmap.tasks.evaluation import PROG, evaluate
from neurmap.tasks.inference import CheckpointError

__all__ = ["main"]


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors end with one line and exit status 2."""
    try:
        evaluate(cfg)
    except (UsageError, CheckpointError, FileNotFoundError, InstantiationException, ValueError) as err:
        sys.exit(fail(PROG, str(err)))


if __name__ == "__main__":
    main()
