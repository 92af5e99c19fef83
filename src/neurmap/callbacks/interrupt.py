"""``last.ckpt`` that is really the last: at the end of training and when SIGTERM or Ctrl+C stops a run."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

__all__ = ["LastCheckpoint"]


class LastCheckpoint(L.Callback):
    """Write ``<dirpath>/last.ckpt`` when training ends or SIGTERM stops it; ``interrupted.ckpt`` on Ctrl+C.
    A stop while testing writes nothing.

    ModelCheckpoint saves at validations only, so iterations after the last validation would
    otherwise be lost.

    Lightning turns SIGTERM into an exception at the next batch boundary, so that checkpoint holds
    whole iterations and ``ckpt_path=last`` resumes from it. Ctrl+C can land between the M, N and
    D steps of an iteration, so it goes to a separate file and never replaces a clean ``last.ckpt``;
    ``ckpt_path=last`` takes it when it is the newer one. Its step counter is rounded down to whole
    iterations, so the resumed run repeats the interrupted iteration once and ends at the same step count
    (the optimizer steps already taken in that iteration stay in the weights).

    Args:
        dirpath: checkpoint folder (the ModelCheckpoint's).
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._whole_iterations_of = 0  # optimizers per iteration while an interrupted checkpoint is written

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        n = self._whole_iterations_of
        progress = (
            checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.manual_optimization.optim_step_progress")
        )
        if n > 1 and progress is not None:
            for part in ("total", "current"):
                done = progress[part]["completed"]
                progress[part]["completed"] = progress[part]["ready"] = done - done % n
            checkpoint["global_step"] -= checkpoint["global_step"] % n

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.dirpath / "last.ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # a stop while testing: the trained weights are in last.ckpt already, which stays resumable
        if isinstance(exception, SIGTERMException):
            name = "last.ckpt"
        elif isinstance(exception, KeyboardInterrupt):
            name = "interrupted.ckpt"
        else:
            return  # a crash keeps the last checkpoint written by ModelCheckpoint
        path = self.dirpath / name
        self._whole_iterations_of = len(trainer.optimizers) if name == "interrupted.ckpt" else 0
        try:
            trainer.save_checkpoint(path)
        finally:
            self._whole_iterations_of = 0
        if trainer.is_global_zero:
            log.warning(
                "run stopped by %s at global step %d: saved %s", type(exception).__name__, trainer.global_step, path
            )
