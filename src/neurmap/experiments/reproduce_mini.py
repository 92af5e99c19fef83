"""A CPU-scale reproduction of NeurMAP's central claim: ``python -m neurmap.reproduce_mini``.

Claim (paper Table 1, DMPHN row): fine-tuning a GoPro-trained deblurring network with NeurMAP on *unpaired*
data of a new blur family beats supervised fine-tuning on the paired data, on test images of that family
(+0.93 dB PSNR, LPIPS 0.236 -> 0.124 for DMPHN on kernel-synthesized blur).

Protocol (every number is a command-line option or a value of ``conf/experiment/mini_*.yaml``):

1. **Photographs.** Real photographs bundled with scikit-image (``skimage.data``; only the images shipped in
   the wheel, nothing is downloaded), split by *photograph*: the test photographs are never trained on.
   Grey photographs are replicated to RGB.
2. **Data** (deterministic by ``--seed``, cached in ``<work>/data`` and reused when its settings match):

   * ``paired/train/{input,target}``: random crops of the training photographs, each blurred by ONE
     spatially uniform linear blur (random angle, length in ``--paired-length`` px), the family the
     supervised data shows (the paper's GoPro stand-in);
   * ``kernel_synth/train``: *other* random crops of the training photographs, blurred by Gong et al.'s
     spatially varying camera-motion flows (:func:`neurmap.synthesize.synthesize`, ``--synth`` settings,
     Gong's "mild" ranges by default): the unpaired domains. As ``data=kernel_synth`` does, the blurry and
     the sharp side are drawn by independent samplers, and no loss sees the pairing;
   * ``kernel_synth/test``: fixed crops of the held-out photographs blurred by the same unseen family, with
     the ground-truth motion (``mfmap``).
3. **Start**: the released GoPro-trained DMPHN(1-2-4) (``--weights``, default ``<repo>/../shared/weights/
   dmphn_1_2_4`` or ``$NEURMAP_DMPHN_WEIGHTS``). Without it, a DMPHN(1-2-4) is first trained from scratch,
   supervised, on the paired set (``experiment=mini_scratch``) and used instead; the report says so.
4. **Fine-tunes** from that start, all with the same iterations, batch sizes, crop and seed
   (``experiment=mini_neurmap``): ``variant=baseline`` (supervised only, paired data), ``neurmap``, and the
   ablations ``net1``, ``net2``, ``net3`` (paired + unpaired data).
5. **Evaluation** of the start and of every fine-tune on the held-out test set with
   ``neurmap.evaluate data=kernel_synth``: PSNR, SSIM (torchmetrics, RGB), LPIPS (AlexNet), NIQE and, for
   networks with a motion estimator M, the motion-map error against the ground-truth flow. The blurry-input
   row is the evaluation's ``input_*`` columns; a last row gives the motion error of a zero motion map (an M
   that learned nothing).
6. **Report**: ``<out>/mini_reproduction.md`` with the commands, seeds, machine, wall time of every stage,
   the table and a discussion computed from the numbers (gains over the start, per-image paired
   differences, what M learned, distance to the paper's gains).

Execution: every training and evaluation is the in-process equivalent of the ``python -m neurmap.train`` /
``python -m neurmap.evaluate`` line the report prints. The jobs (a training followed by its evaluation) run
in ``--jobs`` spawned processes (default 2, their output in ``<work>/logs/``) with ``--threads`` torch threads
each (default 1): on a 2-core CPU two single-threaded jobs use both cores and do not stall each other at
thread barriers when another process takes a core. With the defaults the run takes about 15 minutes on the
2-core CPU of the README's benchmarks.

scikit-image is only needed by this command (``pip install scikit-image``, or the ``repro`` extra).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_TEST_PHOTOS", "DEFAULT_TRAIN_PHOTOS", "PAPER", "build_data", "main", "run"]

_PROG = "neurmap.reproduce_mini"
REPO = Path(__file__).resolve().parents[3]

#: Real photographs shipped in the scikit-image wheel (``skimage.data``), natural scenes and textures.
#: ``motorcycle_left``/``_right`` are the two views of ``stereo_motorcycle`` (kept in one split).
DEFAULT_TRAIN_PHOTOS = (
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "clock",
)
DEFAULT_TEST_PHOTOS = ("astronaut", "coffee", "rocket", "camera")

#: The paper's DMPHN row on the kernel-synthesized (unseen-blur) test set: before -> after NeurMAP.
PAPER = {"psnr_gain": 0.93, "lpips_before": 0.236, "lpips_after": 0.124}

#: Rows of the results table: (key, label); the key names the run (or the blurry input / the start).
METHODS = {
    "baseline": "supervised fine-tune (paired only)",
    "neurmap": "NeurMAP (natural-image discriminator)",
    "net1": "Net1 (no M/R, sharp/blurry discriminator)",
    "net2": "Net2 (M + R, no discriminator)",
    "net3": "Net3 (M + R, sharp-image discriminator)",
}

#: Metric columns of the table: (summary key, header, format, lower is better).
COLUMNS = (
    ("psnr", "PSNR ↑", "{:.2f}", False),
    ("ssim_torchmetrics", "SSIM ↑", "{:.4f}", False),
    ("lpips", "LPIPS ↓", "{:.4f}", True),
    ("niqe", "NIQE ↓", "{:.3f}", True),
    ("motion_mse_authors", "motion MSE (authors ×20) ↓", "{:.2f}", True),
    ("motion_mse_full", "motion MSE (full, px²) ↓", "{:.2f}", True),
    ("motion_epe", "motion EPE (px) ↓", "{:.2f}", True),
)
EVAL_SET = "kernel_synth"  # the test set name of data=kernel_synth
#: neurmap.synthesize settings of the camera-motion sets unless --synth is given: Gong's "mild" ranges.
DEFAULT_SYNTH = ("preset=mild",)


class ReproError(RuntimeError):
    """A problem the run cannot go past (missing package, bad option, bad work folder); one line."""


def _log(message: str) -> None:
    print(f"[{_PROG} {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ data


def _skimage_data() -> Any:
    try:
        import skimage.data
    except ImportError:
        raise ReproError(
            "scikit-image is not installed; it provides the photographs: pip install 'scikit-image>=0.22' "
            "(or pip install -e '.[repro]')"
        ) from None
    return skimage.data


def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float32 RGB (H, W, 3) in [0, 1] (grey replicated, alpha dropped).

    ``motorcycle_left`` / ``motorcycle_right`` are the views of ``stereo_motorcycle``.
    """
    data = _skimage_data()
    try:
        if name in ("motorcycle_left", "motorcycle_right"):
            image = data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        else:
            loader = getattr(data, name, None)
            if loader is None or not callable(loader):
                raise ReproError(f"skimage.data has no image {name!r}")
            image = loader()
    except ReproError:
        raise
    except Exception as err:  # e.g. images that need pooch and a network
        raise ReproError(
            f"skimage.data.{name}() cannot be loaded offline: {' '.join(str(err).split())[:160]}"
        ) from None
    image = np.asarray(image)
    if image.dtype == bool or image.ndim not in (2, 3):
        raise ReproError(f"skimage.data.{name} is not a photograph ({image.dtype}, shape {image.shape})")
    scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    image = image.astype(np.float32) / np.float32(scale)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0))


