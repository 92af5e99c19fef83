"""Training: build data, system, callbacks, loggers and trainer from a composed config, fit, test, report.

:func:`train` is what ``python -m neurmap.train`` (:mod:`neurmap.train`) runs on the config Hydra composes
from ``conf/train.yaml``. Before anything is built, the config is checked: a ``???`` value, ``iterations``
below 1 and the trainer settings in :data:`NO_EFFECT` (which this module owns or manual optimization
ignores) raise a one-line :class:`UsageError`. The run length is ``iterations`` (``max_steps`` = iterations
x the variant's optimizers); ``ckpt_path=auto|last|PATH`` resumes; ``dry_run=true`` builds every dataset,
times a few iterations and estimates the run instead of training. Every checkpoint carries the resolved
config and its :func:`provenance`; rank 0 ends by printing where the run's files are and writing
``final_metrics.json`` (read by ``python -m neurmap.collect``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from neurmap.callbacks.progress import IterationProgressBar
from neurmap.config import CONFIG_DIR, FINAL_METRICS, instantiate_datamodule, instantiate_system
from neurmap.data.io import missing_roots
from neurmap.errors import Stopped, UsageError, stoppable, without_unsafe_advice
from neurmap.losses.objectives import LossWeights, from_mapping, missing_oracle_motion
from neurmap.releases import PREFIX as RELEASE
from neurmap.releases import weights_path
from neurmap.utils.files import write_json
from neurmap.utils.records import check_not_finished, check_not_stopped

log = logging.getLogger("neurmap.train")

#: The command's name, the prefix of its messages.
PROG = "neurmap.train"

__all__ = ["NO_EFFECT", "RESUME_KEYS", "IterationTimer", "provenance", "time_iterations", "train"]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The whole run configuration as plain containers (without Hydra's own node); a missing value
    (``???``) or an interpolation that cannot be resolved (an unset variable, a missing release) becomes a
    one-line UsageError naming the key."""
    try:
        return {
            k: OmegaConf.to_container(v, resolve=True, throw_on_missing=True) if OmegaConf.is_config(v) else v
            for k, v in ((k, cfg[k]) for k in cfg if k != "hydra")
        }
    except MissingMandatoryValue as err:
        key = err.full_key  # the dotted key from the root (model.deblur.pretrained), not its last part
        raise UsageError(f"missing value for {key}: set it on the command line, e.g. {key}=...") from None
    except InterpolationResolutionError as err:
        first = str(err).strip().splitlines()[0]
        first = first.split(" raised while resolving interpolation: ", 1)[-1]
        raise UsageError(f"{err.full_key}: {first}" if err.full_key else first) from None


#: Trainer settings this script owns or that manual optimization ignores: setting one would change nothing.
NO_EFFECT = {
    "trainer.max_steps": "the run length is `iterations` (max_steps = iterations x the variant's optimizers); "
    "set iterations=N instead",
    "trainer.gradient_clip_val": "NeurMAP clips each network itself; set model.<deblur|motion|disc>.grad_clip instead",
    "trainer.accumulate_grad_batches": "every batch steps every optimizer; raise data.batch_size_paired / "
    "data.batch_size_unpaired instead",
}


def _check_config(cfg: DictConfig) -> dict[str, Any]:
    """Validate what Hydra cannot and return the resolved run configuration."""
    for key, instead in NO_EFFECT.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != -1:  # -1: trainer/default.yaml's "unset" max_steps
            raise UsageError(f"{key}={value} has no effect here: {instead}")
    resolved = _resolved(cfg)
    deblur = resolved.get("model", {}).get("deblur") or {}
    if str(deblur.get("pretrained")).startswith(RELEASE):  # model.deblur.pretrained=release:<name>
        deblur["pretrained"] = cfg.model.deblur.pretrained = weights_path(deblur["pretrained"])
    _record_effective_weights(resolved)
    iterations = resolved["iterations"]
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise UsageError(f"iterations={iterations}: expected a positive integer (the number of training iterations)")
    seed = resolved.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"seed={seed}: expected an integer")
    for net in ("deblur", "motion", "disc"):
        key = f"model.{net}.optimizer.lr"
        lr = OmegaConf.select(cfg, key, default=None)
        if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0):
            raise UsageError(f"{key}={lr}: expected a learning rate >= 0")
    _check_accelerator(cfg)
    return resolved


