"""Train NeurMAP (or an ablation) from a composed config, test it and record its final metrics.

Everything is composed from ``conf/train.yaml`` and its groups (``python -m neurmap.train --help`` lists
them). Examples::

    python -m neurmap.train                                   # NeurMAP on the built-in data, CPU
    python -m neurmap.train backbone=dmphn variant=net2 loss.beta=0.5
    python -m neurmap.train -m variant=baseline,net1,net2,net3,neurmap
    python -m neurmap.train hydra.run.dir=RUN ckpt_path=last  # resume an interrupted run in its folder

The training itself: :mod:`neurmap.tasks.training`. Exit status 0 done, 1 the run failed or was stopped
(SIGTERM, Ctrl+C, while setting up, training or testing: one line names the checkpoint to resume from, or says
that nothing was saved), 2 a usage or configuration error (one line).
A folder that holds a stopped run (``checkpoints/last.ckpt`` or ``interrupted.ckpt``) is only resumed,
with ``ckpt_path=last``.
"""

from __future__ import annotations

import sys
import traceback

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from neurmap.cli import UsageError, discard_run_dir, explain, fail, full_error, hydra_command, stop_message
from neurmap.config import CONFIG_DIR
from neurmap.data.io import ImageReadError
from neurmap.tasks.training import PROG, train

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _app(cfg: DictConfig) -> float | None:
    """Hydra's task function; user errors end with one line and exit status 2 (an unreadable image: 1)."""
    try:
        return train(cfg)
    except (
        UsageError,
        ImageReadError,
        FileNotFoundError,
        InstantiationException,
        FloatingPointError,
        ValueError,
    ) as err:
        # ValueError: a value the data or a network cannot use (a batch larger than the data, a weight file
        # that does not fit); programming errors raise other types and keep their traceback (exit 1)
        if full_error():
            traceback.print_exc()  # the full traceback, and still the status of a usage error
        unreadable = isinstance(err, ImageReadError) or "Caught ImageReadError" in str(err)
        if not unreadable:  # an unreadable image is a failed run (status 1), not a usage error
            discard_run_dir()  # a usage error leaves no run folder behind
        sys.exit(fail(PROG, explain(err), 1 if unreadable else 2))
    except KeyboardInterrupt as err:  # before or after training (during it, train() reports and exits 1)
        sys.exit(fail(PROG, stop_message(err, "nothing was trained since the last checkpoint"), 1))


main = hydra_command(PROG, "train", __doc__, "python -m neurmap.train [-m] [group=option ...] [key=value ...]", _app)

if __name__ == "__main__":
    sys.exit(main())
