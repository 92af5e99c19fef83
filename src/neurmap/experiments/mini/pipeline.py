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

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neurmap.cli import UsageError, check_overrides
from neurmap.experiments.mini import report
from neurmap.experiments.mini.common import PROG, ReproError, StageFailed, log
from neurmap.experiments.mini.data import DEFAULT_SYNTH, build_data, skimage_data
from neurmap.experiments.mini.options import MiniOptions, build_parser
from neurmap.experiments.mini.plan import (
    CEILING,
    COST,
    EVAL_SET,
    MOTION_VARIANTS,
    Plan,
    Stage,
    duration,
    joblib_overrides,
    loadavg,
    rel,
    thread_env,
    train_overrides,
)
from neurmap.experiments.mini.verdicts import iterations_in
from neurmap.utils.files import atomic_write

__all__ = ["run"]


def training_stage(plan: Plan, name: str, experiment: str, run_name: str, extra: Sequence[str] = ()) -> Stage:
    """One training run of ``experiment`` into ``<work>/runs/<run_name>``, alone on the machine (every core)."""
    overrides = [*train_overrides(plan, experiment), *extra]
    argv = ["-m", "neurmap.train", *overrides, f"hydra.run.dir={plan.path('runs', run_name)}"]
    return Stage(name, argv, out=plan.work / "runs" / run_name)


def sweep_stage(plan: Plan, name: str, variants: Sequence[str], motion: bool) -> Stage:
    """A fine-tune multirun over ``variants`` (longest first), into ``<work>/sweeps/<name>``."""
    ordered = sorted(variants, key=lambda v: -COST.get(v, 0))
    overrides = train_overrides(plan, "mini_neurmap", ordered, motion)
    argv = ["-m", "neurmap.train", "-m", *joblib_overrides(plan.opts, "cluster=joblib"), *overrides]
    argv.append(f"hydra.sweep.dir={plan.path('sweeps', name)}")
    return Stage(f"fine-tunes {name.replace('_', ' ')}", argv, thread_env(plan.opts), plan.work / "sweeps" / name)


def evaluation_stage(plan: Plan) -> Stage:
    """One evaluation multirun over every checkpoint of ``plan.ckpts`` on the held-out test set."""
    opts = plan.opts
    argv = ["-m", "neurmap.evaluate", "-m", *joblib_overrides(opts, "hydra/launcher=joblib")]
    argv += [f"ckpt={','.join(plan.ckpts.values())}", f"backbone={plan.backbone}", f"data={EVAL_SET}"]
    argv += [f"paths.kernel_synth={plan.path('data', 'kernel_synth')}", f"paths.log_dir={plan.path()}"]
    argv += [f"seed={opts.seed}", "device=cpu", "progress=false", "metrics.signal=true"]
    argv.append(f"hydra.sweep.dir={plan.path('sweeps', 'evaluate')}")
    return Stage("evaluate", [*argv, *opts.eval_set], thread_env(opts), plan.work / "sweeps" / "evaluate")


def check_configs(stages: Sequence[Stage]) -> None:
    """Compose every job of every training and evaluation of ``stages`` here first, as the commands will, so that
    a bad ``--set`` / ``--eval-set`` stops the run with one line before anything trains."""
    for stage in stages:
        module, overrides = stage.argv[1], [a for a in stage.argv[2:] if a != "-m"]
        try:
            check_overrides(module.rsplit(".", 1)[1], overrides, multirun="-m" in stage.argv[2:])
        except UsageError as err:
            raise ReproError(f"{module} overrides of {stage.name}: {err}") from None


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
        code = subprocess.run(
            [sys.executable, *stage.argv], stdout=handle, stderr=subprocess.STDOUT, env=env
        ).returncode
    stage.seconds = time.perf_counter() - start
    plan.stages.append(stage)
    if code != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = " ".join(lines[-1].split())[:300] if lines else "(no output)"
        raise StageFailed(f"{stage.name} failed with exit status {code} (log: {log_path}): {last}")
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


def data_args(opts: MiniOptions) -> list[str]:
    """The data options that differ from the defaults, as command-line arguments."""
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
        key = "iterations" if name == "neurmap" else "motion_iterations"
        plan.opts = dataclasses.replace(plan.opts, **{key: count})


def run(opts: MiniOptions) -> Path:
    """The whole reproduction: data, start, motion pretraining, fine-tune sweeps, evaluation sweep, collection,
    report. Returns the report path (the data folder with ``--data-only``)."""
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
        check_configs([scratch])
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
    check_configs([*([motion] if motion else []), *(stage for stage, _ in sweeps), *([ceiling] if ceiling else [])])

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
    check_configs([evaluation])
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