def _check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without a CUDA GPU: one line that says so, before anything is built."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        choice = HydraConfig.get().runtime.choices.get("trainer") if HydraConfig.initialized() else None
        setting = f"trainer={choice}" if choice else f"trainer.accelerator={accelerator}"
        raise UsageError(
            f"{setting} needs a CUDA GPU, and torch finds none on this machine; train on the CPU with trainer=cpu "
            "(or trainer.accelerator=cpu)"
        )


def _check_data_roots(cfg: DictConfig, resolved: dict[str, Any]) -> None:
    """Every missing data folder of the data choice, in one line (not one per try)."""
    missing = missing_roots(resolved.get("data"))
    if missing:
        choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
        raise UsageError(
            f"data={choice or '?'}: {len(missing)} data folder(s) do not exist: {', '.join(missing)} "
            "(set NEURMAP_DATA, or paths.<dataset>=<folder>; see README 'Data')"
        )


def _record_effective_weights(resolved: dict[str, Any]) -> None:
    """Record, beside the ``loss`` node (which stays the weights a system is built from), the factor each loss
    term enters its sum with (``loss_effective``: lam and beta folded in, :meth:`LossWeights.effective`), so
    ``lam: 100`` next to ``content: 1`` is never misread."""
    loss = resolved.get("loss")
    if not isinstance(loss, dict):
        return
    effective = dataclasses.asdict(from_mapping(LossWeights, loss, "loss").effective())
    resolved["loss_effective"] = {k: v for k, v in effective.items() if k not in ("lam", "beta")}


def _check_oracle_data(datamodule: Any, cfg: DictConfig) -> None:
    """The oracle-motion ablation needs the unpaired blurry images' true motion: stop before training without it."""
    datamodule.setup("fit")
    if "motion" not in datamodule.train_sets["blur"][0]:
        raise UsageError(missing_oracle_motion(cfg.variant.name))


def provenance() -> dict[str, Any]:
    """Where a run came from: git revision (and whether the tree had local changes), the command line,
    the Hydra choices and sweep, the host. Stored with the config in every checkpoint and logged as
    hyper-parameters (W&B config, TensorBoard hparams, CSV hparams.yaml)."""
    import platform
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(CONFIG_DIR))
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    info: dict[str, Any] = {
        "git_revision": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "torch": str(torch.__version__),
    }
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        info["choices"] = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
        info["overrides"] = list(hydra_cfg.overrides.task)
        info["sweep"] = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    return info


#: Settings a resumed run must share with its checkpoint: they shape the learning-rate schedule and the
#: networks whose state is restored.
RESUME_KEYS = (
    "iterations",
    "model.deblur.name",
    "variant.name",
    "model.deblur.optimizer",
    "model.deblur.grad_clip",
    "model.motion.optimizer",
    "model.motion.grad_clip",
    "model.disc.optimizer",
    "model.disc.grad_clip",
)


#: The config group whose option sets a resume key (its option is named after the value).
CHOICE_OF = {"model.deblur.name": "backbone", "variant.name": "variant"}


