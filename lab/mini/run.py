"""The mini reproduction's stages, each the command a user would type, run one after the other: build the data
(in process, cached); without the released weights, train a from-scratch start (``experiment=mini_scratch``);
converge the start on the paired source family (``experiment=mini_source``, early-stopped on the paired val
split; cached) unless ``source_ckpt`` gives one; with ``minutes_per_method``, time a few iterations and size the
runs; pretrain M (``experiment=mini_motion``; cached) unless ``motion_ckpt`` gives one; the arms as Hydra
multiruns of ``experiment=mini_neurmap`` over the variants (one for those with M, which start it from the
pretraining, one for those without), each continuing from the source-converged start; the ceiling; one
evaluation multirun over every checkpoint; ``neurmap.collect`` over it.

Each command's output goes to ``<work>/logs/<stage>.log``; a failing one stops the run naming its log
(:class:`StageFailed`). Every job is composed here first, so a bad override stops the run before anything trains.
A stage's folder holds ``stage.json`` (its command and a digest of the configs it composes): a cached stage whose
folder holds a finished run of the same command and configs is reused, and a folder without that record is never
deleted. The settings stay as composed; what the run
decides and measures is recorded in :class:`Run`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lab.mini.common import PROG, ReproError, StageFailed, log, shown
from lab.mini.data import build_data, skimage_data
from neurmap.composition import check_overrides
from neurmap.errors import UsageError
from neurmap.utils.files import atomic_write

__all__ = ["EVAL_SET", "MOTION_VARIANTS", "RECORD", "Run", "Stage", "duration", "run"]

#: Variants with a motion network M: they start M from the motion-pretraining run.
MOTION_VARIANTS = ("neurmap", "neurmap_frozen_m", "net2", "net3", "oracle_motion")
#: Relative cost of a fine-tune: sweeps list the longest first, so the joblib launcher starts them first.
COST = {"neurmap": 4, "oracle_motion": 4, "net3": 4, "neurmap_frozen_m": 3, "net2": 3, "net1": 2, "baseline": 1}
#: The record of the command that wrote a stage's folder.
RECORD = "stage.json"
#: The ceiling's paired data: the test family's own pairs.
CEILING = ("variant=baseline", "data.paired.records.root=${paths.mini}/kernel_synth/train")
EVAL_SET = "kernel_synth"  # the test set of data=kernel_synth


@dataclass(frozen=True)
class Stage:
    """One step: its name, the command a user would type (``env`` shown as a prefix), the folder it writes."""

    name: str
    argv: tuple[str, ...]  # after "python"; empty for a step done in process
    env: dict[str, str] = field(default_factory=dict)
    out: Path | None = None

    @property
    def command(self) -> str:
        prefix = [f"{k}={v}" for k, v in self.env.items()]
        return shown(" ".join([*prefix, "python", *(shlex.quote(a) for a in self.argv)]))


@dataclass
class Run:
    """One reproduction: its settings (read-only), its command line, and what it decided and measured."""

    cfg: DictConfig
    argv: list[str]
    released: bool = False
    release: str = ""  # the released weights (or the scratch run's last.ckpt): the source stage starts there
    start: str = ""  # the start the arms load (the source-converged best.ckpt, or ``release`` with source=false)
    source_iterations: int | None = None  # iterations the source stage ran before its plateau
    motion_ckpt: str = ""  # the M the fine-tunes with M start from ("" = Xavier)
    iterations: dict[str, int | None] = field(default_factory=dict)  # experiment -> iterations (None: its yaml)
    ckpts: dict[str, str] = field(default_factory=dict)  # run key ("start", variant) -> checkpoint evaluated
    stages: list[tuple[Stage, float, str]] = field(default_factory=list)  # (stage, seconds, note) as they ran
    manifest: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-min load average at the start and at the end
    seconds: float = math.nan

    @property
    def work(self) -> Path:
        return Path(self.cfg.work).expanduser()

    def path(self, *parts: str) -> str:
        """A path under the work folder as the commands show it (relative to the current folder when below it)."""
        return rel(self.work.joinpath(*parts))


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def loadavg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:04.1f} s" if minutes else f"{sec:.1f} s"


def _value(path: str) -> str:
    """A path as a Hydra override value, quoted when it holds characters of the override grammar."""
    return f"'{path}'" if any(c in path for c in "=,[]{}()'\" ") else path


def train_overrides(run: Run, experiment: str, variants: Sequence[str] = (), motion: bool = False) -> list[str]:
    """Hydra overrides of a training (``variants``: one value, or several for a multirun), without the run
    folder and the launcher; ``motion`` starts M from the motion-pretraining run."""
    cfg = run.cfg
    args = [f"experiment={experiment}", *([f"variant={','.join(variants)}"] if variants else [])]
    if experiment != "mini_motion":
        args.append(f"backbone={cfg.backbone_name}")
    args += [f"seed={cfg.seed}", f"paths.mini={run.path('data')}"]
    if run.iterations.get(experiment) is not None:
        args.append(f"iterations={run.iterations[experiment]}")
    if experiment == "mini_motion":
        return [*args, *cfg.motion_overrides]
    if experiment == "mini_source":
        args.append(f"model.deblur.pretrained={_value(run.release) or 'null'}")
        return [*args, *cfg.train_overrides, *cfg.source_overrides]
    if experiment == "mini_neurmap":
        args.append(f"model.deblur.pretrained={_value(run.start) or 'null'}")
        if motion and run.motion_ckpt:
            args.append(f"model.motion_pretrained={_value(run.motion_ckpt)}")
    return [*args, *cfg.train_overrides]


def _launcher(run: Run, group: str) -> list[str]:
    return [group, f"hydra.launcher.n_jobs={run.cfg.jobs}"] if run.cfg.jobs > 1 else []


def training(run: Run, name: str, experiment: str, folder: str, extra: Sequence[str] = ()) -> Stage:
    """One training run of ``experiment`` into ``<work>/runs/<folder>``, alone on the machine (every core)."""
    out = run.work / "runs" / folder
    argv = ("-m", "neurmap.train", *train_overrides(run, experiment), *extra, f"hydra.run.dir={rel(out)}")
    return Stage(name, argv, out=out)


def sweep(run: Run, name: str, variants: Sequence[str], motion: bool, extra: Sequence[str] = ()) -> Stage:
    """A fine-tune multirun over ``variants`` (longest first) with ``extra`` overrides, into
    ``<work>/sweeps/<name>``; a sweep of one job runs alone with the threads of every job."""
    out = run.work / "sweeps" / name
    overrides = [*train_overrides(run, "mini_neurmap", sorted(variants, key=lambda v: -COST.get(v, 0)), motion), *extra]
    launcher = _launcher(run, "cluster=joblib") if len(variants) > 1 else []
    threads = run.cfg.threads if len(variants) > 1 else run.cfg.threads * max(1, run.cfg.jobs)
    argv = ("-m", "neurmap.train", "-m", *launcher, *overrides, f"hydra.sweep.dir={rel(out)}")
    return Stage(f"fine-tunes {name.replace('_', ' ')}", argv, {"OMP_NUM_THREADS": str(threads)}, out)


def evaluation(run: Run) -> Stage:
    """One evaluation multirun over every checkpoint of ``run.ckpts`` on the held-out test set."""
    cfg = run.cfg
    argv = ("-m", "neurmap.evaluate", "-m", *_launcher(run, "hydra/launcher=joblib"), f"data={EVAL_SET}")
    argv += (f"ckpt={','.join(run.ckpts.values())}", f"backbone={cfg.backbone_name}", f"seed={cfg.seed}", "device=cpu")
    argv += (f"paths.kernel_synth={run.path('data', 'kernel_synth')}", f"paths.log_dir={run.path()}", "progress=false")
    argv += ("metrics.signal=true", f"hydra.sweep.dir={run.path('sweeps', 'evaluate')}", *cfg.eval_overrides)
    return Stage("evaluate", argv, {"OMP_NUM_THREADS": str(cfg.threads)}, run.work / "sweeps" / "evaluate")


def check_configs(stages: Sequence[Stage]) -> None:
    """Compose every job of ``stages`` as the commands will, so that a bad override stops the run first."""
    for stage in stages:
        module, overrides = stage.argv[1], [a for a in stage.argv[2:] if a != "-m"]
        try:
            check_overrides(module.rsplit(".", 1)[1], overrides, multirun="-m" in stage.argv[2:])
        except UsageError as err:
            raise ReproError(f"{module} overrides of {stage.name}: {err}") from None


@dataclass
class _Started:
    """A stage's running subprocess, its open log and its start time."""

    stage: Stage
    process: Any
    handle: Any
    log_path: Path
    start: float


