"""Deblurring of photos and folders: :func:`deblur` runs what ``python -m neurmap.deblur`` does.

:func:`plan` pairs every source image with its output path (a folder's tree is mirrored under output;
outputs that exist are skipped unless ``overwrite=true``). :func:`deblur_image` runs D, and, with
``motion=true``, M, tile by tile (:func:`neurmap.tasks.inference.tiled`, tile origins aligned to D's padding
multiple) under autocast in ``precision`` on a GPU (fp32 on a CPU). The motion map is the motion R received in
training (:func:`neurmap.nets.motion.reblur_motion`: M's canonicalized output, relative (M(B) - M(S_hat)) where the
checkpoint was trained so, times ``model.motion_scale``) in px (x ``alpha``); it is saved in
flow colours (``<name>_motion.png``) and, with ``compare=true``, next to the blurry and deblurred images
(``<name>_compare.jpg``). Settings: ``conf/deblur.yaml``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import cv2
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from neurmap.data.io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from neurmap.errors import UsageError
from neurmap.nets.motion import reblur_motion
from neurmap.nets.reblur import canonicalize_motion
from neurmap.releases import weights_path
from neurmap.tasks.inference import Networks, load_networks, n_tiles, tiled
from neurmap.utils.device import resolve_device
from neurmap.utils.flow_vis import flow_to_color, make_grid
from neurmap.utils.records import check_record, write_record

__all__ = ["PROG", "deblur", "deblur_image", "plan"]

#: The command's name, the prefix of its messages.
PROG = "neurmap.deblur"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise UsageError(f"precision must be one of {sorted(dtypes)}, got {precision!r}")
    if dtypes[precision] is None or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtypes[precision])


def plan(input_path: Path, output_path: Path, suffix: str, recursive: bool) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; destinations mirror the input tree under output.

    Raises:
        UsageError: output inside an input folder, an existing file as output of a folder, a destination that
            is its own source (never overwritten, even with ``overwrite=true``), or a folder that cannot be
            written.
        FileNotFoundError: input missing, or a folder without images.
    """
    input_path, output_path = input_path.expanduser().resolve(), output_path.expanduser().resolve()
    if not input_path.exists():
        raise FileNotFoundError(f"input={input_path} does not exist")
    if input_path.is_file():
        if output_path.suffix.lower() in IMAGE_EXTENSIONS and not output_path.is_dir():
            jobs = [(input_path, output_path)]
        else:
            jobs = [(input_path, output_path / f"{input_path.stem}{suffix}")]
    else:
        if output_path == input_path or input_path in output_path.parents:
            raise UsageError(f"output={output_path} is inside input={input_path}; choose a folder outside it")
        if output_path.is_file():
            raise UsageError(f"output={output_path} is a file; a folder input needs a folder output")
        files = list_images(input_path, "images to deblur", recursive=recursive)
        jobs = [(f, output_path / f.relative_to(input_path).with_suffix(suffix)) for f in files]
    sources: dict[Path, Path] = {}
    for src, dst in jobs:
        if dst == src:
            raise UsageError(f"output={dst} is the input image itself; choose another name (never overwritten)")
        if dst in sources:
            raise UsageError(f"input={src} and {sources[dst]} both map to the output {dst}; rename one of them")
        sources[dst] = src
    target = jobs[0][1].parent
    folder = next((p for p in (target, *target.parents) if p.exists()), target)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"output={output_path}: cannot write in {folder} (permission denied or not a folder)")
    return jobs


@torch.no_grad()
def deblur_image(
    nets: Networks,
    image: torch.Tensor,
    device: torch.device,
    *,
    tile: int | None,
    overlap: int,
    precision: str = "fp32",
    motion: bool = False,
    show_tiles: bool = False,
) -> dict[str, torch.Tensor]:
    """Deblur one (3, H, W) image in [0, 1]; returns ``deblurred`` and, with ``motion``, M's ``motion`` (px,
    (2, H, W)). ``tile``/``overlap``: tiled inference in px (``tile=None``: the whole image); ``precision``:
    fp32 | bf16 | fp16 autocast on a GPU. ``show_tiles`` draws a progress bar over D's tiles."""
    batch = image[None].to(device)
    align = nets.pad_multiple
    steps = n_tiles(*image.shape[-2:], tile, overlap, align)
    with (
        tqdm(total=steps, unit="tile", desc="tiles", leave=False, disable=not show_tiles or steps < 2) as bar,
        _autocast(device, precision),
    ):
        deblurred = tiled(nets.deblur, batch, tile, overlap, align, progress=lambda _: bar.update(1))
        out = {"deblurred": deblurred.clamp(0, 1)}
        if motion and nets.motion is not None:

            def tile_motion(x: torch.Tensor) -> torch.Tensor:
                # Tiles are canonicalised before blending, so that v and -v (the same blur) do not cancel in an
                # overlap; reblur_motion's own canonicalisation of the blend then changes nothing.
                return canonicalize_motion(nets.motion(x).float())

            def estimate(x: torch.Tensor) -> torch.Tensor:
                return tiled(tile_motion, x, tile, overlap, align, out_channels=2)

            settings = {"relative": nets.relative_motion, "scale": nets.motion_scale}
            out["motion"] = reblur_motion(estimate, batch, out["deblurred"], **settings) * nets.alpha
    return {k: v[0].float().cpu() for k, v in out.items()}