def _resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``last``/``auto`` take the newer of ``last.ckpt`` and ``interrupted.ckpt``
    (Ctrl+C) in this run's folder; a path is taken as it is. The checkpoint must be a neurmap checkpoint of
    the same run settings (:data:`RESUME_KEYS`)."""
    if cfg.ckpt_path in (None, ""):
        return None
    folder = output_dir / "checkpoints"
    candidates = [p for p in (folder / "last.ckpt", folder / "interrupted.ckpt") if p.is_file()]
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None
    if cfg.ckpt_path == "auto":  # a requeued cluster job resumes; a new one starts fresh
        if newest is None:
            return None
        log.info("ckpt_path=auto: resuming from %s", newest)
        path = newest
    elif cfg.ckpt_path == "last":
        if newest is None:
            raise UsageError(
                f"ckpt_path=last: no last.ckpt or interrupted.ckpt in {folder} (ckpt_path=last looks in "
                "<hydra.run.dir>/checkpoints: pass hydra.run.dir=<the run's folder>, or ckpt_path=<file>)"
            )
        path = newest
        if newest.name == "interrupted.ckpt":
            log.info("ckpt_path=last: resuming from %s (newer than last.ckpt; the run was stopped by Ctrl+C)", newest)
    else:
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise UsageError(f"ckpt_path={path}: no such checkpoint file")
    _check_resume(cfg, path)
    return str(path)


def _check_resume(cfg: DictConfig, path: Path) -> None:
    """One line when ``path`` is not a neurmap checkpoint, or was written with other :data:`RESUME_KEYS`."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["hyper_parameters"]["config"]
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        first = without_unsafe_advice(str(err)) if "Weights only load failed" in str(err) else first
        raise UsageError(f"ckpt_path={path}: not a neurmap training checkpoint ({first})") from None
    saved_cfg = OmegaConf.create(saved)
    for key in RESUME_KEYS:
        before, now = OmegaConf.select(saved_cfg, key, default=None), OmegaConf.select(cfg, key, default=None)
        before = OmegaConf.to_container(before) if OmegaConf.is_config(before) else before
        now = OmegaConf.to_container(now, resolve=True) if OmegaConf.is_config(now) else now
        if before != now:
            setting = CHOICE_OF.get(key, key)  # what a user types: backbone=unet, not model.deblur.name=unet
            raise UsageError(
                f"ckpt_path={path} was trained with {key}={before}, this run has {key}={now}: resume with "
                f"{setting}={before}, or start a new run from its weights with model.deblur.pretrained={path}"
            )


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict config that has a ``_target_`` (null entries are skipped)."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def train(cfg: DictConfig) -> float | None:
    """Build data, system, callbacks, loggers and trainer from ``cfg``; fit (and test). Returns the
    metric named by ``optimized_metric`` (for sweepers).

    SIGTERM, like Ctrl+C, stops it at any point with one line and ``SystemExit(1)``: before training (set-up, the
    dry run) the line says that nothing was saved, or names the checkpoint a resume would start from; during
    training, the checkpoint written where it stopped; while testing, the trained weights and how to test them.
    """
    output_dir = Path(cfg.paths.output_dir)
    with stoppable():  # outside Lightning's own handling (fit, test), SIGTERM raises as Ctrl+C does
        try:
            run = _set_up(cfg, output_dir)
        except (KeyboardInterrupt, SIGTERMException) as stop:  # SIGTERMException: from the dry run's timing
            _exit_stopped(_set_up_stop_line(stop, output_dir), rank_zero_only.rank == 0)
        if run is None:  # dry run
            return None
        return _fit_and_test(cfg, output_dir, run)


class _Run(NamedTuple):
    """What :func:`_set_up` builds for :func:`_fit_and_test`."""

    datamodule: Any
    system: Any
    trainer: L.Trainer
    loggers: list[Any]
    monitor: str | None
    ckpt_path: str | None


def _set_up(cfg: DictConfig, output_dir: Path) -> _Run | None:
    """Check the config and build everything a run needs; None after a dry run."""
    run_config = _check_config(cfg)
    check_not_finished(output_dir)
    check_not_stopped(output_dir, cfg.get("ckpt_path"))
    L.seed_everything(int(cfg.seed), workers=True)

    _check_data_roots(cfg, run_config)
    datamodule = instantiate_datamodule(cfg)
    if cfg.variant.get("oracle_motion"):
        _check_oracle_data(datamodule, cfg)
    system = instantiate_system(cfg)  # D starts from model.deblur.pretrained, M from model.motion_pretrained
    system.remember_config(run_config, provenance())
    deblur = cfg.model.get("deblur")  # variant=motion_pretrain builds M only
    if deblur is not None and deblur.get("pretrained"):
        log.info("deblurring network initialised from %s", deblur.pretrained)
    if cfg.model.get("motion_pretrained"):
        log.info("motion network initialised from %s", cfg.model.motion_pretrained)

    val_names = list(cfg.data.get("val") or {})
    monitor, mode = system.monitor(val_names[0]) if val_names else (None, "max")
    callbacks_cfg = cfg.get("callbacks") or {}
    if callbacks_cfg.get("model_checkpoint") and callbacks_cfg.model_checkpoint.get("monitor") == "auto":
        callbacks_cfg.model_checkpoint.monitor = monitor
        callbacks_cfg.model_checkpoint.mode = mode
    callbacks = _instantiate_dict(callbacks_cfg)
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(IterationProgressBar())  # Lightning's own would count batches against optimizer steps
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_steps=int(cfg.iterations) * system.n_optimizers,
    )
    log.info(
        "variant %s, backbone %s, data %s: %d iterations x %d optimizers",
        cfg.variant.name,
        deblur.name if deblur is not None else "none (M only)",
        cfg.data.get("_target_", "?").rsplit(".", 1)[-1],
        cfg.iterations,
        system.n_optimizers,
    )
    if cfg.get("dry_run"):
        _dry_run(cfg, datamodule, system)
        return None
    return _Run(datamodule, system, trainer, loggers, monitor, _resolve_ckpt_path(cfg, output_dir))