def slots(run: Run, runs: Sequence[tuple[Stage, list[str]]]) -> list[tuple[Stage, int]]:
    """Each training stage with the number of the ``jobs`` slots it takes: a single-job stage (one arm, or the
    ceiling) takes one slot with ``threads`` torch threads; a sweep of several jobs takes every slot, its launcher
    running them (:func:`execute_queue` runs the stages in this order)."""
    width = max(1, run.cfg.jobs)
    taken = []
    for stage, names in runs:
        if len(names) <= 1:
            stage.env["OMP_NUM_THREADS"] = str(run.cfg.threads if width > 1 else run.cfg.threads * width)
        taken.append((stage, 1 if len(names) <= 1 else width))
    return taken


def fingerprint(stage: Stage) -> str:
    """A digest of every job config ``stage``'s command composes (the hydra node left out): it changes when
    conf/ does, even where the command line stays the same."""
    import hashlib

    from omegaconf import OmegaConf

    module, overrides = stage.argv[1], [a for a in stage.argv[2:] if a != "-m"]
    jobs = check_overrides(module.rsplit(".", 1)[1], overrides, multirun="-m" in stage.argv[2:])
    text = "\n".join(OmegaConf.to_yaml({k: job[k] for k in job if k != "hydra"}) for job in jobs)
    return hashlib.sha256(text.encode()).hexdigest()


