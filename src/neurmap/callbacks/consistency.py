"""Check that every DDP rank holds the same weights (the stylegan2-ada consistency-check idea)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch

from neurmap.utils.files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["RankConsistencyCheck", "parameter_checksums"]


@torch.no_grad()
def parameter_checksums(module: torch.nn.Module) -> dict[str, float]:
    """Per top-level child, the float64 sum of |w| and of w over its parameters and buffers."""
    sums: dict[str, float] = {}
    for name, child in module.named_children():
        tensors = [t.detach().double() for t in list(child.parameters()) + list(child.buffers())]
        if tensors:
            sums[f"{name}.abs"] = float(sum(t.abs().sum() for t in tensors))
            sums[f"{name}.sum"] = float(sum(t.sum() for t in tensors))
    return sums


class RankConsistencyCheck(L.Callback):
    """Gather per-network weight checksums from all ranks and fail loudly if they disagree.

    Under DDP every rank must end each iteration with identical weights; a mistake in the
    three-optimizer step (a gradient that is not all-reduced, a rank-local buffer) shows up here.
    Runs at the end of training (and every ``every_n_iterations`` if > 0). Rank 0 writes
    ``<default_root_dir>/rank_consistency.json`` with every rank's checksums.

    Args:
        every_n_iterations: also check during training at this cadence (0 = only at the end).
        rtol: relative tolerance between ranks.
    """

    def __init__(self, every_n_iterations: int = 0, rtol: float = 1e-9) -> None:
        self.every_n_iterations = int(every_n_iterations)
        self.rtol = float(rtol)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        iteration = getattr(pl_module, "iteration", trainer.global_step)
        if self.every_n_iterations > 0 and iteration % self.every_n_iterations == 0:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sums = parameter_checksums(pl_module)
        keys = sorted(sums)
        local = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=pl_module.device)
        gathered = trainer.strategy.all_gather(local)
        if gathered.ndim == 1:
            gathered = gathered.unsqueeze(0)
        gathered = gathered.cpu()
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "rank_consistency.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps({"keys": keys, "ranks": gathered.tolist()}, indent=1))
        reference = gathered[0]
        bad = [
            keys[i]
            for i in range(len(keys))
            if not torch.allclose(gathered[:, i], reference[i].expand(gathered.shape[0]), rtol=self.rtol, atol=0.0)
        ]
        if bad:
            raise RuntimeError(f"ranks disagree on the weights of {bad} at global step {trainer.global_step}")
        if gathered.shape[0] > 1:
            log.info("weights identical on all %d ranks (%d checksums)", gathered.shape[0], len(keys))
