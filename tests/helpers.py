"""Test-only callbacks, importable by Hydra's ``_target_``."""

from __future__ import annotations

import os
import signal

import lightning as L


class SigtermAtIteration(L.Callback):
    """Send this process SIGTERM once ``pl_module.iteration`` reaches ``iteration``."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and pl_module.iteration >= self.iteration:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
