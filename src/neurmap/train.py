"""Train NeurMAP: ``python -m neurmap.train [group=option ...] [key=value ...]``.

Examples::

    python -m neurmap.train                                   # NeurMAP on the built-in data, CPU
    python -m neurmap.train backbone=dmphn variant=net2 loss.beta=0.5
    python -m neurmap.train -m variant=baseline,net1,net2,net3,neurmap
    python -m neurmap.train variant=baseline                  # then fine-tune from it:
    python -m neurmap.train backbone.pretrained=logs/train/runs/<run>/checkpoints/last.ckpt

Everything is composed from ``conf/train.yaml``; README lists every group. The training itself:
:mod:`neurmap.tasks.training`.
"""

from __future__ import annotations

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from neurmap.cli import fail
from neurmap.config import CONFIG_DIR
from neurmap.tasks.training import ConfigError, train

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; user errors end with one line and exit status 2."""
    try:
        return train(cfg)
    except (ConfigError, FileNotFoundError, InstantiationException, FloatingPointError) as err:
        sys.exit(fail("neurmap.train", str(err)))


if __name__ == "__main__":
    main()
