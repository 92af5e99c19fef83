"""Train NeurMAP (or an ablation) from a composed config, test it and record its final metrics.

Everything is composed from ``conf/train.yaml`` and its groups (``python -m neurmap.train --help`` lists
them). Examples::

    python -m neurmap.train                                   # NeurMAP on the built-in data, CPU
    python -m neurmap.train backbone=dmphn variant=net2 loss.beta=0.5
    python -m neurmap.train -m variant=baseline,net1,net2,net3,neurmap
    python -m neurmap.train hydra.run.dir=RUN ckpt_path=last  # resume an interrupted run in its folder

The training itself: :mod:`neurmap.tasks.training`. Exit status 0 done, 1 the run failed, 2 a usage or
configuration error (one line).
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from neurmap.cli import UsageError, explain, fail, hydra_command
from neurmap.config import CONFIG_DIR
from neurmap.data.io import ImageReadError
from neurmap.tasks.training import train

__all__ = ["main"]

PROG = "neurmap.train"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _app(cfg: DictConfig) -> float | None:
    """Hydra's task function; user errors end with one line and exit status 2."""
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
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(fail(PROG, explain(err)))


main = hydra_command(PROG, "train", __doc__, "python -m neurmap.train [-m] [group=option ...] [key=value ...]", _app)

if __name__ == "__main__":
    sys.exit(main())