def finished(folder: Path, argv: Sequence[str], config: str) -> bool:
    """Whether ``folder`` holds a finished run written by the command ``argv`` composing the configs of digest
    ``config`` (its record and final metrics)."""
    from neurmap.config import FINAL_METRICS

    record = folder / RECORD
    done = (folder / FINAL_METRICS).is_file() or (
        "-m" in argv[2:]
        and all((job / FINAL_METRICS).is_file() for job in folder.glob("*") if job.is_dir())
        and any(folder.glob(f"*/{FINAL_METRICS}"))
    )  # a run, or a sweep whose every job finished
    return record.is_file() and done and json.loads(record.read_text()) == {"argv": list(argv), "config": config}


def _prepare(run: Run, stage: Stage, cache: bool) -> bool:
    """Make ``stage``'s output folder and record its command there; False when a cached finished run of the same
    command is reused instead. A stale folder is removed only when this command wrote it (its record), so a stale
    last.ckpt is never versioned and nothing of a user's is deleted."""
    if stage.out is None:
        return True
    config = fingerprint(stage)
    if cache and finished(stage.out, stage.argv, config):
        log(f"{stage.name}: reusing {rel(stage.out)} (a finished run of the same command)")
        run.stages.append((stage, 0.0, "reused"))
        return False
    if stage.out.exists():
        if not (stage.out / RECORD).is_file():
            raise ReproError(f"{stage.out} exists and was not written by {PROG}; move it away or choose another work=")
        shutil.rmtree(stage.out)
    stage.out.mkdir(parents=True)
    atomic_write(stage.out / RECORD, json.dumps({"argv": list(stage.argv), "config": config}, indent=2))
    return True


def execute(run: Run, stage: Stage, cache: bool = False) -> None:
    """Run ``stage`` as a subprocess (output to ``<work>/logs/<stage>.log``) in a new output folder; with
    ``cache``, a folder that holds a finished run of the same command is reused instead. Records the wall time."""
    execute_together(run, [stage], cache)


def _start(run: Run, stage: Stage, cache: bool) -> _Started | None:
    """Start ``stage`` as a subprocess with its own log; None when a cached finished run is reused instead."""
    if not _prepare(run, stage, cache):
        return None
    log_path = run.work / "logs" / f"{stage.name.replace(' ', '_')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{stage.name}\n    $ {stage.command}\n    log: {log_path}")
    handle = open(log_path, "w")  # noqa: SIM115 - closed in _finish
    env = {**os.environ, **stage.env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, *stage.argv], stdout=handle, stderr=subprocess.STDOUT, env=env)
    return _Started(stage, process, handle, log_path, time.perf_counter())


def _finish(run: Run, started: _Started) -> str | None:
    """Wait for a started stage and record its wall time; the failure's one line, or None."""
    code = started.process.wait()
    started.handle.close()
    run.stages.append((started.stage, time.perf_counter() - started.start, ""))
    if code == 0:
        log(f"{started.stage.name}: done in {duration(run.stages[-1][1])}")
        return None
    lines = [line for line in started.log_path.read_text(errors="replace").splitlines() if line.strip()]
    last = " ".join(lines[-1].split())[:300] if lines else "(no output)"
    return f"{started.stage.name} failed with exit status {code} (log: {started.log_path}): {last}"


def execute_together(run: Run, stages: Sequence[Stage], cache: bool = False) -> None:
    """Run independent ``stages`` side by side, each a subprocess with its own log, and wait for all of them;
    the first that failed stops the run. Each records its wall time."""
    execute_queue(run, [(stage, 1) for stage in stages], width=len(stages), cache=cache)


