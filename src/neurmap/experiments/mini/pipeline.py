"""The mini reproduction's stages, each the command a user would type, run one after the other:

1. build the data (in this process; cached);
2. without the released weights, train a from-scratch start (``experiment=mini_scratch``);
3. with ``--minutes-per-method``, time a few iterations and size the runs;
4. pretrain M on blur drawn on the fly over the training photographs (``experiment=mini_motion``), unless
   ``--motion-ckpt`` gives an M pretrained before (``make reproduce-mini-motion``, which takes longer);
5. the fine-tunes as Hydra multiruns of ``experiment=mini_neurmap`` over the variants, local parallel jobs
   through ``cluster=joblib``: one sweep for the variants with M (they start M from step 4) and one for those
   without (``model.motion_pretrained`` would be an error there); the oracle-motion ablation runs in the first;
6. the ceiling: a supervised fine-tune on the *target family's own pairs*, which no real user has;
7. one evaluation multirun over the start and every fine-tune (``neurmap.evaluate -m``, joblib launcher), with
   the signal cosines of the runs with M (``metrics.signal=true``);
8. ``neurmap.collect`` tabulates the evaluation sweep; the report (:mod:`.report`) reads that table.

Steps 2 and 4-8 are subprocesses (``sys.executable -m ...``) whose output goes to ``<work>/logs/<stage>.log``;
a failing one stops the run with its name, exit status and log. Every override list is composed here first,
so a bad ``--set`` stops the run before any training.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurmap.experiments.mini.common import PROG, ReproError, log, shown
from neurmap.experiments.mini.data import DEFAULT_SYNTH, build_data
from neurmap.experiments.mini.verdicts import iterations_in
from neurmap.utils.files import atomic_write

__all__ = ["MOTION_VARIANTS", "Plan", "Stage", "run", "train_overrides"]

#: Variants with a motion network M: they start M from the motion-pretraining run.
MOTION_VARIANTS = ("neurmap", "net2", "net3", "oracle_motion")
#: Relative cost of a fine-tune (NeurMAP-like iterations run D, M and N): sweeps list the longest first, so
#: the joblib launcher starts them first.
COST = {"neurmap": 4, "oracle_motion": 4, "net3": 4, "net2": 3, "net1": 2, "baseline": 1}
#: The ceiling's paired data: the target family's own pairs (unavailable to a real user).
CEILING = ["variant=baseline", "data.paired.records.root=${paths.mini}/kernel_synth/train"]
EVAL_SET = "kernel_synth"  # the test set of data=kernel_synth


@dataclass
class Stage:
    """One step: its name, the command a user would type (``env`` shown as a prefix), how long it took."""

    name: str
    argv: list[str]  # after "python": ["-m", module, *overrides]
    env: dict[str, str] = field(default_factory=dict)
    out: Path | None = None  # the run or sweep folder it writes (emptied before it runs)
    seconds: float = math.nan
    note: str = ""

    @property
    def command(self) -> str:
        """The shell line of the stage (a ``#`` comment for a step with no command of its own)."""
        if not self.argv:
            return f"# {self.name}: {self.note or 'in process'}"
        prefix = [f"{k}={v}" for k, v in self.env.items()]
        return shown(" ".join([*prefix, "python", *(shlex.quote(a) for a in self.argv)]))


@dataclass
class Plan:
    """The runs of one reproduction: options, folders, the start, the stages as they ran."""

    opts: argparse.Namespace
    work: Path
    start_weights: str = ""  # the start the fine-tunes load (release folder or the scratch run's last.ckpt)
    released: bool = False
    stages: list[Stage] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    motion_ckpt: str = ""  # the motion-pretraining run's last.ckpt ("" = M starts from scratch)
    ckpts: dict[str, str] = field(default_factory=dict)  # run key ("start", variant) -> checkpoint evaluated
    load: list[float] = field(default_factory=list)  # 1-min load average at the start and at the end
    configs: dict[str, Any] = field(default_factory=dict)  # composed fine-tune config, for the report

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def backbone(self) -> str:
        return self.opts.backbone or "dmphn_1_2_4"

    def path(self, *parts: str) -> str:
        """A path under the work folder as the commands show it (relative to the current folder when below it)."""
        return rel(self.work.joinpath(*parts))


def rel(path: Path) -> str:
    """``path`` relative to the current folder when below it (shorter commands), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return math.nan


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:04.1f} s" if minutes else f"{sec:.1f} s"


# -------------------------------------------------------------------------------------------- commands


def train_overrides(plan: Plan, experiment: str, variants: Sequence[str] = (), motion: bool = False) -> list[str]:
    """Hydra overrides of a training (``variants``: one value, or several for a multirun), without the run
    folder and the launcher; ``motion`` starts M from the motion-pretraining run."""
    opts = plan.opts
    args = [f"experiment={experiment}"]
    if variants:
        args.append(f"variant={','.join(variants)}")
    if opts.backbone and experiment != "mini_motion":
        args.append(f"backbone={opts.backbone}")
    args += [f"seed={opts.seed}", f"paths.mini={rel(plan.data_dir)}"]
    iterations = {"mini_scratch": opts.scratch_iterations, "mini_motion": opts.motion_iterations}.get(
        experiment, opts.iterations
    )
    if iterations is not None:
        args.append(f"iterations={iterations}")
    if experiment == "mini_motion":
        return [*args, *opts.motion_set]
    if experiment == "mini_neurmap":
        args.append(f"backbone.pretrained={_value(plan.start_weights) or 'null'}")
        if motion and plan.motion_ckpt:
            args.append(f"model.motion_pretrained={_value(plan.motion_ckpt)}")
    return [*args, *opts.set]


def _value(path: str) -> str:
    """A path as a Hydra override value: quoted when it holds characters of the override grammar
    (``best-step=2250.ckpt``)."""
    return f"'{path}'" if any(c in path for c in "=,[]{}()'\" ") else path


def _joblib(opts: argparse.Namespace, group: str) -> list[str]:
    """Launcher overrides of a multirun: joblib with ``--jobs`` processes, or Hydra's sequential default."""
    return [group, f"hydra.launcher.n_jobs={opts.jobs}"] if opts.jobs > 1 else []


def _thread_env(opts: argparse.Namespace) -> dict[str, str]:
    """Torch threads of each job of a multirun (``--threads``)."""
    return {"OMP_NUM_THREADS": str(opts.threads)}


def training_stage(plan: Plan, name: str, experiment: str, run_name: str, extra: Sequence[str] = ()) -> Stage:
    """One training run of ``experiment`` into ``<work>/runs/<run_name>``, alone on the machine (every core)."""
    overrides = [*train_overrides(plan, experiment), *extra]
    argv = ["-m", "neurmap.train", *overrides, f"hydra.run.dir={plan.path('runs', run_name)}"]
    return Stage(name, argv, out=plan.work / "runs" / run_name)


def sweep_stage(plan: Plan, name: str, variants: Sequence[str], motion: bool) -> Stage:
    """A fine-tune multirun over ``variants`` (longest first), into ``<work>/sweeps/<name>``."""
    ordered = sorted(variants, key=lambda v: -COST.get(v, 0))
    overrides = train_overrides(plan, "mini_neurmap", ordered, motion)
    argv = ["-m", "neurmap.train", "-m", *_joblib(plan.opts, "cluster=joblib"), *overrides]
    argv.append(f"hydra.sweep.dir={plan.path('sweeps', name)}")
    return Stage(f"fine-tunes {name.replace('_', ' ')}", argv, _thread_env(plan.opts), plan.work / "sweeps" / name)


def evaluation_stage(plan: Plan) -> Stage:
    """One evaluation multirun over every checkpoint of ``plan.ckpts`` on the held-out test set."""
    opts = plan.opts
    argv = ["-m", "neurmap.evaluate", "-m", *_joblib(opts, "hydra/launcher=joblib")]
    argv += [f"ckpt={','.join(plan.ckpts.values())}", f"backbone={plan.backbone}", f"data={EVAL_SET}"]
    argv += [f"paths.kernel_synth={plan.path('data', 'kernel_synth')}", f"paths.log_dir={plan.path()}"]
    argv += [f"seed={opts.seed}", "device=cpu", "progress=false", "metrics.signal=true"]
    argv.append(f"hydra.sweep.dir={plan.path('sweeps', 'evaluate')}")
    return Stage("evaluate", [*argv, *opts.eval_set], _thread_env(opts), plan.work / "sweeps" / "evaluate")


def _sweep_variant(overrides: list[str], variant: str) -> list[str]:
    return [f"variant={variant}" if o.startswith("variant=") else o for o in overrides]


def check_configs(plan: Plan, stages: Sequence[Stage]) -> None:
    """Compose every training and evaluation of ``stages`` here first (each job of a multirun on its own),
    so that a bad ``--set`` / ``--eval-set`` stops the run before anything trains."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from neurmap.config import compose

    for stage in stages:
        module, overrides = stage.argv[1], [a for a in stage.argv[2:] if a != "-m"]
        config = module.rsplit(".", 1)[1]
        jobs = [overrides]
        variant = next((o for o in overrides if o.startswith("variant=")), "")
        if "," in variant:
            jobs = [_sweep_variant(overrides, v) for v in variant.split("=", 1)[1].split(",")]
        if config == "evaluate":  # the checkpoints do not exist yet: compose with the first one's text
            jobs = [[o.split(",")[0] if o.startswith("ckpt=") else o for o in overrides]]
        for job in jobs:
            try:
                compose(job, plan.work / ".compose", config_name=config)
            except (HydraException, OmegaConfBaseException) as err:
                message = " ".join(str(err).split())
                raise ReproError(f"{module} overrides of {stage.name}: {message}") from None


def _run_group(argv: list[str], output: Any, env: dict[str, str]) -> int:
    """Run ``argv`` in a process group of its own and wait; if this process is interrupted or fails, the
    whole group goes down with it (a multirun's launcher workers included, not only the direct child)."""
    proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        _kill_group(proc.pid, signal.SIGTERM)  # let the launcher and its workers stop cleanly first
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10.0)
        _kill_group(proc.pid, signal.SIGKILL)  # whatever is left of the group
        proc.wait()
        raise


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def execute(plan: Plan, stage: Stage) -> None:
    """Run ``stage`` as a subprocess (output to ``<work>/logs/<stage>.log``) in an emptied output folder (a
    stale last.ckpt would be versioned, not replaced); record its wall time."""
    if stage.out is not None:
        shutil.rmtree(stage.out, ignore_errors=True)
    log_path = plan.work / "logs" / f"{stage.name.replace(' ', '_')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{stage.name}\n    $ {stage.command}\n    log: {log_path}")
    env = {**os.environ, **stage.env, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log_path, "w") as handle:
        code = _run_group([sys.executable, *stage.argv], handle, env)
    stage.seconds = time.perf_counter() - start
    plan.stages.append(stage)
    if code != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = " ".join(lines[-1].split())[:300] if lines else "(no output)"
        raise ReproError(f"{stage.name} failed with exit status {code} (log: {log_path}): {last}")
    log(f"{stage.name}: done in {duration(stage.seconds)}")


