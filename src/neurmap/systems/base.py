"""What every neurmap LightningModule shares: manual optimization of named networks, each with its own
optimizer and linear LR decay, a NaN guard that stops every DDP rank together, per-network gradient
clipping after AMP unscaling, the run configuration and provenance in the hyper-parameters, and the RNG
state in checkpoints (exact resume).

Subclasses (:class:`neurmap.systems.neurmap.NeurMAPSystem`,
:class:`neurmap.systems.motion_pretrain.MotionPretrainSystem`)
set ``opt_names`` and ``_optim`` and implement :meth:`networks`; one iteration calls :meth:`_step` once per
network and :meth:`_step_schedulers` at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import nn

__all__ = ["ManualSystem", "finite_on_every_rank", "linear_decay"]


def linear_decay(iteration: int, total: int) -> float:
    """LR factor decaying linearly from 1 at iteration 0 to 0 at ``total`` (paper §4.1)."""
    return max(0.0, 1.0 - iteration / total)


def finite_on_every_rank(total: torch.Tensor) -> bool:
    """Whether ``total`` is finite on this process and, under DDP, on every other one. All ranks stop
    together: a rank that stopped alone would leave the others waiting in the gradient all-reduce."""
    finite = torch.isfinite(total.detach()).to(torch.int32)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


class ManualSystem(L.LightningModule):
    """Base of the neurmap systems: one optimizer per named network, stepped by hand.

    Subclasses set ``self.opt_names`` (optimizer order; each name is the network's node in ``model``), call
    :meth:`_check_optim` with those nodes, set ``self.iterations`` and ``self.check_finite``, and implement
    :meth:`networks`.
    """

    opt_names: list[str]
    _optim: dict[str, Mapping[str, Any]]
    iterations: int
    check_finite: bool

    def networks(self) -> dict[str, nn.Module]:
        """The trained network of each optimizer name."""
        raise NotImplementedError

    def _check_optim(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep each trained network's ``optimizer`` factory and ``grad_clip`` (``model.<name>`` of the config)."""
        for name in self.opt_names:
            if not (nodes.get(name) or {}).get("optimizer"):
                raise ValueError(f"model.{name}.optimizer is missing: each trained network needs its optimizer")
        self._optim = {name: {k: nodes[name].get(k) for k in ("optimizer", "grad_clip")} for name in self.opt_names}

    def remember_config(self, config: Mapping[str, Any], provenance: Mapping[str, Any] | None = None) -> None:
        """Store the resolved run configuration (plain containers) and its provenance (git revision, command,
        choices) in the hyper-parameters, so that checkpoints and loggers carry everything needed to rebuild
        and trace the run."""
        self.hparams["config"] = dict(config)
        self.hparams["provenance"] = dict(provenance or {})
        # Lightning logs hparams_initial (a copy taken in save_hyperparameters) to the loggers at fit start
        self._hparams_initial = copy.deepcopy(self._hparams)

    @property
    def n_optimizers(self) -> int:
        """Optimizer steps per iteration (Lightning's global_step advances by this much)."""
        return len(self.opt_names)

    @property
    def iteration(self) -> int:
        """Completed training iterations (batches), whatever the number of optimizers."""
        return self.global_step // self.n_optimizers

    def monitor(self, set_name: str) -> tuple[str, str]:
        """The checkpoint metric of a val set and its mode (``max`` or ``min``)."""
        return f"val/{set_name}/psnr", "max"

    def _log_eval(self, stage: str, dataloader_idx: int, out: Mapping[str, torch.Tensor], n: int) -> None:
        """Log per-image metrics ``out`` of one eval batch as ``<stage>/<set name>/<metric>`` epoch means."""
        names = getattr(self.trainer.datamodule, f"{stage}_names", None) if self._trainer is not None else None
        set_name = names[dataloader_idx] if names else f"set{dataloader_idx}"
        for key, value in out.items():
            self.log(
                f"{stage}/{set_name}/{key}",
                value.mean(),
                batch_size=n,
                on_epoch=True,
                on_step=False,
                add_dataloader_idx=False,
                sync_dist=True,
            )

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _named_optimizers(self) -> dict[str, Any]:
        opts = self.optimizers()
        return dict(zip(self.opt_names, opts if isinstance(opts, list) else [opts]))

    def _should_log(self) -> bool:
        """Whether Lightning writes this iteration's step logs (every ``trainer.log_every_n_steps``)."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", False))

    def _step(
        self,
        name: str,
        optimizer: Any,
        loss_fn: Callable[..., dict[str, torch.Tensor]],
        *args: Any,
        on_parts: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
        **tensors: Any,
    ) -> dict[str, torch.Tensor]:
        """One optimizer step of network ``name`` on ``sum(loss_fn(*args, **tensors).values())``; returns its
        logs. ``on_parts`` may add logs computed from the weighted terms before the backward pass."""
        with self.toggled_optimizer(optimizer):
            parts = loss_fn(*args, **tensors)
            if not parts:
                raise ValueError(f"the {name} objective has no term with a non-zero weight")
            total = sum(parts.values())
            if self.check_finite and not finite_on_every_rank(total):
                bad = [k for k, v in parts.items() if not torch.isfinite(v)]
                where = f"terms {bad}" if bad else "on another process (this one is finite)"
                raise FloatingPointError(
                    f"non-finite {name} loss at iteration {self.iteration} (global step {self.global_step}): "
                    f"{where}; the last good checkpoint is kept"
                )
            extra = on_parts(parts) if on_parts is not None else {}
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(total)
            optimizer.step()
        logs = {f"train/{name}/weighted/{k}": v.detach() for k, v in parts.items()}  # weight x term
        logs[f"train/{name}/total"] = total.detach()
        return logs | extra

    def _step_schedulers(self, logs: dict[str, torch.Tensor]) -> None:
        schedulers = self.lr_schedulers()
        for name, scheduler in zip(self.opt_names, schedulers if isinstance(schedulers, list) else [schedulers]):
            scheduler.step()
            logs[f"train/lr/{name}"] = torch.tensor(scheduler.get_last_lr()[0])

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        nets = self.networks()
        optimizers, schedulers = [], []
        for name in self.opt_names:
            optimizer = self._optim[name]["optimizer"](nets[name].parameters())
            optimizers.append(optimizer)
            schedulers.append(
                torch.optim.lr_scheduler.LambdaLR(optimizer, partial(linear_decay, total=self.iterations))
            )
        return optimizers, schedulers

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip per network, after AMP unscaling (Lightning calls this hook after ``unscale_``)."""
        for name, opt in zip(self.opt_names, self.trainer.optimizers):
            if opt is optimizer:
                clip = self._optim[name].get("grad_clip")
                if clip:
                    self.clip_gradients(optimizer, gradient_clip_val=float(clip), gradient_clip_algorithm="norm")
                return

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the global torch RNG drives dropout in some backbones (MIMO-UNet+): keep it for exact resume
        # (data order and augmentation do not use it: see neurmap.data.datamodule)
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