def execute_queue(
    run: Run, items: Sequence[tuple[Stage, int]], width: int | None = None, cache: bool = False, poll: float = 1.0
) -> None:
    """Run ``items`` (a stage and the slots it takes, :func:`slots`) in their order on ``width`` slots (default
    ``jobs``): the next stage starts as soon as enough slots are free, so a slot a short stage leaves goes to the
    next stage instead of waiting for its partner. After a failure no new stage starts; the running ones end,
    and the first failure stops the run. Each stage records its wall time."""
    width = max(1, run.cfg.jobs if width is None else width)
    queue, running, failures = list(items), [], []
    while queue or running:
        while queue and not failures and sum(n for _, n in running) + min(queue[0][1], width) <= width:
            stage, need = queue.pop(0)
            started = _start(run, stage, cache)
            if started is not None:
                running.append((started, min(need, width)))
        if not running:
            break
        done = [item for item in running if item[0].process.poll() is not None]
        if not done:
            time.sleep(poll)
            continue
        for item in done:
            running.remove(item)
            failure = _finish(run, item[0])
            if failure is not None:
                failures.append(failure)
    if failures:
        raise StageFailed(failures[0])


def last_ckpt(run_dir: Path, name: str = "last.ckpt") -> str:
    ckpt = run_dir / "checkpoints" / name
    if not ckpt.is_file():
        raise ReproError(f"the run in {run_dir} finished without {ckpt}")
    return rel(ckpt)


def source_length(run_dir: Path) -> int | None:
    """Iterations the source stage ran (its ``final_metrics.json``), None when unknown."""
    from neurmap.config import FINAL_METRICS

    path = run_dir / FINAL_METRICS
    return int(json.loads(path.read_text())["iterations"]) if path.is_file() else None