def _in_process(plan: Plan, stage: Stage, fn: Callable[[], Any]) -> Any:
    log(f"{stage.name}\n    $ {stage.command}")
    start = time.perf_counter()
    result = fn()
    stage.seconds = time.perf_counter() - start
    plan.stages.append(stage)
    log(f"{stage.name}: done in {duration(stage.seconds)}")
    return result


def last_ckpt(run_dir: Path) -> str:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ReproError(f"the run in {run_dir} finished without {ckpt}")
    return rel(ckpt)


def sweep_runs(sweep: Path, variants: Sequence[str]) -> dict[str, Path]:
    """The job folder of every variant of a fine-tune sweep (``<num>_<variant>-<backbone>``, conf/hydra)."""
    runs = {}
    for variant in variants:
        found = sorted(sweep.glob(f"*_{variant}-*"))
        if len(found) != 1:
            raise ReproError(f"expected one job folder of variant {variant} in {sweep}, found {len(found)}")
        runs[variant] = found[0]
    return runs


# ----------------------------------------------------------------------------------------------- the run


def data_args(opts: argparse.Namespace) -> list[str]:
    """The data options that differ from the defaults, as command-line arguments."""
    from neurmap.experiments.mini.options import build_parser

    defaults = build_parser().parse_args([])
    args: list[str] = []
    for key in ("train_photos", "test_photos", "crop", "train_crops", "test_crops", "val_crop", "val_crops"):
        value = getattr(opts, key)
        if value != getattr(defaults, key):
            args += [f"--{key.replace('_', '-')}", ",".join(value) if isinstance(value, list) else str(value)]
    if opts.paired_length != defaults.paired_length:
        args += ["--paired-length", *(f"{v:g}" for v in opts.paired_length)]
    if list(opts.synth) != list(DEFAULT_SYNTH):
        for item in opts.synth:
            args += ["--synth", item]
    return args


