"""The blur generator: Gong et al.'s kernel-synthesized set, or GoPro-style frame averages, from src into dst.

:func:`synthesize` is what ``python -m neurmap.synthesize src=DIR dst=DIR [key=value ...]`` (:mod:`neurmap.synthesize`)
runs; :func:`load_config` reads its settings (``conf/synthesize.yaml``, a preset, overrides).

**kernel mode** (NeurMAP's "kernel-synthesized" data; Gong et al., "From motion blur to motion flow",
CVPR'17, ``donggong1/motion-flow-syn``). For every sharp image under src and every index ``k``:

1. A camera-motion flow (:func:`neurmap.synth.flows.camera_flow`): the full per-pixel blur vector in px,
   the sum of an x-translation whose size ramps linearly across the columns ("acceleration"), a
   y-translation ramping across the rows, an in-plane rotation about a randomly shifted centre
   (tangential, ``tan(rot) * r``) and a zoom about that centre (radial, ``tz * r**1.5``); every
   parameter uniform in ``[-max, max]`` (``kernel.flow``, Gong's "strong" ranges by default).
2. Rounded to integer px (``kernel.round_flow``, as Gong's MATLAB ``round``).
3. The blurry image: every pixel averages the sharp image along an anti-aliased line segment of that
   length and direction, centred on it, clamped at the image edge
   (:func:`neurmap.synth.line_blur.line_blur`, Gong's/Sun et al.'s ``motionBlurConv``); optional noise.
4. Borders cropped by ``floor(max|v|/2)`` rows and ``floor(max|u|/2)`` columns (``kernel.crop_boundary``),
   on the blurry image, the sharp image and the motion map alike.
5. Written as ``dst/<name>_<kkk>_mfmap.mat``, ``..._gtimg.png`` and, last, ``..._blurryimg.png`` (Gong's
   naming, the files NeurMAP's configs glob). ``<name>`` is the source's path relative to src without
   its suffix, ``/`` replaced by ``_``; ``<kkk>`` is ``k`` on three digits. The ``.mat`` holds ``mfmap``,
   H x W x 2 = (u, v): u horizontal >= 0, v vertical (down positive), the full blur vector in px; a line
   has no sign, so vectors with u < 0 are stored negated (Gong's ``uv_half``).

Item ``k`` of source ``F`` draws from ``numpy.random.default_rng([seed, crc32(F relative), k])``, so the
output does not depend on the number of workers, the order, or on resuming an interrupted run: an item
whose three files exist is skipped.

Differences from Gong's MATLAB: the rotation field is exactly tangential (his carries a ``%????``
comment and is not); the line kernel's end taps are the exact overlap of the segment with each pixel
(see :mod:`neurmap.synth.line_blur`); indices start at 000 (his at 001, the unblurred copy being 051 of
50); the noise (``kernel.noise_std``, on the [0, 1] scale) is off by default (his N(0, 0.001) on the
0..255 scale vanishes in the 8-bit rounding); sources of any image format, in sub-folders too.

**gopro mode** (Nah et al. CVPR'17 style): src holds video frames, either directly (one sequence, named
after src) or in one sub-folder per sequence. Every window of ``gopro.frames`` consecutive frames
(step ``gopro.stride``) is averaged, in linear light with ``gopro.gamma``, into
``dst/<sequence>/blur/<stem>.png``; its middle frame is copied to ``dst/<sequence>/sharp/<stem>.png``
(``<stem>``: the middle frame's name without suffix). Done windows are skipped on a rerun.
"""

from __future__ import annotations

import multiprocessing
import re
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from neurmap.composition import overlay, settings
from neurmap.data.io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image, write_mfmap
from neurmap.errors import UsageError
from neurmap.synth.flows import camera_flow
from neurmap.synth.line_blur import line_blur
from neurmap.utils.records import check_record, check_writable, read_record, write_record

__all__ = ["UsageError", "SynthesisError", "load_config", "print_summary", "synthesize"]

