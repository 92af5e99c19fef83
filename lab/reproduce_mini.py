"""The mini reproduction, NeurMAP against supervised fine-tuning at CPU scale.

Builds a paired, an unpaired and a held-out test set from photographs bundled with scikit-image (the target:
Gong's strong camera-motion blur), converges the released DMPHN(1-2-4) (``weights``, default
$NEURMAP_RELEASES/weights/dmphn_1_2_4) on the paired family, continues it with the supervised loss, NeurMAP and its
ablations through the same commands a user would type, evaluates them on the held-out set and writes
<out>/<report_name>.md (out defaults to the work folder).
Exit status: 0 done, 1 a stage failed (its log is named), 2 a bad setting.
The experiment in detail: lab.mini. Run from the repository root. Examples:
  python -m lab.reproduce_mini source_only=true     # the source-converged start alone (cached)
  python -m lab.reproduce_mini motion_ckpt=logs/reproduce_mini/motion/checkpoints/last.ckpt out=reports
  python -m lab.reproduce_mini "train_overrides=['trainer=gpu','trainer.precision=bf16-mixed']" jobs=1
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from lab.mini.common import PROG, ReproError, StageFailed, log
from lab.mini.settings import CONFIG, store_schema
from neurmap.cli import fail, plain_command

__all__ = ["main"]


def _run(cfg: DictConfig, overrides: list[str]) -> int:
    """The pipeline with the composed settings (``overrides``: as given, recorded with each stage)."""
    from hydra.errors import HydraException

    from lab.mini.report import write_report
    from lab.mini.run import run

    try:
        record = run(cfg, overrides)
        if record.cfg.data_only:
            log(f"data ready in {record.path('data')}")
        elif record.cfg.source_only:
            log(f"source-converged start: {record.start} ({record.source_iterations} iterations)")
        else:
            log(f"total {record.seconds / 60:.1f} min; wrote {write_report(record)}")
    except (ReproError, FileNotFoundError, HydraException, ValueError) as err:
        return fail(PROG, err)
    except StageFailed as err:
        return fail(PROG, err, status=1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; errors end with one line: exit status 2 for a bad setting, 1 for a failed stage."""
    store_schema()  # conf/reproduce_mini.yaml composes over the lab's schema
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "python -m lab.reproduce_mini [-h] [key=value ...]"
    return plain_command(PROG, CONFIG, __doc__, usage, lambda cfg: _run(cfg, args))(args)


if __name__ == "__main__":
    sys.exit(main())