def iterations_in(minutes: float, seconds_per_iteration: float) -> int:
    """How many iterations of ``seconds_per_iteration`` fit in ``minutes`` (at least 1)."""
    if not seconds_per_iteration > 0:
        raise ReproError(f"a timed iteration took {seconds_per_iteration} s; cannot size the runs")
    return max(1, int(minutes * 60.0 // seconds_per_iteration))


def fit_iterations(run: Run, experiments: Sequence[str], timed: int = 5, warmup: int = 3) -> None:
    """``minutes_per_method``: time iterations of each experiment on this machine with the run's own overrides
    and record how many fit in the budget (every fine-tune gets the NeurMAP count)."""
    from statistics import median

    from lab.benchmarks.iteration import time_iterations

    minutes = run.cfg.minutes_per_method
    for experiment in experiments:
        args = train_overrides(run, experiment, [run.cfg.method] if experiment == "mini_neurmap" else [])
        start = time.perf_counter()
        seconds = median(time_iterations(args, timed, warmup)[0])
        run.iterations[experiment] = count = iterations_in(minutes, seconds)
        note = f"{timed} timed after {warmup}: {seconds:.3f} s each -> {count} iterations in {minutes:g} min"
        run.stages.append((Stage(f"time {experiment}", ()), time.perf_counter() - start, note))
        log(note)


def run(cfg: DictConfig, argv: Sequence[str]) -> Run:
    """The whole reproduction: data, start, motion pretraining, fine-tune sweeps, evaluation sweep, collection.
    Returns the record the report reads (the data is built and nothing else with ``data_only``)."""
    t0 = time.perf_counter()
    if cfg.method not in ("neurmap", "neurmap_frozen_m"):
        raise ReproError(f"method must be neurmap or neurmap_frozen_m, got {cfg.method!r}")
    if cfg.method not in cfg.variants or not set(cfg.variants) <= set(MOTION_VARIANTS) | {"net1"}:
        raise ReproError(
            f"variants must include method ({cfg.method}), among {', '.join([*MOTION_VARIANTS, 'net1'])}; "
            f"got {list(cfg.variants)}"
        )
    if cfg.minutes_per_method is not None and not cfg.minutes_per_method > 0:
        raise ReproError(f"minutes_per_method must be > 0, got {cfg.minutes_per_method}")
    if not cfg.report_name or "/" in cfg.report_name:
        raise ReproError(f"report_name must be a file name without a folder, got {cfg.report_name!r}")
    if cfg.source_ckpt and not Path(cfg.source_ckpt).is_file():
        raise ReproError(f"source_ckpt={cfg.source_ckpt}: no such file (make reproduce-mini-source writes it)")
    weights = Path(cfg.weights).expanduser() if cfg.weights else None
    result = Run(cfg, list(argv), released=weights is not None and weights.exists(), load=[loadavg()])
    result.iterations = {
        "mini_neurmap": cfg.iterations,
        "mini_motion": cfg.motion_iterations,
        "mini_scratch": cfg.scratch_iterations,
        "mini_source": cfg.source_iterations,
    }
    result.work.mkdir(parents=True, exist_ok=True)
    skimage_data()  # fail before anything else when scikit-image is missing
    result.manifest = build_data(cfg, result.work / "data")
    note = "{paired} paired, {unpaired} unpaired, {test} test images".format(**result.manifest["counts"])
    result.stages.append((Stage("build data", ("-m", PROG, *argv, "data_only=true")), time.perf_counter() - t0, note))
    if cfg.data_only:
        return result

    if result.released:
        result.release = str(weights) if weights.is_absolute() else rel(weights)
    else:
        log(f"released weights not found at {weights}: training a from-scratch start first")
        scratch = training(result, "train scratch start", "mini_scratch", "scratch_baseline")
        check_configs([scratch])
        execute(result, scratch, cache=True)
        result.release = last_ckpt(scratch.out)
    result.start = result.release
    if cfg.source_ckpt:
        result.start = rel(Path(cfg.source_ckpt))
    elif cfg.source:
        source = training(result, "converge on the source", "mini_source", "source")
        check_configs([source])
        execute(result, source, cache=True)
        result.start = last_ckpt(source.out, "best.ckpt")
    if cfg.source and result.start != result.release:
        result.source_iterations = source_length(Path(result.start).parent.parent)
    if cfg.source_only:
        return result
    variants = ["baseline", *cfg.variants]
    with_m = [v for v in variants if v in MOTION_VARIANTS] if cfg.motion_pretrain else []
    without_m = [v for v in variants if v not in with_m]
    if cfg.minutes_per_method is not None:
        fit_iterations(result, ["mini_neurmap", *(["mini_motion"] if with_m and not cfg.motion_ckpt else [])])
    motion = None
    if with_m and cfg.motion_ckpt:
        if not Path(cfg.motion_ckpt).is_file():
            raise ReproError(f"motion_ckpt={cfg.motion_ckpt}: no such file (make reproduce-mini-motion writes it)")
        result.motion_ckpt = rel(Path(cfg.motion_ckpt))
    elif with_m:
        motion = training(result, "pretrain M", "mini_motion", "motion_pretrain")
        result.motion_ckpt = rel(motion.out / "checkpoints" / "last.ckpt")
    ceiling = training(result, "fine-tune ceiling", "mini_neurmap", "ceiling", CEILING) if cfg.ceiling else None
    own = {v: list(cfg.arm_overrides[v]) for v in variants if cfg.arm_overrides.get(v)}  # arms with their own weights
    shared_m, shared = [v for v in with_m if v not in own], [v for v in without_m if v not in own]
    sweeps = [(sweep(result, "with_motion", shared_m, True), shared_m)] if shared_m else []
    if shared:
        sweeps.append((sweep(result, "without_motion" if with_m else "all", shared, False), shared))
    sweeps += [(sweep(result, v, [v], v in with_m, extra), [v]) for v, extra in own.items()]
    sweeps.sort(key=lambda item: -sum(COST.get(v, 0) for v in item[1]))  # the longer sweep first
    check_configs([s for s in (motion, *(stage for stage, _ in sweeps), ceiling) if s is not None])

    if motion is not None:
        execute(result, motion, cache=True)
        last_ckpt(motion.out)
    result.ckpts = {"start": result.start} | ({"released": result.release} if result.start != result.release else {})
    runs = [*sweeps, *([(ceiling, [])] if ceiling is not None else [])]
    execute_queue(result, slots(result, runs), cache=True)
    for stage, names in sweeps:
        for name in names:  # job folders are <num>_<variant>-<backbone> (conf/hydra/default.yaml)
            found = sorted(stage.out.glob(f"*_{name}-*"))
            if len(found) != 1:
                raise ReproError(f"expected one job folder of variant {name} in {stage.out}, found {len(found)}")
            result.ckpts[name] = last_ckpt(found[0])
    if ceiling is not None:
        result.ckpts["ceiling"] = last_ckpt(ceiling.out)
    evaluate = evaluation(result)
    check_configs([evaluate])
    execute(result, evaluate)
    execute(result, Stage("collect", ("-m", "neurmap.collect", f"sweep={result.path('sweeps', 'evaluate')}")))
    result.load.append(loadavg())
    result.seconds = time.perf_counter() - t0
    return result