_SHOW_FAILED = 5  # failed sources named in the final report


class SynthesisError(RuntimeError):
    """A source that cannot be turned into a pair (unreadable, frames of different sizes, a crop larger than
    the image, two sources with one output name); the message names the file."""


# --------------------------------------------------------------------------------------------- config


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], expected: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not ok(value):
        raise UsageError(f"{key} must be {expected}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _validate(cfg: DictConfig) -> None:
    _check(cfg, "mode", lambda v: v in ("kernel", "gopro"), "'kernel' or 'gopro'")
    _check(cfg, "seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    _check(cfg, "workers", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "on_error", lambda v: v in ("raise", "fail", "skip"), "'raise', 'fail' or 'skip'")
    for key in ("recursive", "kernel.include_sharp", "kernel.round_flow", "kernel.crop_boundary"):
        _check(cfg, key, lambda v: isinstance(v, bool), "true or false")
    _check(cfg, "kernel.blurs_per_image", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "kernel.noise_std", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    for key in cfg.kernel.flow:
        _check(cfg, f"kernel.flow.{key}", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    _check(cfg, "gopro.frames", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "gopro.stride", lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1")
    _check(cfg, "gopro.gamma", lambda v: v is None or (_is_number(v) and v > 0), "null or a number > 0")


def load_config(overrides: Sequence[str] = (), cfg: Mapping | DictConfig | None = None) -> DictConfig:
    """The settings: ``conf/synthesize.yaml`` with its ``preset`` and the ``overrides`` (Hydra's compose API
    over :class:`neurmap.settings.SynthesisSettings`), then ``cfg``.

    Args:
        overrides: ``key=value`` strings (dotted keys, Hydra's syntax: ``gopro.gamma=null``, ``preset=mild``).
        cfg: settings merged last (a nested mapping, e.g. ``{"kernel": {"noise_std": 0.01}}``, or a whole config).

    Returns:
        The validated config, in struct mode (unknown keys cannot be added).

    Raises:
        UsageError: an unknown key, a malformed override, an unknown preset or a bad value.
    """
    merged = settings("synthesize", overrides)
    if cfg is not None:
        merged = overlay(merged, cfg, "the given config")
    _validate(merged)
    return merged


# ---------------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class _KernelJob:
    """One source image and the indices still to make from it."""

    src: str
    rel: str
    dst_prefix: str
    indices: tuple[int, ...]
    seed: int
    sharp_index: int | None
    flow: dict
    round_flow: bool
    crop_boundary: bool
    noise_std: float


@dataclass(frozen=True)
class _GoproJob:
    """One window of consecutive frames."""

    frames: tuple[str, ...]
    blur: str
    sharp: str
    gamma: float | None


@dataclass(frozen=True)
class _Result:
    written: int
    error: str | None = None


def _kernel_paths(prefix: str, k: int) -> tuple[Path, Path, Path]:
    """(mfmap, gtimg, blurryimg) of item k, in writing order."""
    stem = f"{prefix}_{k:03d}"
    return Path(f"{stem}_mfmap.mat"), Path(f"{stem}_gtimg.png"), Path(f"{stem}_blurryimg.png")


def _matlab_round(flow: np.ndarray) -> np.ndarray:
    """Round half away from zero (MATLAB's ``round``), without negative zeros."""
    return np.copysign(np.floor(np.abs(flow) + 0.5), flow) + 0.0


def _run_kernel(job: _KernelJob) -> _Result:
    try:
        sharp = read_image(job.src)
    except ImageReadError as err:
        return _Result(0, str(err))
    _, h, w = sharp.shape
    key = zlib.crc32(job.rel.encode("utf-8"))
    for written, k in enumerate(job.indices):
        rng = np.random.default_rng([job.seed, key, k])
        if k == job.sharp_index:
            flow = np.zeros((2, h, w), np.float32)
        else:
            flow = camera_flow((h, w), rng, **job.flow)
            if job.round_flow:
                flow = _matlab_round(flow).astype(np.float32)
        blurry = line_blur(sharp, torch.from_numpy(flow))
        if job.noise_std > 0:
            noise = rng.standard_normal(blurry.shape).astype(np.float32) * np.float32(job.noise_std)
            blurry = (blurry + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        gt = sharp
        if job.crop_boundary:
            bh, bw = (int(np.floor(np.abs(flow[c]).max() / 2)) for c in (0, 1))
            if 2 * bh >= h or 2 * bw >= w:
                return _Result(
                    written,
                    f"{job.src}: cropping {bh} rows and {bw} columns from each side (half the largest blur) "
                    f"leaves nothing of a {h}x{w} image; lower kernel.flow or set kernel.crop_boundary=false",
                )
            flow = flow[:, bh : h - bh, bw : w - bw]
            blurry, gt = blurry[:, bh : h - bh, bw : w - bw], sharp[:, bh : h - bh, bw : w - bw]
        mfmap_path, gt_path, blurry_path = _kernel_paths(job.dst_prefix, k)
        write_mfmap(mfmap_path, flow)
        write_image(gt_path, gt)
        write_image(blurry_path, blurry)  # last: its presence marks the item as done
    return _Result(len(job.indices))


def _run_gopro(job: _GoproJob) -> _Result:
    try:
        frames = [read_image(path) for path in job.frames]
    except ImageReadError as err:
        return _Result(0, str(err))
    for path, frame in zip(job.frames, frames):
        if frame.shape != frames[0].shape:
            return _Result(
                0,
                f"{path}: {frame.shape[1]}x{frame.shape[2]} px, but {job.frames[0]} of the same window is "
                f"{frames[0].shape[1]}x{frames[0].shape[2]} px (frames of a sequence must share a size)",
            )
    stack = torch.stack(frames)
    blur = stack.mean(0) if job.gamma is None else stack.pow(job.gamma).mean(0).pow(1.0 / job.gamma)
    write_image(job.sharp, frames[len(frames) // 2])
    write_image(job.blur, blur)  # last: its presence marks the window as done
    return _Result(1)


def _run(job: _KernelJob | _GoproJob) -> _Result:
    return _run_kernel(job) if isinstance(job, _KernelJob) else _run_gopro(job)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _kernel_jobs(src: Path, dst: Path, cfg: DictConfig, found: list[Path]) -> tuple[list[_KernelJob], int, int]:
    """Jobs still to run, the number of items they hold, and the number already done (none with
    ``overwrite=true``); ``found`` gets the existing files of the items still to run (they would be replaced)."""
    sources = list_images(src, "sharp source images (any format) for mode=kernel", recursive=cfg.recursive)
    kcfg = cfg.kernel
    indices = list(range(kcfg.blurs_per_image))
    sharp_index = kcfg.blurs_per_image if kcfg.include_sharp else None
    if sharp_index is not None:
        indices.append(sharp_index)
    flow = OmegaConf.to_container(kcfg.flow)
    jobs, pending, existing = [], 0, 0
    names: dict[str, Path] = {}
    for path in sources:
        rel = path.relative_to(src).as_posix()
        name = rel[: -len(path.suffix)].replace("/", "_") if path.suffix else rel.replace("/", "_")
        if name in names:
            raise SynthesisError(f"{path} and {names[name]} both map to the output name '{name}'; rename one of them")
        names[name] = path
        prefix = str(dst / name)
        todo = tuple(k for k in indices if cfg.overwrite or not all(p.is_file() for p in _kernel_paths(prefix, k)))
        found.extend(p for k in todo for p in _kernel_paths(prefix, k) if p.exists())
        existing += len(indices) - len(todo)
        if todo:
            pending += len(todo)
            jobs.append(
                _KernelJob(
                    str(path),
                    rel,
                    prefix,
                    todo,
                    cfg.seed,
                    sharp_index,
                    flow,
                    kcfg.round_flow,
                    kcfg.crop_boundary,
                    float(kcfg.noise_std),
                )
            )
    return jobs, pending, existing


def _frames_in(folder: Path) -> list[Path]:
    suffixes = set(IMAGE_EXTENSIONS)
    files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file() and p.name[0] != "."]
    return sorted(files, key=_natural_key)


def _gopro_jobs(
    src: Path, dst: Path, cfg: DictConfig, found: list[Path]
) -> tuple[list[_GoproJob], int, int, list[str]]:
    """Jobs still to run, their number, the number of windows already done, and the too-short sequences;
    ``found`` gets the existing files of the windows still to run (they would be replaced)."""
    expected = "video frames for mode=gopro: image files (one sequence) or one sub-folder of frames per sequence"
    direct = _frames_in(src)
    folders = [p for p in sorted(src.iterdir(), key=_natural_key) if p.is_dir() and p.name[0] != "."]
    nested = [(f.name, frames) for f in folders if (frames := _frames_in(f))]
    if direct and nested:
        raise UsageError(
            f"{src} holds both frames and sub-folders of frames ({nested[0][0]}/, ...); expected {expected}"
        )
    sequences = [(src.resolve().name, direct)] if direct else nested
    if not sequences:
        raise FileNotFoundError(f"{src} holds no image; expected {expected}")
    size = cfg.gopro.frames
    stride = cfg.gopro.stride or size
    gamma = None if cfg.gopro.gamma is None else float(cfg.gopro.gamma)
    jobs, existing, short = [], 0, []
    for name, frames in sequences:
        stems: dict[str, Path] = {}
        for frame in frames:
            if frame.stem in stems:
                raise SynthesisError(f"{frame} and {stems[frame.stem]} share the name '{frame.stem}'")
            stems[frame.stem] = frame
        if len(frames) < size:
            short.append(f"{name} ({len(frames)} frames)")
            continue
        for start in range(0, len(frames) - size + 1, stride):
            window = frames[start : start + size]
            stem = window[size // 2].stem
            blur, sharp = dst / name / "blur" / f"{stem}.png", dst / name / "sharp" / f"{stem}.png"
            if blur.is_file() and sharp.is_file() and not cfg.overwrite:
                existing += 1
            else:
                found.extend(p for p in (blur, sharp) if p.exists())
                jobs.append(_GoproJob(tuple(str(p) for p in window), str(blur), str(sharp), gamma))
    return jobs, len(jobs), existing, short


# ------------------------------------------------------------------------------------------------ run

#: The settings record in dst (:mod:`neurmap.utils.records`).
RECORD = "synthesize_settings.json"


def _record(src: Path, cfg: DictConfig) -> dict[str, Any]:
    """What shapes the pairs: src and the settings of the mode (not workers, on_error or overwrite)."""
    keep = ("mode", "seed", "recursive", cfg.mode)
    return {"src": str(src.resolve()), **{k: OmegaConf.to_container(cfg, resolve=True)[k] for k in keep}}


def _check_paths(src: Path, dst: Path) -> None:
    if not src.is_dir():
        what = "is not a folder" if src.exists() else "does not exist"
        raise FileNotFoundError(f"src={src} {what}")
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents:
        raise UsageError(f"dst={dst} is inside src={src}; the outputs would become sources. Choose another dst")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"dst={dst} exists and is not a folder")


def synthesize(
    src: str | Path, dst: str | Path, cfg: Mapping | DictConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Make the blurry/sharp pairs of ``cfg.mode`` from src into dst (see the module docstring).

    Args:
        src: folder of sharp images (kernel mode) or of video frames / frame folders (gopro mode).
        dst: output folder, created if needed; must not lie inside ``src``.
        cfg: settings merged over ``conf/synthesize.yaml`` (a full config or only some keys).
        progress: show a tqdm progress bar on stderr.

    Returns:
        Summary: ``mode``, ``written`` / ``existing`` (skipped because done) / ``failed`` items (an item is a
        pair; a failing source counts its pending items as failed), ``failed_files`` (one message per failed
        source or window), ``short_sequences`` (gopro: sequences with fewer than ``frames`` frames),
        ``dst`` and ``seconds``.

    Raises:
        UsageError: a bad setting, or dst inside src.
        FileNotFoundError: src is missing or holds no usable image.
        SynthesisError: two sources with one output name, or (``on_error=raise``) a failing source; the
            message names the file.
    """
    start = time.perf_counter()
    cfg = load_config(cfg=cfg)  # idempotent on a loaded config; completes and checks a partial one
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    _check_paths(src, dst)
    check_writable(dst, "dst")
    record_path, record = dst / RECORD, _record(src, cfg)
    check_record(record_path, record, what=f"the pairs in dst={dst}", overwrite=bool(cfg.overwrite))
    short: list[str] = []
    found: list[Path] = []
    if cfg.mode == "kernel":
        jobs, pending, existing = _kernel_jobs(src, dst, cfg, found)
    else:
        jobs, pending, existing, short = _gopro_jobs(src, dst, cfg, found)
    if found and read_record(record_path) is None and not cfg.overwrite:
        raise UsageError(
            f"dst={dst} holds {found[0]}, which synthesize did not write (no {RECORD}) and would replace; pass "
            "overwrite=true to replace it, or choose another dst"
        )
    dst.mkdir(parents=True, exist_ok=True)
    if jobs:
        write_record(record_path, record)  # first: a stopped run's partial items are known to be this run's

    from tqdm import tqdm

    written, failed, failures = 0, 0, []
    bar = tqdm(total=pending + existing, initial=existing, unit="pair", disable=not progress, dynamic_ncols=True)

    def collect(job: _KernelJob | _GoproJob, result: _Result) -> None:
        nonlocal written, failed
        items = len(job.indices) if isinstance(job, _KernelJob) else 1
        written += result.written
        bar.update(items)
        if result.error is not None:
            failed += items - result.written
            failures.append(result.error)
            if cfg.on_error == "raise":
                raise SynthesisError(result.error)

    threads = torch.get_num_threads()
    try:
        if cfg.workers == 1 or len(jobs) <= 1:
            # One thread, as in the workers: line_blur's tile-sized ops gain nothing from a second thread,
            # and a busy core stalls every op at the thread barrier (10x slower runs seen on shared CPUs).
            torch.set_num_threads(1)
            for job in jobs:
                collect(job, _run(job))
        else:
            context = multiprocessing.get_context("spawn")
            workers = min(cfg.workers, len(jobs))
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
                futures = {pool.submit(_run, job): job for job in jobs}
                try:
                    for future in as_completed(futures):
                        collect(futures[future], future.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return {
        "mode": cfg.mode,
        "written": written,
        "existing": existing,
        "failed": failed,
        "failed_files": failures,
        "short_sequences": short,
        "dst": str(dst),
        "seconds": time.perf_counter() - start,
    }


def print_summary(summary: Mapping[str, Any], prog: str) -> None:
    """Print what :func:`synthesize` returned as the command ``prog`` does: the sequences too short and the
    failed sources (the first few) on stderr, the counts on stdout."""
    for line in summary["short_sequences"]:
        print(f"{prog}: warning: sequence {line} is shorter than gopro.frames; skipped", file=sys.stderr)
    if summary["failed_files"]:
        shown = summary["failed_files"][:_SHOW_FAILED]
        more = len(summary["failed_files"]) - len(shown)
        print(f"{prog}: skipped {len(summary['failed_files'])} failed source(s):", file=sys.stderr)
        for message in shown:
            print(f"  {message}", file=sys.stderr)
        if more:
            print(f"  ... and {more} more", file=sys.stderr)
    print(
        f"{prog}: {summary['written']} written, {summary['existing']} already there, {summary['failed']} failed "
        f"-> {summary['dst']} ({summary['seconds']:.1f} s)"
    )