def _save(
    result: dict[str, torch.Tensor], blurry: torch.Tensor, dst: Path, *, bits: int, quality: int, compare: bool
) -> None:
    write_image(dst, result["deblurred"], bits=bits, quality=quality)
    colours = None
    if "motion" in result:
        colours = flow_to_color(result["motion"][None])[0]
        write_image(dst.with_name(f"{dst.stem}_motion.png"), colours)
    if compare:
        panels = [blurry, result["deblurred"]] + ([colours] if colours is not None else [])
        write_image(dst.with_name(f"{dst.stem}_compare.jpg"), make_grid(panels, nrow=len(panels), padding=8))


#: The settings record beside deblurred outputs (:mod:`neurmap.utils.records`).
RECORD = "deblur_settings.json"
#: The settings that shape a deblurred image: a re-run that differs in one of them is another run.
RECORD_KEYS = ("tile", "overlap", "precision", "motion", "compare", "suffix", "bits", "jpeg_quality")


def _record_path(input_path: Path, output_path: Path, jobs: list[tuple[Path, Path]]) -> Path | None:
    """The record of a folder output is in it; none for one image written to a file name of the user's choice
    (a record there would clutter a folder the command does not own)."""
    if input_path.is_dir():
        return output_path.expanduser().resolve() / RECORD
    if jobs[0][1] == output_path.expanduser().resolve():
        return None
    return jobs[0][1].parent / RECORD


def _record(cfg: DictConfig) -> dict[str, object]:
    """The checkpoint (resolved path, size, modification time) and the settings that shape the outputs."""
    ckpt = Path(str(cfg.ckpt)).expanduser().resolve()
    stat = ckpt.stat() if ckpt.is_file() else None
    return {
        "ckpt": str(ckpt),
        "ckpt_bytes": stat.st_size if stat else None,
        "ckpt_mtime_ns": stat.st_mtime_ns if stat else None,
        "backbone": OmegaConf.select(cfg, "model.deblur.name", default=None),
        **{key: OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key] for key in RECORD_KEYS},
    }


def deblur(input_path: str | Path, output_path: str | Path, cfg: DictConfig) -> dict[str, object]:
    """Deblur input into output with settings ``cfg`` (conf/deblur.yaml); returns a summary dict."""
    start = time.perf_counter()
    cfg.ckpt = weights_path(cfg.ckpt)  # ckpt=release:<name>: $NEURMAP_RELEASES/weights/<name>
    device = resolve_device(str(cfg.device))
    _autocast(device, str(cfg.precision))  # a bad precision stops here, before any network or image is loaded
    backbone = OmegaConf.select(cfg, "model.deblur")  # the conf/backbone node backbone=<name> puts there, or None
    if cfg.tile is not None and cfg.tile < 1:
        raise UsageError(f"tile={cfg.tile} must be a positive number of px, or null for whole images")
    if cfg.tile is not None and not 0 <= cfg.overlap < cfg.tile:
        raise UsageError(f"overlap={cfg.overlap} must be >= 0 and smaller than tile={cfg.tile}")
    if cfg.bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {cfg.bits}")
    if not str(cfg.suffix).startswith(".") or not cv2.haveImageWriter(f"x{cfg.suffix}"):
        raise UsageError(f"suffix={cfg.suffix}: not an image format OpenCV can write; use .png, .jpg, .tif or .webp")
    if cfg.bits == 16 and str(cfg.suffix).lower() not in tuple(cfg.suffixes_16bit):
        raise UsageError(
            f"bits=16 suffix={cfg.suffix}: {cfg.suffix} stores 8 bits; use suffix={' or '.join(cfg.suffixes_16bit)}"
        )
    if cfg.on_error not in ("fail", "skip"):
        raise UsageError(f"on_error={cfg.on_error}: expected fail (exit 1 when images were skipped) or skip (exit 0)")
    jobs = plan(Path(input_path), Path(output_path), str(cfg.suffix), bool(cfg.recursive))
    record_path = _record_path(Path(input_path), Path(output_path), jobs)
    record = _record(cfg)
    if record_path is not None and any(dst.exists() for _, dst in jobs):  # a resume, or another run's outputs
        check_record(record_path, record, what=f"the outputs in {record_path.parent}", overwrite=bool(cfg.overwrite))
    nets = load_networks(cfg.ckpt, backbone, motion=bool(cfg.motion))
    if cfg.motion and nets.motion is None:
        print(f"{PROG}: warning: {cfg.ckpt} has no motion network; motion=true is ignored", file=sys.stderr)
    nets.deblur.to(device)
    if nets.motion is not None:
        nets.motion.to(device)
    todo = [(s, d) for s, d in jobs if cfg.overwrite or not d.exists()]
    if todo and record_path is not None:
        write_record(record_path, record)
    failed: list[str] = []
    with tqdm(total=len(todo), unit="img", desc="deblur", disable=len(todo) < 2, file=sys.stderr) as bar:
        for src, dst in todo:
            try:
                image = read_image(src)
            except ImageReadError as err:
                failed.append(str(err))
                tqdm.write(f"{PROG}: skipped {err}", file=sys.stderr)
                bar.update(1)
                continue
            result = deblur_image(
                nets, image, device, tile=cfg.tile, overlap=cfg.overlap, precision=cfg.precision,
                motion=bool(cfg.motion), show_tiles=True,
            )  # fmt: skip
            try:
                _save(result, image, dst, bits=cfg.bits, quality=cfg.jpeg_quality, compare=bool(cfg.compare))
            except OSError as err:
                raise UsageError(f"output={dst}: cannot write ({err.strerror or err})") from None
            bar.update(1)
    return {
        "written": len(todo) - len(failed),
        "existing": len(jobs) - len(todo),
        "failed": failed,
        "seconds": time.perf_counter() - start,
        "device": str(device),
        "backbone": nets.backbone,
    }