def fit_iterations(plan: Plan, timed: int = 5, warmup: int = 3) -> None:
    """``--minutes-per-method``: time NeurMAP and motion-pretraining iterations on this machine with the run's
    own overrides, then set ``--iterations`` and ``--motion-iterations`` to what fits in the budget."""
    from statistics import median

    from neurmap.benchmarks.iteration import time_iterations

    opts = plan.opts
    probes = {"neurmap": train_overrides(plan, "mini_neurmap", ["neurmap"])}
    if opts.motion_pretrain:
        probes["motion_pretrain"] = train_overrides(plan, "mini_motion")
    for name, args in probes.items():
        stage = Stage(f"time {name}", [], note=f"{timed} timed iterations after {warmup} untimed ones, in process")
        times, _ = _in_process(plan, stage, lambda args=args: time_iterations(args, timed, warmup))
        seconds = median(times)
        count = iterations_in(opts.minutes_per_method, seconds)
        stage.note += f": {seconds:.3f} s/iteration -> {count} iterations in {opts.minutes_per_method:g} min"
        log(stage.note)
        if name == "neurmap":
            opts.iterations = count
        else:
            opts.motion_iterations = count


def run(opts: argparse.Namespace) -> Path:
    """The whole reproduction: data, start, motion pretraining, fine-tune sweeps, evaluation sweep, collection,
    report. Returns the report path (the data folder with ``--data-only``)."""
    from neurmap.experiments.mini import report
    from neurmap.experiments.mini.data import skimage_data

    t0 = time.perf_counter()
    work = Path(opts.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(opts.weights).expanduser() if opts.weights else None
    plan = Plan(opts, work, released=weights is not None and weights.exists(), load=[loadavg()])
    skimage_data()  # fail before anything else when scikit-image is missing
    data_stage = Stage("build data", ["-m", PROG, "--work", rel(work), "--seed", str(opts.seed), "--data-only"])
    data_stage.argv += data_args(opts)
    plan.manifest = _in_process(plan, data_stage, lambda: build_data(opts, plan.data_dir))
    counts = plan.manifest["counts"]
    data_stage.note = f"{counts['paired']} paired, {counts['unpaired']} unpaired, {counts['test']} test images"
    if opts.data_only:
        return plan.data_dir

    if plan.released:
        plan.start_weights = str(weights) if weights.is_absolute() else rel(weights)
    else:
        log(f"released weights not found at {weights}: training a from-scratch start first")
        scratch = training_stage(plan, "train scratch start", "mini_scratch", "scratch_baseline")
        check_configs(plan, [scratch])
        execute(plan, scratch)
        plan.start_weights = last_ckpt(scratch.out)
    if opts.minutes_per_method is not None:
        fit_iterations(plan)

    variants = ["baseline", *opts.variants]
    with_m = [v for v in variants if v in MOTION_VARIANTS] if opts.motion_pretrain else []
    without_m = [v for v in variants if v not in with_m]
    motion = None
    if with_m and opts.motion_ckpt:
        if not Path(opts.motion_ckpt).is_file():
            raise ReproError(f"--motion-ckpt {opts.motion_ckpt}: no such file (make reproduce-mini-motion writes it)")
        plan.motion_ckpt = rel(Path(opts.motion_ckpt))
    elif with_m:
        motion = training_stage(plan, "pretrain M", "mini_motion", "motion_pretrain")
        plan.motion_ckpt = rel(motion.out / "checkpoints" / "last.ckpt")
    ceiling = training_stage(plan, "fine-tune ceiling", "mini_neurmap", "ceiling", CEILING) if opts.ceiling else None
    sweeps = [(sweep_stage(plan, "with_motion", with_m, True), with_m)] if with_m else []
    if without_m:
        sweeps.append((sweep_stage(plan, "without_motion" if with_m else "all", without_m, False), without_m))
    sweeps.sort(key=lambda item: -sum(COST.get(v, 0) for v in item[1]))  # the longer sweep first
    check_configs(
        plan, [*([motion] if motion else []), *(stage for stage, _ in sweeps), *([ceiling] if ceiling else [])]
    )

    if motion is not None:
        execute(plan, motion)
        last_ckpt(motion.out)
    plan.ckpts = {"start": plan.start_weights}
    for stage, names in sweeps:
        execute(plan, stage)
        plan.ckpts |= {v: last_ckpt(d) for v, d in sweep_runs(stage.out, names).items()}
    if ceiling is not None:
        execute(plan, ceiling)
        plan.ckpts["ceiling"] = last_ckpt(ceiling.out)
    evaluation = evaluation_stage(plan)
    check_configs(plan, [evaluation])
    execute(plan, evaluation)
    execute(plan, Stage("collect", ["-m", "neurmap.collect", plan.path("sweeps", "evaluate")]))

    out = Path(opts.out).expanduser() / f"{opts.report_name}.md"
    results = report.gather(plan, evaluation.out, [stage.out for stage, _ in sweeps])
    figure = report.render_figure(plan, out.with_suffix(".png"))
    plan.load.append(loadavg())
    total = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, report.render(report.context(plan, results, figure, total)))
    log(f"total {duration(total)}; wrote {out}")
    return out