def _fit_and_test(cfg: DictConfig, output_dir: Path, run: _Run) -> float | None:
    """Fit, test, report; a stop during fit or test exits with one line (:func:`_stop_line`)."""
    datamodule, system, trainer, ckpt_path = run.datamodule, run.system, run.trainer, run.ckpt_path
    testing = False
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        testing = True
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.get("test") and not trainer.fast_dev_run and getattr(datamodule, "test", None):
            for result in trainer.test(system, datamodule=datamodule, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
    except (SystemExit, KeyboardInterrupt) as stop:  # Lightning ends SIGTERM and Ctrl+C with SystemExit
        _exit_stopped(_stop_line(stop, trainer, output_dir, testing), trainer.is_global_zero)
    if trainer.is_global_zero:
        tested = bool(cfg.get("test")) and not trainer.fast_dev_run and bool(getattr(datamodule, "test", None))
        _report(trainer, output_dir, metrics, tested)
    _finish_wandb(run.loggers)
    name = cfg.get("optimized_metric") or run.monitor
    return metrics.get(name) if name else None


def _exit_stopped(line: str, rank_zero: bool) -> NoReturn:
    """Print the one line of a stopped run (rank zero) and exit with status 1."""
    if rank_zero:
        print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def _finish_wandb(loggers: list[Any]) -> None:
    """End this run's W&B run, so that the next job of a sweep in the same process (the basic launcher) starts
    its own instead of logging into this one."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()


def _stop_cause(stop: BaseException) -> BaseException:
    """What stopped a run: Lightning turns a KeyboardInterrupt (Ctrl+C, or SIGTERM outside its own handling) into
    ``sys.exit(1)`` raised while handling it, and re-raises its own SIGTERMException."""
    cause = stop.__context__
    return cause if type(stop) is SystemExit and isinstance(cause, KeyboardInterrupt) else stop


def _signal_name(cause: BaseException) -> str:
    return "SIGTERM" if isinstance(cause, (SIGTERMException, Stopped)) else "Ctrl+C"


#: How a stopped run goes on, in its one line.
_RESUME = "with the same settings and hydra.run.dir={output_dir} ckpt_path=last"


def _set_up_stop_line(stop: BaseException, output_dir: Path) -> str:
    """One line for a run stopped before training started: nothing was saved, or the checkpoint already there."""
    line = f"stopped by {_signal_name(stop)} before training started; nothing was saved"
    folder = output_dir / "checkpoints"
    found = [p for p in (folder / "last.ckpt", folder / "interrupted.ckpt") if p.is_file()]
    if found:
        newest = max(found, key=lambda p: p.stat().st_mtime_ns)
        return f"{line}; {newest} is unchanged: resume {_RESUME.format(output_dir=output_dir)}"
    return f"{line} (run the same command again to start)"


def _stop_line(stop: BaseException, trainer: L.Trainer, output_dir: Path, testing: bool = False) -> str:
    """One line for a run stopped by SIGTERM or Ctrl+C during fit (where it stopped and the checkpoint to resume
    from) or while testing after fit (the trained weights, and how to test them without training again)."""
    cause = _stop_cause(stop)
    how = _signal_name(cause)
    iterations = trainer.global_step // max(1, len(trainer.optimizers))
    resume = _RESUME.format(output_dir=output_dir)
    if testing:
        last = output_dir / "checkpoints" / "last.ckpt"
        line = f"stopped by {how} while testing, after all {iterations} iteration(s) were trained"
        if last.is_file():
            return f"{line}; the trained weights are in {last}: test them {resume} (nothing is trained again)"
        return f"{line}; no checkpoint was saved (callbacks.last_checkpoint is off)"
    # LastCheckpoint: SIGTERM during fit stops at a batch boundary (last.ckpt), a KeyboardInterrupt anywhere
    name = "last.ckpt" if isinstance(cause, SIGTERMException) else "interrupted.ckpt"
    ckpt = output_dir / "checkpoints" / name
    line = f"stopped by {how} after {iterations} iteration(s)"
    if ckpt.is_file():
        return f"{line}; saved {ckpt}: resume {resume}"
    return f"{line}; no checkpoint was saved (callbacks.last_checkpoint is off)"


class IterationTimer(L.Callback):
    """Wall-clock seconds of every training iteration (batch), in order."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def time_iterations(
    cfg: DictConfig, datamodule: L.LightningDataModule, system: L.LightningModule, iterations: int
) -> tuple[list[float], L.Trainer]:
    """Train ``iterations`` iterations with ``cfg.trainer`` and nothing else (no validation, logging or
    checkpoints); returns the seconds of each iteration and the trainer. The one timing helper of the dry run
    and of the lab's iteration timings (lab/benchmarks/iteration.py)."""
    timer = IterationTimer()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        max_steps=iterations * system.n_optimizers,
    )
    trainer.fit(system, datamodule=datamodule)
    return timer.times, trainer


