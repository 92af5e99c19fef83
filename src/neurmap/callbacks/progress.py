"""A training progress bar in iterations: one iteration steps every optimizer of the variant once, so Lightning's
bar, which counts batches against the remaining optimizer steps, would end at 1/n of its total."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["IterationProgressBar"]


class IterationProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar whose training total is the iterations left, so it ends at 100 %; an error raised
    during training closes the bar first, so its line is not printed over the bar."""

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = super().total_train_batches
        optimizers = max(1, len(trainer.optimizers))
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(trainer.num_training_batches, (trainer.max_steps - trainer.global_step) // optimizers)
        return total

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        for bar in (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar):
            if bar is not None:
                bar.close()
