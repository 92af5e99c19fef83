"""Evaluate a checkpoint with the paper's metrics on the val or test sets of a data choice.

``python -m neurmap.evaluate ckpt=PATH data=realblur`` (also ``neurmap-evaluate``). Settings:
``conf/evaluate.yaml``; the data choice is the same group as training, and its ``test`` sets (or
``split=val``) are evaluated on whole images, one at a time: PSNR, SSIM, LPIPS and NIQE of the output and of
the blurry input, RealBlur's alignment on ``realblur*`` sets, and the motion-map errors where a set has
ground-truth motion (the metrics in detail: :mod:`neurmap.tasks.evaluation`).

Outputs go in the training run of the checkpoint, ``<run>/eval/<data>-<split>/``, or for release weights and
other files under the log folder, ``<log_dir>/evaluate/<name>/<data>-<split>/`` (``output_dir=...`` to change):
``<set>_per_image.csv``, ``summary.csv`` and ``summary.md`` (means per set and the data scored), optionally the
deblurred images, and ``eval_settings.json``: results of another checkpoint, data or settings are never replaced
unless ``overwrite=true``. Unreadable images are reported and skipped; the rest completes, and the run exits 1
with their count (``on_error=skip``: 0). The Hydra run folder (one per job of a
multirun, ``python -m neurmap.evaluate -m ckpt=a.ckpt,b.ckpt``) gets ``final_metrics.json``, so
``python -m neurmap.collect`` tabulates an evaluation sweep as it does a training sweep. Exit status 0 done,
1 the run failed, 2 a usage or configuration error (one line).
"""

from __future__ import annotations

import sys
import traceback

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from neurmap.cli import UsageError, discard_run_dir, explain, fail, full_error, hydra_command, stop_message, stoppable
from neurmap.config import CONFIG_DIR
from neurmap.tasks.evaluation import PROG, evaluate

__all__ = ["main"]


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    """Hydra's task function; user errors end with one line and exit status 2."""
    try:
        with stoppable():
            summaries = evaluate(cfg)
    except (UsageError, FileNotFoundError, InstantiationException, ValueError) as err:
        if full_error():
            traceback.print_exc()  # the full traceback, and still the status of a usage error
        discard_run_dir()  # a usage error leaves no run folder behind
        sys.exit(fail(PROG, explain(err)))
    except KeyboardInterrupt as err:
        sys.exit(fail(PROG, stop_message(err, "run it again to score every image (no summary was written)"), 1))
    failed = sum(int(row["failed"]) for row in summaries)
    if failed and cfg.on_error != "skip":
        sys.exit(fail(PROG, f"{failed} image(s) could not be read and were skipped (on_error=skip: exit 0)", 1))


main = hydra_command(
    PROG, "evaluate", __doc__, "python -m neurmap.evaluate [-m] ckpt=PATH [data=NAME] [key=value ...]", _app
)

if __name__ == "__main__":
    sys.exit(main())