def _dry_run(cfg: DictConfig, datamodule: L.LightningDataModule, system: L.LightningModule) -> None:
    """Build every dataset, print the counts, time a few iterations and estimate the whole run."""
    import statistics

    datamodule.setup("fit")
    datamodule.setup("test")
    lines = ["dry run: data"]
    for split in ("train", "val", "test"):
        for name, dataset in getattr(datamodule, f"{split}_sets", {}).items():
            lines.append(f"  {split:5s} {name:24s} {len(dataset):7d} images")
    steps = int(cfg.dry_run_iterations)
    times, trainer = time_iterations(cfg, datamodule, system, steps + 1)
    per_iteration = statistics.median(times[1:] or times)  # the first iteration warms up
    total = per_iteration * int(cfg.iterations)
    lines += [
        f"dry run: {per_iteration:.3f} s per iteration (median of {len(times[1:] or times)} after a warm-up), "
        f"{trainer.strategy.root_device}",
        f"estimated training time for {cfg.iterations} iterations: {total / 3600:.2f} h ({total / 60:.1f} min), "
        "plus validation",
    ]
    print("\n".join(lines), flush=True)


def _empty_because(tested: bool, metrics: dict[str, float]) -> str | None:
    """Why a run's final metrics are empty (None when they are not)."""
    if any(k.startswith(("val/", "test/")) for k in metrics):
        return None
    if not tested:
        return (
            "test=false: the test sets were not run, and no validation ran within the iterations "
            "(trainer.val_check_interval); run neurmap.evaluate on the checkpoint for numbers"
        )
    return "the data choice has no val or test sets"


def _report(trainer: L.Trainer, output_dir: Path, metrics: dict[str, float], tested: bool = True) -> None:
    """Print where the checkpoints, metrics and images of this run are, and the final numbers."""
    lines = [f"run directory: {output_dir}"]
    ckpt = trainer.checkpoint_callback
    last = output_dir / "checkpoints" / "last.ckpt"  # LastCheckpoint's, the one ckpt_path=last takes
    if ckpt is not None and (last.is_file() or getattr(ckpt, "last_model_path", "")):
        shown_last = last if last.is_file() else ckpt.last_model_path
        lines.append(f"checkpoints:   {shown_last} (last), {ckpt.best_model_path or '-'} (best)")
    for logger in trainer.loggers:
        log_dir = Path(getattr(logger, "log_dir", None) or logger.save_dir or output_dir)
        lines.append(f"{type(logger).__name__}: {log_dir}")
        if (log_dir / "metrics.csv").exists():
            lines.append(f"metrics:       {log_dir / 'metrics.csv'}")
        if (log_dir / "images").is_dir():
            lines.append(f"image panels:  {log_dir / 'images'}")
    shown = {k: v for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/"))}
    lines += [f"  {k} = {v:.4f}" for k, v in shown.items()]
    # one machine-readable file per run, read by `python -m neurmap.collect` to tabulate sweeps
    final = {"iterations": trainer.global_step // max(1, len(trainer.optimizers)), "metrics": shown}
    why = _empty_because(tested, shown)
    if why is not None:
        final["metrics_empty"] = why
        lines.append(f"  no metrics: {why}")
    write_json(output_dir / FINAL_METRICS, final)
    lines.append(f"final metrics: {output_dir / FINAL_METRICS}")
    print("\n".join(lines), flush=True)