def _crop_boxes(shape: tuple[int, int], size: int, count: int, rng: np.random.Generator | None) -> list[tuple]:
    """``count`` crop boxes (y, x, h, w) of side ``size`` (clamped to the image): random with ``rng``, else on
    an evenly spread grid, more columns along the longer side (deterministic test crops, least overlap)."""
    h, w = shape
    ch, cw = min(size, h), min(size, w)
    if rng is not None:
        return [(int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw) for _ in range(count)]
    long_side = math.ceil(math.sqrt(count))
    short_side = math.ceil(count / long_side)
    cols, rows = (long_side, short_side) if w >= h else (short_side, long_side)

    def spread(i: int, n: int, room: int) -> int:
        return round(room * i / (n - 1)) if n > 1 else room // 2

    cells = [(r, c) for r in range(rows) for c in range(cols)][:count]
    return [(spread(r, rows, h - ch), spread(c, cols, w - cw), ch, cw) for r, c in cells]


def _write_png(path: Path, hwc: np.ndarray) -> None:
    from neurmap.data.io import write_image

    write_image(path, np.ascontiguousarray(hwc))


def _uniform_pair(sharp: np.ndarray, rng: np.random.Generator, length: Sequence[float]) -> tuple[np.ndarray, ...]:
    """(blurry, sharp, flow px (2, H, W)) of one crop under one uniform linear blur, borders cropped by half the
    blur (Gong)."""
    from neurmap.data.flows import uniform_linear_flow
    from neurmap.data.line_blur import line_blur

    h, w, _ = sharp.shape
    flow = uniform_linear_flow((h, w), rng, tuple(length))
    image = torch.from_numpy(sharp.transpose(2, 0, 1).copy())
    blurry = line_blur(image, torch.from_numpy(flow)).numpy().transpose(1, 2, 0)
    bh, bw = (int(abs(float(flow[c, 0, 0])) // 2) for c in (0, 1))
    return blurry[bh : h - bh, bw : w - bw], sharp[bh : h - bh, bw : w - bw], flow[:, bh : h - bh, bw : w - bw]


def data_settings(opts: argparse.Namespace) -> dict[str, Any]:
    """Everything the data depends on (stored in ``<work>/data/manifest.json``; a change rebuilds it)."""
    return {
        "seed": opts.seed,
        "train_photos": list(opts.train_photos),
        "test_photos": list(opts.test_photos),
        "crop": opts.crop,
        "train_crops": opts.train_crops,
        "test_crops": opts.test_crops,
        "val_crop": opts.val_crop,
        "val_crops": opts.val_crops,
        "layout": 2,  # 2: paired set in the kernel_synth layout with its motion, and a val split
        "paired_length": list(opts.paired_length),
        "synth": list(opts.synth),
    }


def build_data(opts: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Build (or reuse) the paired, unpaired and test sets under ``data_dir``; returns the manifest.

    Raises:
        ReproError: a photograph is in both splits or cannot be loaded, or ``data_dir`` holds files that
            were not made by this command.
    """
    from neurmap.synthesize import ConfigError, load_config, synthesize

    settings = data_settings(opts)
    manifest_path = data_dir / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings:
            _log(f"data: reusing {data_dir} (same settings)")
            return manifest
        _log(f"data: settings changed, rebuilding {data_dir}")
        shutil.rmtree(data_dir)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise ReproError(f"{data_dir} exists without manifest.json (not made by {_PROG}); pass another --work")
    overlap = sorted(set(opts.train_photos) & set(opts.test_photos))
    if overlap:
        raise ReproError(
            f"photographs {overlap} are in both --train-photos and --test-photos; test photos are held out"
        )
    try:
        synth_cfg = load_config([f"seed={opts.seed}", "workers=1", *opts.synth])
    except ConfigError as err:
        raise ReproError(f"--synth: {err}") from None

    start = time.perf_counter()
    staging = data_dir.with_name(data_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    from neurmap.data.io import write_mfmap

    sources = {s: staging / "photos" / s for s in ("train", "val", "test")}
    counts = {"paired": 0, "unpaired": 0, "val": 0, "test": 0}
    for name in [*opts.train_photos, *opts.test_photos]:
        photo = load_photo(name)
        key = zlib.crc32(name.encode())
        if name in opts.test_photos:
            for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.test_crops, None)):
                _write_png(sources["test"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
            continue
        unpaired_rng = np.random.default_rng([opts.seed, 1, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.train_crops, unpaired_rng)):
            _write_png(sources["train"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
        paired_rng = np.random.default_rng([opts.seed, 2, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.crop, opts.train_crops, paired_rng)):
            blurry, sharp, flow = _uniform_pair(photo[y : y + h, x : x + w], paired_rng, opts.paired_length)
            stem = staging / "paired" / "train" / f"{name}_{j}"
            _write_png(stem.with_name(f"{stem.name}_blurryimg.png"), blurry)
            _write_png(stem.with_name(f"{stem.name}_gtimg.png"), sharp)
            write_mfmap(stem.with_name(f"{stem.name}_mfmap.mat"), flow)
            counts["paired"] += 1
        # validation (M's EPE curve, D's PSNR during training): other crops of the *training* photographs
        val_rng = np.random.default_rng([opts.seed, 3, key])
        for j, (y, x, h, w) in enumerate(_crop_boxes(photo.shape[:2], opts.val_crop, opts.val_crops, val_rng)):
            _write_png(sources["val"] / f"{name}_{j}.png", photo[y : y + h, x : x + w])
    for split, seed in (("train", opts.seed), ("val", opts.seed + 2), ("test", opts.seed + 1)):
        cfg = synth_cfg.copy()
        cfg.seed = seed
        summary = synthesize(sources[split], staging / "kernel_synth" / split, cfg, progress=False)
        counts["unpaired" if split == "train" else split] = summary["written"]
    manifest = {
        "settings": settings,
        "counts": counts,
        "synthesize": {k: v for k, v in _plain(synth_cfg).items() if k in ("kernel", "seed")},
        "seconds": time.perf_counter() - start,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(data_dir, ignore_errors=True)
    staging.rename(data_dir)
    return manifest


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


# --------------------------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """One step of the pipeline: its name, the command a user would type, and how long it took."""

    name: str
    command: str
    seconds: float = math.nan
    note: str = ""


@dataclass
class Plan:
    """The runs of one reproduction, with their commands and results."""

    opts: argparse.Namespace
    work: Path
    data_dir: Path
    start_weights: str
    released: bool
    stages: list[Stage] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-min load average at the start and at the end
    zero_motion: dict[str, float] = field(default_factory=dict)  # motion columns of a zero motion map
    per_image: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)  # composed configs, by experiment, for the report
    motion_ckpt: str = ""  # the motion-pretraining run's last.ckpt ("" = M starts from scratch)
    motion_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # run -> (iteration, EPE)
    figure: list[str] = field(default_factory=list)  # the figure's column labels (top row, bottom row)


def _cmd(module: str, args: Sequence[str]) -> str:
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def _rel(path: Path) -> str:
    """``path`` relative to the current folder when below it (shorter commands), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


#: Variants with a motion network M: they start M from the motion-pretraining run.
MOTION_VARIANTS = ("neurmap", "net2", "net3")


def train_overrides(plan: Plan, experiment: str, variant: str | None, pretrained: str | None) -> list[str]:
    """Hydra overrides of one training run (what the report prints), without the run folder."""
    opts = plan.opts
    args = [f"experiment={experiment}"]
    if variant is not None:
        args.append(f"variant={variant}")
    if opts.backbone and experiment != "mini_motion":
        args.append(f"backbone={opts.backbone}")
    args += [f"seed={opts.seed}", f"paths.mini={_rel(plan.data_dir)}"]
    iterations = {"mini_scratch": opts.scratch_iterations, "mini_motion": opts.motion_iterations}.get(
        experiment, opts.iterations
    )
    if iterations is not None:
        args.append(f"iterations={iterations}")
    if experiment == "mini_motion":
        return [*args, *opts.motion_set]
    args.append(f"backbone.pretrained={pretrained if pretrained else 'null'}")
    if variant in MOTION_VARIANTS and plan.motion_ckpt:
        args.append(f"model.motion_pretrained={plan.motion_ckpt}")
    return [*args, *opts.set]


def _timed(plan: Plan, stage: Stage, fn: Callable[[], Any]) -> Any:
    _log(f"{stage.name}\n    $ {stage.command}")
    start = time.perf_counter()
    result = fn()
    stage.seconds = time.perf_counter() - start
    plan.stages.append(stage)
    _log(f"{stage.name}: done in {_duration(stage.seconds)}")
    return result


@dataclass(frozen=True)
class Job:
    """An optional training and the evaluation of its result; runs in a worker process or in this one."""

    key: str  # the result's name: "start" or a variant
    run_name: str | None  # training into <work>/runs/<run_name>; None = evaluate ``eval_args``' ckpt only
    train_args: tuple[str, ...]  # neurmap.train overrides (without the run folder)
    eval_args: tuple[str, ...]  # neurmap.evaluate overrides, ckpt= first
    work: str
    threads: int
    log: str | None  # worker processes write their output here


#: Relative cost of the jobs (NeurMAP-like iterations run D, M and N), to start the longest first.
_COST = {"neurmap": 4, "net3": 4, "net2": 3, "net1": 2, "baseline": 1, "start": 0}


def _redirect(path: Path) -> None:
    """Send this process's stdout and stderr (Python and C level) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _run_job(job: Job) -> dict[str, Any]:
    """Train (if asked) and evaluate one job; returns times, the summary row and the per-image rows."""
    from neurmap.config import compose
    from neurmap.evaluate import evaluate
    from neurmap.train import train

    if job.log:
        _redirect(Path(job.log))
    torch.set_num_threads(job.threads)
    work = Path(job.work)
    result: dict[str, Any] = {"key": job.key, "train_s": math.nan}
    where = f" (log: {job.log})" if job.log else ""
    try:
        if job.run_name is not None:
            run_dir = work / "runs" / job.run_name
            shutil.rmtree(run_dir, ignore_errors=True)  # a stale last.ckpt would be versioned, not replaced
            start = time.perf_counter()
            train(compose(list(job.train_args), run_dir))
            result["train_s"] = time.perf_counter() - start
            if not (run_dir / "checkpoints" / "last.ckpt").is_file():
                raise ReproError(f"training {job.run_name} finished without {run_dir / 'checkpoints' / 'last.ckpt'}")
        out = work / "eval" / job.key
        start = time.perf_counter()
        summaries = evaluate(compose([*job.eval_args, "progress=false"], out / ".hydra", config_name="evaluate"))
        result["eval_s"] = time.perf_counter() - start
    except ReproError:
        raise
    except Exception as err:  # re-raised in the parent as one line; the log has the traceback
        import traceback

        traceback.print_exc()
        raise ReproError(f"{job.key}: {type(err).__name__}: {' '.join(str(err).split())[:300]}{where}") from None
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    row = next((r for r in summaries if r["set"] == EVAL_SET), None)
    if row is None:
        raise ReproError(f"evaluation of {job.key} returned no {EVAL_SET!r} row{where}")
    result["summary"] = row
    with open(out / f"{EVAL_SET}_per_image.csv") as handle:
        result["per_image"] = list(csv.DictReader(handle))
    return result


def _job(plan: Plan, key: str, run_name: str | None, train_args: list[str], ckpt: str, backbone: str | None) -> Job:
    """A job and its two stages (the commands a user would type), registered on the plan in report order."""
    opts = plan.opts
    out = plan.work / "eval" / key
    eval_args = [f"ckpt={ckpt}", *([f"backbone={backbone}"] if backbone else [])]
    eval_args += ["data=kernel_synth", f"paths.kernel_synth={_rel(plan.data_dir / 'kernel_synth')}"]
    eval_args += [f"seed={opts.seed}", "device=cpu", f"output_dir={_rel(out)}", *opts.eval_set]
    if run_name is not None:
        run_dir = f"hydra.run.dir={_rel(plan.work / 'runs' / run_name)}"
        plan.stages.append(Stage(f"train {run_name}", _cmd("neurmap.train", [*train_args, run_dir])))
    plan.stages.append(Stage(f"evaluate {key}", _cmd("neurmap.evaluate", eval_args)))
    log = str(plan.work / "logs" / f"{run_name or key}.log") if opts.jobs > 1 else None
    return Job(key, run_name, tuple(train_args), tuple(eval_args), str(plan.work), opts.threads, log)


def _collect(plan: Plan, job: Job, result: dict[str, Any]) -> None:
    stages = {s.name: s for s in plan.stages}
    if job.run_name is not None:
        stages[f"train {job.run_name}"].seconds = result["train_s"]
    stages[f"evaluate {job.key}"].seconds = result["eval_s"]
    plan.summaries[job.key] = result["summary"]
    plan.per_image[job.key] = result["per_image"]
    row = result["summary"]
    trained = f"trained in {_duration(result['train_s'])}, " if job.run_name else ""
    _log(
        f"{job.run_name or job.key}: {trained}evaluated in {_duration(result['eval_s'])}: PSNR "
        f"{row.get('psnr', math.nan):.2f} dB, LPIPS {row.get('lpips', math.nan):.4f}"
    )


def _check_configs(plan: Plan, jobs: list[Job]) -> None:
    """Compose every job's configs here first, so that a bad ``--set``/``--eval-set`` stops the run at once."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from neurmap.config import compose

    for job in jobs:
        for args, name in ((job.train_args, "train"), (job.eval_args, "evaluate")):
            if name == "train" and job.run_name is None:
                continue
            try:
                compose(list(args), plan.work / ".compose", config_name=name)
            except (HydraException, OmegaConfBaseException) as err:
                message = " ".join(str(err).split())
                raise ReproError(f"neurmap.{name} overrides of {job.run_name or job.key}: {message}") from None


def _execute(plan: Plan, jobs: list[Job]) -> None:
    """Run the jobs: ``--jobs`` worker processes (spawned, ``--threads`` torch threads each), longest first."""
    _check_configs(plan, jobs)
    for job in jobs:
        stage_names = ([f"train {job.run_name}"] if job.run_name else []) + [f"evaluate {job.key}"]
        commands = [s.command for s in plan.stages if s.name in stage_names]
        _log(f"{' + '.join(stage_names)}" + "".join(f"\n    $ {c}" for c in commands))
    ordered = sorted(jobs, key=lambda j: -_COST.get(j.key, 0))
    if plan.opts.jobs == 1:
        threads = torch.get_num_threads()
        try:
            for job in ordered:
                _collect(plan, job, _run_job(job))
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(plan.opts.jobs, len(jobs))
    _log(f"{len(jobs)} jobs in {workers} processes x {plan.opts.threads} thread(s); logs: {plan.work / 'logs'}")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(_run_job, job): job for job in ordered}
        try:
            for future in as_completed(futures):
                _collect(plan, futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run(opts: argparse.Namespace) -> Path:
    """The whole reproduction: data, start weights, fine-tunes, evaluations, report. Returns the report path
    (the data folder with ``--data-only``)."""
    t0 = time.perf_counter()
    work = Path(opts.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(opts.weights).expanduser() if opts.weights else None
    released = weights is not None and weights.exists()
    plan = Plan(opts, work, work / "data", str(weights) if released else "", released)
    plan.load = [_loadavg()]
    _skimage_data()  # fail before anything else when scikit-image is missing
    if not released and not opts.data_only:
        _log(f"released weights not found at {weights}: training a from-scratch baseline first")

    data_stage = Stage(
        "build data", _cmd(_PROG, ["--work", _rel(work), "--seed", str(opts.seed), "--data-only", *_data_args(opts)])
    )
    plan.manifest = _timed(plan, data_stage, lambda: build_data(opts, plan.data_dir))
    counts = plan.manifest["counts"]
    data_stage.note = (
        f"{counts['paired']} paired, {counts['unpaired']} unpaired blurry/sharp, {counts['test']} test images"
        + (" (cached)" if data_stage.seconds < 1.0 and plan.manifest.get("seconds", 0) > 1.0 else "")
    )
    if opts.data_only:
        return plan.data_dir

    if released:
        start = str(weights) if weights.is_absolute() else _rel(weights)
        start_job = _job(plan, "start", None, [], start, opts.backbone or "dmphn_1_2_4")
    else:
        start = _rel(plan.work / "runs" / "scratch_baseline" / "checkpoints" / "last.ckpt")
        scratch = train_overrides(plan, "mini_scratch", None, None)
        _execute(plan, [_job(plan, "start", "scratch_baseline", scratch, start, None)])
        start_job = None
    plan.start_weights = start
    if opts.minutes_per_method is not None:
        fit_iterations(plan)
    if opts.motion_pretrain:
        pretrain_motion(plan)
    jobs = [start_job] if start_job else []
    for variant in ("baseline", *opts.variants):
        ckpt = _rel(plan.work / "runs" / variant / "checkpoints" / "last.ckpt")
        jobs.append(_job(plan, variant, variant, train_overrides(plan, "mini_neurmap", variant, start), ckpt, None))
    _execute(plan, jobs)

    plan.zero_motion = zero_motion_reference(plan.data_dir / "kernel_synth" / "test")
    for name in ("motion_pretrain", *(v for v in opts.variants if v in MOTION_VARIANTS)):
        plan.motion_curves[name] = epe_curve(plan.work / "runs" / name)
    report = Path(opts.out).expanduser() / f"{opts.report_name}.md"
    plan.figure = render_figure(plan, report.with_suffix(".png"))
    plan.load.append(_loadavg())
    total = time.perf_counter() - t0
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(plan, total))
    _log(f"total {_duration(total)}; wrote {report}")
    return report


def iterations_in(minutes: float, seconds_per_iteration: float) -> int:
    """How many iterations of ``seconds_per_iteration`` fit in ``minutes`` (at least 1)."""
    if not seconds_per_iteration > 0:
        raise ReproError(f"a timed iteration took {seconds_per_iteration} s; cannot size the runs")
    return max(1, int(minutes * 60.0 // seconds_per_iteration))


def fit_iterations(plan: Plan, timed: int = 5, warmup: int = 3) -> None:
    """``--minutes-per-method``: time NeurMAP and motion-pretraining iterations on this machine with the run's
    own overrides, then set ``--iterations`` and ``--motion-iterations`` to what fits in the budget."""
    from statistics import median

    from neurmap.benchmarks.iteration import time_iterations

    opts = plan.opts
    probes = {"neurmap": train_overrides(plan, "mini_neurmap", "neurmap", plan.start_weights)}
    if opts.motion_pretrain:
        probes["motion_pretrain"] = train_overrides(plan, "mini_motion", None, None)
    for name, args in probes.items():
        stage = Stage(f"time {name}", f"{timed} timed iterations after {warmup} untimed ones")
        times, _ = _timed(plan, stage, lambda args=args: time_iterations(args, timed, warmup))
        seconds = median(times)
        count = iterations_in(opts.minutes_per_method, seconds)
        stage.note = f"{seconds:.3f} s/iteration -> {count} iterations in {opts.minutes_per_method:g} min"
        _log(stage.note)
        if name == "neurmap":
            opts.iterations = count
        else:
            opts.motion_iterations = count


def pretrain_motion(plan: Plan) -> None:
    """Train M alone on the paired set (experiment=mini_motion), in this process with every core; the
    M-variants then start from it."""
    from neurmap.config import compose
    from neurmap.train import train

    run_dir = plan.work / "runs" / "motion_pretrain"
    args = train_overrides(plan, "mini_motion", None, None)
    stage = Stage("pretrain M", _cmd("neurmap.train", [*args, f"hydra.run.dir={_rel(run_dir)}"]))
    shutil.rmtree(run_dir, ignore_errors=True)
    _timed(plan, stage, lambda: train(compose(args, run_dir)))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ReproError(f"motion pretraining finished without {ckpt}")
    plan.motion_ckpt = _rel(ckpt)


def epe_curve(run_dir: Path, set_name: str = "mini_val") -> list[tuple[int, float]]:
    """(iteration, val motion EPE) of a run from its CSV log, plus the zero map's EPE as iteration -1."""
    rows: list[tuple[int, float]] = []
    zero = math.nan
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                value = row.get(f"val/{set_name}/motion_epe")
                if value:
                    rows.append((int(float(row["step"])), float(value)))
                    zero = float(row.get(f"val/{set_name}/motion_epe_zero") or zero)
    return [(-1, zero), *rows] if rows else []


def _data_args(opts: argparse.Namespace) -> list[str]:
    """The data options that differ from the defaults, as command-line arguments."""
    defaults = build_parser().parse_args([])
    args: list[str] = []
    for key, flag in (
        ("train_photos", "--train-photos"),
        ("test_photos", "--test-photos"),
        ("crop", "--crop"),
        ("train_crops", "--train-crops"),
        ("test_crops", "--test-crops"),
        ("val_crop", "--val-crop"),
        ("val_crops", "--val-crops"),
        ("paired_length", "--paired-length"),
    ):
        value = getattr(opts, key)
        if value == getattr(defaults, key):
            continue
        if key == "paired_length":
            args += [flag, *(f"{v:g}" for v in value)]
        else:
            args += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    if list(opts.synth) != list(DEFAULT_SYNTH):
        for item in opts.synth:
            args += ["--synth", item]
    return args


# --------------------------------------------------------------------------------------------- report


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:04.1f} s" if minutes else f"{sec:.1f} s"


def _fmt(row: dict[str, Any] | None, key: str, fmt: str) -> str:
    value = None if row is None else row.get(key)
    return fmt.format(value) if isinstance(value, (int, float)) and not math.isnan(value) else "—"


def _input_row(summary: dict[str, Any]) -> dict[str, Any]:
    return {k[len("input_") :]: v for k, v in summary.items() if k.startswith("input_")}


def paired_difference(
    rows_a: Sequence[Mapping[str, str]], rows_b: Sequence[Mapping[str, str]], key: str
) -> tuple[float, float, int]:
    """Mean and standard error of the per-image difference ``a - b`` of metric ``key`` over the images (``name``)
    both have a finite value for, and their count (a pure function of two per-image tables)."""
    by_name = {r["name"]: r for r in rows_a}
    diffs = []
    for r in rows_b:
        other = by_name.get(r["name"])
        if other is None or not other.get(key) or not r.get(key):
            continue
        x, y = float(other[key]), float(r[key])
        if not (math.isnan(x) or math.isnan(y)):
            diffs.append(x - y)
    if not diffs:
        return math.nan, math.nan, 0
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), sem, len(diffs)


def ahead_by_two_se(mean: float, se: float, n: int, lower_is_better: bool) -> bool:
    """The target's test: the difference points the good way by more than twice its standard error."""
    ahead = -mean if lower_is_better else mean
    return n > 1 and not math.isnan(se) and ahead > 2 * se


def _per_image_diff(plan: Plan, a: str, b: str, key: str) -> tuple[float, float, int]:
    return paired_difference(plan.per_image.get(a, []), plan.per_image.get(b, []), key)


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return math.nan


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, no GPU used"
    )


def render_report(plan: Plan, total: float) -> str:
    """The Markdown report (commands, seeds, machine, stage times, results table, discussion)."""
    opts = plan.opts
    start_label = (
        "released GoPro-trained DMPHN(1-2-4), as released"
        if plan.released
        else "baseline trained here from scratch (released weights absent)"
    )
    manifest = plan.manifest
    counts = manifest.get("counts", {})
    start = plan.summaries.get("start", {})
    rows: list[tuple[str, dict[str, Any] | None]] = [
        ("blurry input", _input_row(start)),
        (start_label, start),
        *((METHODS[k], plan.summaries.get(k)) for k in ("baseline", "neurmap", *opts.variants) if k in METHODS),
    ]
    seen: set[str] = set()
    rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
    header = ["method", *(c[1] for c in COLUMNS), "ΔPSNR vs start", "ΔLPIPS vs start"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in rows:
        cells = [_fmt(row, key, fmt) for key, _, fmt, _ in COLUMNS]
        dpsnr = dlpips = "—"
        if row is not None and row is not start and label != "blurry input":
            dpsnr = _fmt({"v": row.get("psnr", math.nan) - start.get("psnr", math.nan)}, "v", "{:+.2f} dB")
            dlpips = _fmt({"v": row.get("lpips", math.nan) - start.get("lpips", math.nan)}, "v", "{:+.4f}")
        table.append("| " + " | ".join([label, *cells, dpsnr, dlpips]) + " |")
    if plan.zero_motion:
        cells = [_fmt(plan.zero_motion, key, fmt) for key, _, fmt, _ in COLUMNS]
        table.append("| " + " | ".join(["*reference: motion map of zero*", *cells, "—", "—"]) + " |")

    iterations = _setting(plan, "mini_neurmap", "iterations")
    crop = _setting(plan, "mini_neurmap", "data.paired.transform.crop_size")
    bp = _setting(plan, "mini_neurmap", "data.batch_size_paired")
    bu = _setting(plan, "mini_neurmap", "data.batch_size_unpaired")
    lr = _setting(plan, "mini_neurmap", "backbone.lr")
    backbone = _setting(plan, "mini_neurmap", "backbone.name")
    flow = manifest.get("synthesize", {}).get("kernel", {}).get("flow", {})
    flow_text = ", ".join(f"{k} {v:g}" for k, v in flow.items()) if flow else "?"
    lines = [
        "# Mini reproduction: NeurMAP vs supervised fine-tuning on unseen blur (CPU scale)",
        "",
        f"Generated by `python -m {_PROG}` on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
        f"total wall time **{_duration(total)}**"
        + (" (within the 30 min budget)." if total <= 1800 else " (over the 30 min budget)."),
        "",
        "## Protocol",
        f"- **Start**: {start_label} (`{plan.start_weights}`)."
        + (
            ""
            if plan.released
            else f" **The released weights were not found at `{opts.weights}`**, so a {backbone} was trained from "
            "scratch, supervised, on the paired set (`experiment=mini_scratch`) and every fine-tune starts "
            "from it. This is far weaker than the GoPro-trained release, so the numbers below do not test the "
            "paper's setting."
        ),
        f"- **Photographs** (scikit-image {_skimage_version()}, bundled, nothing downloaded): training "
        f"{', '.join(opts.train_photos)}; held-out test {', '.join(opts.test_photos)} (never trained on).",
        f"- **Paired set** (supervised data, one blur family): {counts.get('paired', '?')} random {opts.crop} px "
        f"crops of the training photographs ({opts.train_crops} per photograph), each blurred by one spatially "
        f"uniform linear blur, length U({opts.paired_length[0]:g}, {opts.paired_length[1]:g}) px, random angle.",
        f"- **Unpaired set** (unseen family): {counts.get('unpaired', '?')} other random {opts.crop} px crops of the "
        "training photographs blurred by Gong et al.'s spatially varying camera-motion flows "
        f"(`neurmap.synthesize`, {flow_text}); blurry and sharp sides are sampled independently, as "
        "`data=kernel_synth` does.",
        f"- **Test set**: {counts.get('test', '?')} crops ({opts.test_crops} per held-out photograph, {opts.crop} px "
        "before the border crop) blurred by the same camera-motion family with another seed, with ground-truth "
        "motion; evaluated whole.",
        f"- **Fine-tunes** (`experiment=mini_neurmap`): {backbone}, {iterations} iterations each, batch "
        f"{bp} paired + {bu} unpaired blurry + {bu} unpaired sharp {crop} px crops, lr(D) {lr} (the paper's), "
        "M and N 1e-4, linear decay, the paper's loss weights; identical for every variant (the supervised "
        "fine-tune sees the same paired batches and iterations but no unpaired data).",
        f"- **Seeds**: `seed={opts.seed}` for every training (Lightning `seed_everything`); data crops from seed "
        f"{opts.seed}, unpaired blur from seed {opts.seed}, test blur from seed {opts.seed + 1}.",
        f"- **Machine**: {_machine()}; {opts.jobs} job(s) at a time with {opts.threads} torch thread(s) each; "
        f"1-min load average {_loads(plan)} (this run's own jobs count; clearly above the number of jobs means "
        "other processes shared the CPU and the times are inflated).",
        "",
        "## Results (held-out test set, unseen camera-motion blur)",
        "",
        *table,
        "",
        "PSNR on RGB (data range 1); SSIM torchmetrics (RGB, Gaussian 11×11); LPIPS v0.1 AlexNet; NIQE on "
        "grey (MATLAB parameters; 96 px blocks, so only a few blocks per test image). Motion error only for "
        "networks with a motion estimator M (Net2, Net3, NeurMAP): `motion_mse_authors` is the authors' "
        "`eval_mmap_mse.py` convention, `motion_mse_full` and the end-point error use the full blur length "
        "(README, Evaluate); the last row is the error of a motion map of zero, i.e. of an M that learned nothing. "
        "Δ columns are against the start row.",
        "",
        "## Target: NeurMAP ahead of both references",
        "",
        *target_table(plan),
        "",
        "## Motion estimator M (validation: camera-motion blur on other crops of the training photographs)",
        "",
        *epe_table(plan),
        "",
        *figure_lines(plan),
        "## Discussion",
        "",
        *discussion(plan),
        "",
        "## Commands",
        "",
        "The whole run:",
        "",
        "```bash",
        _cmd(_PROG, opts.argv),
        "```",
        "",
        "The same stages by hand (from the repository root):",
        "",
        "```bash",
        *(s.command for s in plan.stages),
        "```",
        "",
        "## Wall time per stage",
        "",
        f"Measured inside each job. {_parallel_note(opts)}",
        "",
        "| stage | wall time | note |",
        "|---|---|---|",
        *(f"| {s.name} | {_duration(s.seconds)} | {s.note} |" for s in plan.stages),
        f"| **total** (including start-up and the report) | **{_duration(total)}** | |",
        "",
    ]
    return "\n".join(lines)


def _parallel_note(opts: argparse.Namespace) -> str:
    if opts.jobs == 1:
        return f"The stages ran one after the other in one process with {opts.threads} torch thread(s)."
    return (
        f"The trainings (each followed by its evaluation) ran side by side in {opts.jobs} processes with "
        f"{opts.threads} torch thread(s) each, so the total is less than the sum of the stages."
    )


def _loads(plan: Plan) -> str:
    values = [f"{v:.2f}" for v in plan.load if not math.isnan(v)]
    return " at the start, ".join(values) + " at the end" if len(values) == 2 else "unknown"


def _skimage_version() -> str:
    try:
        import skimage

        return skimage.__version__
    except ImportError:
        return "?"


def _setting(plan: Plan, experiment: str, key: str) -> Any:
    """A value of the composed fine-tune config (so the report shows what actually ran)."""
    from omegaconf import OmegaConf

    from neurmap.config import compose

    cache = plan.configs
    if experiment not in cache:
        overrides = train_overrides(plan, experiment, "neurmap", plan.start_weights or None)
        cache[experiment] = compose(overrides, plan.work / ".compose")
    return OmegaConf.select(cache[experiment], key)


def zero_motion_reference(test_dir: Path, alpha: float = 40.0, authors_scale: float = 20.0) -> dict[str, float]:
    """The motion columns for a motion map of zero everywhere (mean over the test set): the error of an M that
    has learned nothing; its EPE is the mean blur length of the test set."""
    from neurmap.data.io import read_mfmap
    from neurmap.metrics.motion import motion_errors

    rows = []
    for path in sorted(test_dir.rglob("*_mfmap.mat")):
        gt = read_mfmap(path)[None]
        errors = motion_errors(torch.zeros_like(gt), gt, alpha, authors_scale)
        rows.append({k: float(v) for k, v in errors.items()})
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]} if rows else {}


def target_verdicts(plan: Plan) -> list[dict[str, Any]]:
    """The issue's target as data: for each reference (start, supervised) and metric (PSNR up, LPIPS down), the
    mean and standard error of the per-image NeurMAP - reference differences and whether NeurMAP is ahead by
    more than twice the standard error."""
    out = []
    for ref in ("start", "baseline"):
        for key, lower_better in (("psnr", False), ("lpips", True)):
            mean, se, n = _per_image_diff(plan, "neurmap", ref, key)
            met = ahead_by_two_se(mean, se, n, lower_better)
            out.append({"reference": ref, "metric": key, "mean": mean, "se": se, "n": n, "met": met})
    return out


def target_table(plan: Plan) -> list[str]:
    verdicts = target_verdicts(plan)
    names = {"start": "released / start network", "baseline": "supervised fine-tune"}
    lines = [
        "| NeurMAP − reference | metric | mean ± s.e. (per image) | ahead by > 2 s.e.? |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        unit = " dB" if v["metric"] == "psnr" else ""
        fmt = "{:+.2f}" if v["metric"] == "psnr" else "{:+.4f}"
        cell = f"{fmt.format(v['mean'])} ± {fmt.format(v['se']).lstrip('+')}{unit} (n={v['n']})"
        lines.append(f"| {names[v['reference']]} | {v['metric'].upper()} | {cell} | {'yes' if v['met'] else 'no'} |")
    met = all(v["met"] for v in verdicts) and bool(verdicts)
    lines += [
        "",
        "**Target met.**"
        if met
        else f"**Target not met** ({sum(v['met'] for v in verdicts)} of {len(verdicts)} comparisons).",
    ]
    return lines


def epe_table(plan: Plan) -> list[str]:
    """Val motion EPE (px) by iteration for the runs with M, beside the zero map's."""
    curves = {k: v for k, v in plan.motion_curves.items() if v}
    if not curves:
        return ["(no validation logs with motion EPE: a logger was off)"]
    steps = sorted({i for c in curves.values() for i, _ in c if i >= 0})
    zero = next((e for c in curves.values() for i, e in c if i < 0), math.nan)
    lines = ["| run | " + " | ".join(f"it {i + 1}" for i in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, curve in curves.items():
        by_step = dict(curve)
        lines.append(f"| {name} | " + " | ".join(_fmt({"v": by_step.get(i)}, "v", "{:.2f}") for i in steps) + " |")
    lines += ["", f"EPE of a motion map of zero on this set: {zero:.2f} px (an M that learned nothing)."]
    return lines


def render_figure(plan: Plan, path: Path) -> list[str]:
    """One held-out test image through every method: top row blurry, each output, sharp; bottom row the
    ground-truth motion and each M's motion in flow colours (one colour scale). Returns the column labels."""
    from neurmap.data.folders import EvalImages
    from neurmap.data.io import write_image
    from neurmap.data.layouts import kernel_synth
    from neurmap.inference import load_networks
    from neurmap.nets.reblur import canonicalize_motion
    from neurmap.utils.flow_vis import flow_to_color, make_grid

    sample = EvalImages(kernel_synth(plan.data_dir / "kernel_synth" / "test"))[0]
    blur = sample["blur"][None]
    images, labels, flows = [sample["blur"]], ["blurry"], {"ground truth": sample["motion"]}
    backbone = _setting(plan, "mini_neurmap", "backbone")
    keys = ["start", "baseline", "neurmap", *(k for k in plan.opts.variants if k != "neurmap")]
    with torch.no_grad():
        for key in keys:
            ckpt = plan.start_weights if key == "start" else plan.work / "runs" / key / "checkpoints" / "last.ckpt"
            if key != "start" and not Path(ckpt).is_file():
                continue
            nets = load_networks(ckpt, backbone if key == "start" else None)
            out = nets.deblur(blur).clamp(0, 1)
            images.append(out[0])
            labels.append(key)
            if nets.motion is not None:
                mb, ms = canonicalize_motion(nets.motion(blur)), canonicalize_motion(nets.motion(out))
                flows[key] = ((mb - ms) if nets.relative_motion else mb)[0] * nets.alpha
    images.append(sample["sharp"])
    labels.append("sharp")
    scale = max(float(f.norm(dim=0).max()) for f in flows.values())
    colours = [flow_to_color(f[None], max_magnitude=max(scale, 1e-3))[0] for f in flows.values()]
    blank = torch.ones_like(images[0])
    bottom = colours + [blank] * (len(images) - len(colours))
    grid = make_grid([*images, *bottom], nrow=len(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, grid.permute(1, 2, 0).numpy())
    return [", ".join(labels), ", ".join(flows)]


def figure_lines(plan: Plan) -> list[str]:
    if not plan.figure:
        return []
    top, bottom = plan.figure
    return [
        f"![one held-out test image through every method]({plan.opts.report_name}.png)",
        "",
        f"Top row, left to right: {top}. Bottom row: motion in flow colours (hue = direction, saturation = "
        f"length, one scale for all), left to right: {bottom} (for the fine-tunes, M(B) − M(D(B)), what R uses).",
        "",
    ]


def discussion(plan: Plan) -> list[str]:
    """Paragraphs computed from the numbers: NeurMAP vs supervised, why, and how far from the paper."""
    s = plan.summaries
    start, sup, neur = s.get("start"), s.get("baseline"), s.get("neurmap")
    if not (start and sup and neur):
        return ["(incomplete run: no discussion)"]
    iterations = int(_setting(plan, "mini_neurmap", "iterations"))
    crop = _setting(plan, "mini_neurmap", "data.paired.transform.crop_size")
    counts = plan.manifest.get("counts", {})

    def gain(row: dict[str, Any], key: str) -> float:
        return row.get(key, math.nan) - start.get(key, math.nan)

    n_psnr, n_lpips = gain(neur, "psnr"), gain(neur, "lpips")
    s_psnr, s_lpips = gain(sup, "psnr"), gain(sup, "lpips")
    inp = _input_row(start)
    d, se, n = _per_image_diff(plan, "neurmap", "baseline", "psnr")
    dl, sel, _ = _per_image_diff(plan, "neurmap", "baseline", "lpips")
    paper_lpips = PAPER["lpips_after"] - PAPER["lpips_before"]
    beats_psnr, beats_lpips = round(d, 2) > 0, round(dl, 4) < 0
    if beats_psnr and beats_lpips:
        verdict = "NeurMAP is ahead of the supervised fine-tune on both PSNR and LPIPS"
    elif beats_psnr or beats_lpips:
        verdict = f"NeurMAP is ahead of the supervised fine-tune on {'PSNR' if beats_psnr else 'LPIPS'} only"
    else:
        verdict = "NeurMAP is not ahead of the supervised fine-tune"
    sig_psnr = not math.isnan(se) and abs(d) > 2 * se
    sig_lpips = not math.isnan(sel) and abs(dl) > 2 * sel
    significant = sig_psnr and sig_lpips

    def beyond(flag: bool) -> str:
        return "more than twice its standard error" if flag else "within twice its standard error (noise on this set)"

    start_name = "the released DMPHN" if plan.released else "the from-scratch baseline"
    paras = [
        f"**Outcome.** {verdict} in this run: on the {n} held-out images NeurMAP − supervised is "
        f"{d:+.2f} ± {se:.2f} dB PSNR (mean ± standard error of the per-image differences), {beyond(sig_psnr)}, "
        f"and {dl:+.4f} ± {sel:.4f} LPIPS, {beyond(sig_lpips)}."
        + f" Relative to {start_name} ({start.get('psnr', math.nan):.2f} dB, LPIPS "
        f"{start.get('lpips', math.nan):.4f}; blurry input {inp.get('psnr', math.nan):.2f} dB, "
        f"{inp.get('lpips', math.nan):.4f}), NeurMAP moves PSNR by {n_psnr:+.2f} dB and LPIPS by {n_lpips:+.4f}; "
        f"the supervised fine-tune by {s_psnr:+.2f} dB and {s_lpips:+.4f}.",
        "",
        "**Why.** " + " ".join(_why(plan, iterations)),
        "",
        f"**Against the paper.** The paper's DMPHN gains +{PAPER['psnr_gain']:.2f} dB PSNR and "
        f"{paper_lpips:+.3f} LPIPS ({PAPER['lpips_before']:.3f} → {PAPER['lpips_after']:.3f}) with NeurMAP on "
        f"unseen (kernel-synthesized) blur. This run's NeurMAP changes PSNR by {n_psnr:+.2f} dB and LPIPS by "
        f"{n_lpips:+.4f}, i.e. {_share(n_psnr, PAPER['psnr_gain'])} and {_share(n_lpips, paper_lpips)} of the "
        "paper's gains (negative: the opposite direction), "
        + (
            "so the direction of the claim holds here (NeurMAP above supervised fine-tuning), not its size. "
            if beats_psnr and beats_lpips and significant
            else "so it does not reproduce the claim at this scale. "
        )
        + f"The scale is the main reason: {iterations} iterations against the authors' ~210 k (about "
        f"{210_000 / max(iterations, 1):,.0f}× fewer), {crop} px crops and batch "
        f"{_setting(plan, 'mini_neurmap', 'data.batch_size_paired')}+"
        f"{_setting(plan, 'mini_neurmap', 'data.batch_size_unpaired')} against 256 px and 4+4, "
        f"{counts.get('unpaired', '?')} unpaired crops of {len(plan.opts.train_photos)} photographs against "
        f"thousands of images, and {counts.get('test', '?')} test images (standard errors of a few tenths of a dB). "
        "NeurMAP's advantage comes through M and R, which must first learn the target blur"
        + (
            " (here M starts from the motion pretraining, on the paired blur only)"
            if plan.motion_ckpt
            else " from scratch"
        )
        + ", so it is the method that needs the long schedule most, while supervised fine-tuning improves from the "
        "first step. The blur "
        "families are synthetic, and the paired family here (uniform linear blur on the same photographs) is closer "
        "to the test blur than GoPro is to Gong's flows, which favours the supervised fine-tune. A faithful check "
        "of the claim needs the paper's schedule on a GPU (README, Reproduce the paper's tables).",
    ]
    paras += ["", "**Levers tried.** " + " ".join(_levers(plan))]
    if not plan.released:
        paras += [
            "",
            "**Fallback start.** The released GoPro-trained weights were absent, so the start is a network trained "
            "here for a few hundred iterations; its quality, and the gains on top of it, say little about the "
            "paper's claim.",
        ]
    return paras


def _levers(plan: Plan) -> list[str]:
    """What this run did to give NeurMAP its chance, from the numbers: motion pretraining, the loss preset."""
    out = []
    curve = [e for i, e in plan.motion_curves.get("motion_pretrain", []) if i >= 0]
    zero = [e for i, e in plan.motion_curves.get("motion_pretrain", []) if i < 0]
    if plan.motion_ckpt and curve:
        out.append(
            f"M was pretrained on the paired set before the fine-tunes: its val EPE was {curve[0]:.2f} px at the "
            f"first validation, {min(curve):.2f} px at best and {curve[-1]:.2f} px at the end (the weights the "
            "fine-tunes start from)" + (f", against {zero[0]:.2f} px for a zero map." if zero else ".")
        )
    elif not plan.motion_ckpt:
        out.append("M started from scratch (--no-motion-pretrain).")
    loss = _setting(plan, "mini_neurmap", "loss.name")
    out.append(
        f"The loss preset is loss={loss}; README's Faithfulness section tabulates the loss-scale sweep on mini_val "
        "(training photographs only, never the test set) that chose the default preset."
    )
    return out


def _why(plan: Plan, iterations: int) -> list[str]:
    """Sentences explaining the outcome from the numbers: how far D moved, what M learned, the ablations."""
    s = plan.summaries
    start, sup, neur = s["start"], s["baseline"], s["neurmap"]
    out = []
    s_psnr = sup.get("psnr", math.nan) - start.get("psnr", math.nan)
    if abs(s_psnr) >= 0.1:
        out.append(
            f"The paper's learning rate is enough to move the network at this scale: the supervised fine-tune "
            f"changed PSNR by {s_psnr:+.2f} dB in {iterations} iterations."
        )
    else:
        out.append(f"In {iterations} iterations the paper's learning rate barely moves the network ({s_psnr:+.2f} dB).")
    zero = plan.zero_motion
    epe = neur.get("motion_epe", math.nan)
    learned = True
    if zero and not math.isnan(epe):
        ratio = epe / zero["motion_epe"]
        learned = ratio < 0.8
        if learned:
            verdict = "has learned a usable motion estimate."
        elif ratio < 0.95:
            verdict = (
                f"explains only part of the blur ({100 * (1 - ratio):.0f} % below the zero map): the reblurring loss "
                "and the priors that pass through M (sharp-image prior, motion TV) can then give D only a weak, "
                "partly wrong signal."
            )
        else:
            verdict = (
                "has not learned to estimate the blur in this budget: the reblurring loss and the priors that pass "
                "through M give D no reliable signal, only gradients through a nearly untrained network."
            )
        out.append(
            f"NeurMAP's motion estimator M ends with an end-point error of {epe:.2f} px against "
            f"{zero['motion_epe']:.2f} px for a motion map of zero (the mean blur length of the test set), so it "
            + verdict
        )
    niqe_start, niqe_neur = start.get("niqe", math.nan), neur.get("niqe", math.nan)
    if niqe_neur - niqe_start > 1.0 and not learned:
        out.append(
            f"NIQE rises from {niqe_start:.2f} to {niqe_neur:.2f} (the outputs look less natural), consistent with "
            "those gradients adding artifacts rather than removing blur."
        )
    with_m = [k for k in ("net2", "net3") if k in s]
    if "net1" in s:
        d1 = s["net1"].get("psnr", math.nan) - sup.get("psnr", math.nan)
        names = ", ".join(["NeurMAP", *(k.capitalize() for k in with_m)])
        gaps = [s[k].get("psnr", math.nan) - sup.get("psnr", math.nan) for k in ["neurmap", *with_m]]
        values = ", ".join(f"{g:+.2f}" for g in gaps)
        if abs(d1) < 0.2 and all(g < -0.2 for g in gaps):
            conclusion = ": the loss comes with M and R, not with the discriminator."
        elif abs(d1) < 0.2 and all(g > 0.2 for g in gaps):
            conclusion = ": the gain comes with M and R, not with the discriminator."
        else:
            conclusion = "."
        out.append(
            f"Net1, which keeps the content loss and adds only an image discriminator (no M or R), ends "
            f"{d1:+.2f} dB from the supervised fine-tune, the variants with M and R ({names}) {values} dB" + conclusion
        )
    return out


def _share(gain: float, paper: float) -> str:
    """``gain`` as a percentage of the paper's gain (same sign = same direction)."""
    if math.isnan(gain):
        return "—"
    share = 100 * gain / paper
    return f"{share:+.0f} %" if abs(share) >= 10 else f"{share:+.1f} %"


# ------------------------------------------------------------------------------------------------ CLI


def _default_weights() -> str:
    return os.environ.get("NEURMAP_DMPHN_WEIGHTS") or str(REPO.parent / "shared" / "weights" / "dmphn_1_2_4")


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of skimage.data image names")
    return items


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (every number of the protocol that is not in conf/experiment/mini_*.yaml)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {_PROG}",
        description=__doc__.split("\n\n")[0] + " Writes <out>/<report-name>.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights",
        default=_default_weights(),
        help="released GoPro-trained DMPHN(1-2-4) folder (encoder_lv*.pkl, ...); env NEURMAP_DMPHN_WEIGHTS. "
        "Missing: a from-scratch baseline is trained first (experiment=mini_scratch)",
    )
    parser.add_argument("--out", default="reports", help="folder of the report")
    parser.add_argument("--work", default="logs/reproduce_mini", help="data, runs and evaluations go here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every training")
    parser.add_argument(
        "--iterations", type=_positive, default=None, help="fine-tune iterations (default: mini_neurmap.yaml)"
    )
    parser.add_argument(
        "--scratch-iterations", type=_positive, default=None, help="fallback baseline (default: mini_scratch.yaml)"
    )
    parser.add_argument("--backbone", default=None, help="backbone option (default: the experiment's dmphn_1_2_4)")
    parser.add_argument(
        "--variants",
        type=_csv_list,
        default=["neurmap", "net1", "net2", "net3"],
        help="fine-tunes besides the supervised one (comma-separated; neurmap is required)",
    )
    parser.add_argument("--train-photos", type=_csv_list, default=list(DEFAULT_TRAIN_PHOTOS), help="skimage.data names")
    parser.add_argument("--test-photos", type=_csv_list, default=list(DEFAULT_TEST_PHOTOS), help="held out")
    parser.add_argument("--crop", type=_positive, default=288, help="side of the photo crops the sets are made of")
    parser.add_argument("--train-crops", type=_positive, default=4, help="paired and unpaired crops per photo")
    parser.add_argument("--test-crops", type=_positive, default=4, help="test crops per held-out photograph")
    parser.add_argument("--val-crop", type=_positive, default=160, help="side of the validation crops")
    parser.add_argument("--val-crops", type=_positive, default=1, help="validation crops per training photograph")
    parser.add_argument(
        "--paired-length",
        type=float,
        nargs=2,
        default=[3.0, 19.0],
        metavar=("LOW", "HIGH"),
        help="length range (px) of the paired set's uniform linear blur",
    )
    parser.add_argument(
        "--synth",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="neurmap.synthesize setting of the camera-motion sets (repeatable; default: preset=mild)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of every training (repeatable, shown in the report's commands)",
    )
    parser.add_argument(
        "--eval-set", action="append", default=[], metavar="KEY=VALUE", help="extra neurmap.evaluate override"
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="torch threads per job; 1 is the robust choice on a shared 2-core CPU (with 2, every op waits at a "
        "thread barrier whenever another process holds a core: 10-40x slower steps were measured)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=min(2, os.cpu_count() or 1),
        help="trainings run side by side in this many processes (1: one after the other, in this process)",
    )
    parser.add_argument(
        "--motion-pretrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pretrain M on the paired set first (experiment=mini_motion); NeurMAP, Net2, Net3 start from it",
    )
    parser.add_argument(
        "--motion-iterations", type=_positive, default=None, help="motion pretraining (default: mini_motion.yaml)"
    )
    parser.add_argument(
        "--motion-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of the motion pretraining (repeatable)",
    )
    parser.add_argument(
        "--minutes-per-method",
        type=float,
        default=None,
        help="instead of --iterations/--motion-iterations: time a few NeurMAP and motion-pretraining iterations "
        "first and give every method as many iterations as fit in this many minutes (all fine-tunes get the "
        "NeurMAP count, so D iterations stay equal)",
    )
    parser.add_argument(
        "--report-name", default="mini_reproduction", help="<out>/<name>.md and <name>.png (e.g. gpu_reproduction)"
    )
    parser.add_argument("--data-only", action="store_true", help="build (or check) the data and stop")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options (errors are :class:`ReproError`); ``argv`` is kept for the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    opts.argv = argv
    if opts.synth is None:
        opts.synth = list(DEFAULT_SYNTH)
    if "neurmap" not in opts.variants:
        raise ReproError(f"--variants must include neurmap, got {','.join(opts.variants)}")
    unknown = [v for v in opts.variants if v not in METHODS or v == "baseline"]
    if unknown:
        raise ReproError(f"--variants: unknown {unknown}; choose from neurmap, net1, net2, net3")
    low, high = opts.paired_length
    if not 0 <= low <= high:
        raise ReproError(f"--paired-length must be LOW HIGH with 0 <= LOW <= HIGH, got {low} {high}")
    if opts.minutes_per_method is not None and not opts.minutes_per_method > 0:
        raise ReproError(f"--minutes-per-method must be > 0, got {opts.minutes_per_method}")
    if not opts.report_name or "/" in opts.report_name:
        raise ReproError(f"--report-name must be a file name without a folder, got {opts.report_name!r}")
    for item in [*opts.set, *opts.eval_set]:
        if "=" not in item:
            raise ReproError(f"{item!r} is not KEY=VALUE")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; errors end with one line and exit status 2."""
    from hydra.errors import HydraException

    try:
        opts = parse_args(argv)
        run(opts)
    except (ReproError, FileNotFoundError, HydraException, ValueError) as err:
        print(f"{_PROG}: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
