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


class SigtermWhenBuilt(L.Callback):
    """Send this process SIGTERM while the run is being set up (when Hydra instantiates this callback)."""

    def __init__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class SigtermAtTestBatch(L.Callback):
    """Send this process SIGTERM after test batch ``batch`` (training has finished)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class NanOnRank(L.Callback):
    """Turn one process's paired blurry batch into NaNs at ``iteration`` (a fault on one DDP rank only)."""

    def __init__(self, rank: int, iteration: int) -> None:
        self.rank, self.iteration = rank, iteration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and pl_module.iteration == self.iteration:
            batch["paired"]["blur"].fill_(float("nan"))


def run_multirun(log_dir, *overrides: str):
    """``python -m neurmap.train -m <overrides>`` in a subprocess logging under ``log_dir``; asserts it
    succeeded and returns the multiruns folder (``<log_dir>/train/multiruns``)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "WANDB_MODE": "disabled", "NEURMAP_LOG_DIR": str(log_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "neurmap.train", "-m", *overrides],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(log_dir) / "train" / "multiruns"


def assert_checkpoint_round_trip(target, saved: dict, key: str, path, drop: str, prefix: str = "") -> None:
    """Save ``saved`` as an official-style checkpoint (``{key: {prefix + name: tensor}}``), load it
    into ``target`` (a DeblurNet) through ``load_pretrained``, compare every tensor, then check that
    a copy without ``drop`` fails with an error naming it."""
    import pytest
    import torch

    from neurmap.nets.backbones import load_pretrained

    torch.save({key: {f"{prefix}{k}": v for k, v in saved.items()}}, path)
    load_pretrained(target, path, key=key)
    loaded = target.net.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    broken = {k: v for k, v in saved.items() if k != drop}
    torch.save({key: broken}, path)
    with pytest.raises(ValueError, match=drop.replace(".", r"\.")):
        load_pretrained(target, path, key=key)


class CtrlCAtStep(L.Callback):
    """Raise KeyboardInterrupt (as Ctrl+C would) just before optimizer step number ``step`` (0-based, counted
    over all optimizers), i.e. in the middle of an iteration when ``step`` is not a multiple of their number."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def checksums(*roots) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (files or folders), by path: compare before and after a command to
    show it left them unchanged."""
    import hashlib
    from pathlib import Path

    files = [p for root in map(Path, roots) for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}
