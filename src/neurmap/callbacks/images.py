"""Periodic image panels (blurry | deblurred | reblurred | sharp | motion) for the active loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from neurmap.data.io import write_image
from neurmap.utils.flow_vis import make_grid

log = logging.getLogger(__name__)

__all__ = ["ImagePanelLogger"]


class ImagePanelLogger(L.Callback):
    """Log one grid per validation: a row per image, a column per panel of ``system.image_panels``.

    Goes to W&B as an image, to TensorBoard with ``add_image``, and for the CSV logger to
    ``<csv log dir>/images/val_iter<iteration>.png``.

    Args:
        every_n_validations: log on every n-th validation run (0 disables).
        max_images: rows per grid.
    """

    def __init__(self, every_n_validations: int = 1, max_images: int = 4) -> None:
        self.every_n_validations = int(every_n_validations)
        self.max_images = int(max_images)
        self._validations = 0
        self._batch: dict[str, Any] | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batch = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Collect up to ``max_images`` images of the first val set (same-size images only)."""
        if dataloader_idx != 0:
            return
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if self._batch is None:
            self._batch = tensors
            return
        have = self._batch["blur"]
        if have.shape[0] >= self.max_images or have.shape[1:] != tensors["blur"].shape[1:]:
            return
        self._batch = {k: torch.cat([v, tensors[k]]) for k, v in self._batch.items() if k in tensors}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_validations <= 0 or self._batch is None:
            return
        self._validations += 1
        if self._validations % self.every_n_validations:
            return
        self._log(trainer, pl_module)

    @rank_zero_only
    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        panels = pl_module.image_panels(self._batch, max_images=self.max_images)
        names = list(panels)
        rows = [panels[name][i] for i in range(next(iter(panels.values())).shape[0]) for name in names]
        grid = make_grid(rows, nrow=len(names))
        iteration = getattr(pl_module, "iteration", trainer.global_step)
        caption = " | ".join(names)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/panels", images=[grid], caption=[caption], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/panels", grid, global_step=trainer.global_step)
            elif isinstance(logger, CSVLogger):
                path = Path(logger.log_dir) / "images" / f"val_iter{iteration:06d}.png"
                write_image(path, grid)
                log.debug("image panel (%s) -> %s", caption, path)
