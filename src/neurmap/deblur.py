"""Deblur your own photos with a trained model.

``python -m neurmap.deblur INPUT OUTPUT ckpt=PATH [key=value ...]`` (also ``neurmap-deblur``)

* INPUT: one image, or a folder (searched recursively; the tree is mirrored under OUTPUT).
* OUTPUT: a folder, or, for one INPUT image, a file name with an image suffix.
* ``ckpt``: a neurmap checkpoint (it names its own backbone), or a backbone's release weights with
  ``backbone=<name>`` (e.g. ``backbone=dmphn_1_2_4 ckpt=weights/dmphn_1_2_4``).

Images of any size run in tiles (``tile=512 overlap=64``), so a 12-megapixel photo fits in a few GB of
memory on a CPU; ``tile=null`` runs whole images. ``motion=true`` also saves M's motion map in flow colours
and ``compare=true`` a side-by-side view. Settings and their defaults: ``conf/deblur/default.yaml``.
Unreadable images are reported and skipped; existing outputs are skipped unless ``overwrite=true``, so a
stopped run resumes. Exit status: 0 done, 1 some images failed, 2 bad arguments.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from neurmap.cli import UsageError, backbone_config, fail, load_settings, parser, resolve_device
from neurmap.data.io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from neurmap.inference import CheckpointError, Networks, load_networks, n_tiles, tiled
from neurmap.nets.reblur import canonicalize_motion
from neurmap.utils.flow_vis import flow_to_color, make_grid

__all__ = ["deblur_image", "main", "plan", "run"]

_PROG = "neurmap.deblur"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise UsageError(f"precision must be one of {sorted(dtypes)}, got {precision!r}")
    if dtypes[precision] is None or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtypes[precision])


def plan(input_path: Path, output_path: Path, suffix: str, recursive: bool) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; destinations mirror the input tree under OUTPUT.

    Raises:
        UsageError: OUTPUT inside an INPUT folder, or a bad output name for a single image.
        FileNotFoundError: INPUT missing, or a folder without images.
    """
    input_path, output_path = input_path.expanduser().resolve(), output_path.expanduser().resolve()
    if not input_path.exists():
        raise FileNotFoundError(f"INPUT {input_path} does not exist")
    if input_path.is_file():
        if output_path.suffix.lower() in IMAGE_EXTENSIONS:
            return [(input_path, output_path)]
        return [(input_path, output_path / f"{input_path.stem}{suffix}")]
    if output_path == input_path or input_path in output_path.parents:
        raise UsageError(f"OUTPUT {output_path} is inside INPUT {input_path}; choose a folder outside it")
    files = list_images(input_path, "images to deblur", recursive=recursive)
    return [(f, output_path / f.relative_to(input_path).with_suffix(suffix)) for f in files]


@torch.no_grad()
def deblur_image(
    nets: Networks, image: torch.Tensor, cfg: DictConfig, device: torch.device, show_tiles: bool = False
) -> dict[str, torch.Tensor]:
    """Deblur one (3, H, W) image in [0, 1]; returns ``deblurred`` and, if asked, ``motion`` (px, (2, H, W)).

    ``show_tiles`` draws a progress bar over D's tiles (useful for one large photo on a CPU).
    """
    batch = image[None].to(device)
    align = nets.pad_multiple
    steps = n_tiles(*image.shape[-2:], cfg.tile, cfg.overlap, align)
    with (
        tqdm(total=steps, unit="tile", desc="tiles", leave=False, disable=not show_tiles or steps < 2) as bar,
        _autocast(device, cfg.precision),
    ):
        deblurred = tiled(nets.deblur, batch, cfg.tile, cfg.overlap, align, progress=lambda _: bar.update(1))
        out = {"deblurred": deblurred.clamp(0, 1)}
        if cfg.motion and nets.motion is not None:

            def motion(x: torch.Tensor) -> torch.Tensor:
                return canonicalize_motion(nets.motion(x).float())

            m_blur = tiled(motion, batch, cfg.tile, cfg.overlap, align, out_channels=2)
            if nets.relative_motion:
                m_blur = m_blur - tiled(motion, out["deblurred"], cfg.tile, cfg.overlap, align, out_channels=2)
            out["motion"] = m_blur * nets.alpha
    return {k: v[0].float().cpu() for k, v in out.items()}


def _save(result: dict[str, torch.Tensor], blurry: torch.Tensor, dst: Path, cfg: DictConfig) -> None:
    write_image(dst, result["deblurred"], bits=cfg.bits, quality=cfg.jpeg_quality)
    colours = None
    if "motion" in result:
        colours = flow_to_color(result["motion"][None])[0]
        write_image(dst.with_name(f"{dst.stem}_motion.png"), colours)
    if cfg.compare:
        panels = [blurry, result["deblurred"]] + ([colours] if colours is not None else [])
        write_image(dst.with_name(f"{dst.stem}_compare.jpg"), make_grid(panels, nrow=len(panels), padding=8))


def run(input_path: str | Path, output_path: str | Path, cfg: DictConfig) -> dict[str, object]:
    """Deblur INPUT into OUTPUT with settings ``cfg`` (conf/deblur/default.yaml); returns a summary dict."""
    start = time.perf_counter()
    device = resolve_device(str(cfg.device))
    backbone = backbone_config(cfg.backbone)
    if cfg.tile is not None and not 0 <= cfg.overlap < cfg.tile:
        raise UsageError(f"overlap={cfg.overlap} must be >= 0 and smaller than tile={cfg.tile}")
    if cfg.bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {cfg.bits}")
    jobs = plan(Path(input_path), Path(output_path), str(cfg.suffix), bool(cfg.recursive))
    nets = load_networks(cfg.ckpt, backbone, motion=bool(cfg.motion))
    if cfg.motion and nets.motion is None:
        print(f"{_PROG}: warning: {cfg.ckpt} has no motion network; motion=true is ignored", file=sys.stderr)
    nets.deblur.to(device)
    if nets.motion is not None:
        nets.motion.to(device)
    todo = [(s, d) for s, d in jobs if cfg.overwrite or not d.exists()]
    failed: list[str] = []
    with tqdm(total=len(todo), unit="img", desc="deblur", disable=len(todo) < 2, file=sys.stderr) as bar:
        for src, dst in todo:
            try:
                image = read_image(src)
            except ImageReadError as err:
                failed.append(str(err))
                tqdm.write(f"{_PROG}: skipped {err}", file=sys.stderr)
                bar.update(1)
                continue
            result = deblur_image(nets, image, cfg, device, show_tiles=True)
            _save(result, image, dst, cfg)
            bar.update(1)
    return {
        "written": len(todo) - len(failed),
        "existing": len(jobs) - len(todo),
        "failed": failed,
        "seconds": time.perf_counter() - start,
        "device": str(device),
        "backbone": nets.backbone,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status (0 done, 1 some images failed, 2 bad arguments)."""
    cli = parser(
        _PROG, "python -m neurmap.deblur [-h] INPUT OUTPUT ckpt=PATH [key=value ...]", __doc__, "deblur/default"
    )
    cli.add_argument("input", metavar="INPUT", help="an image or a folder of images")
    cli.add_argument("output", metavar="OUTPUT", help="output folder (or file name for one image)")
    cli.add_argument("overrides", metavar="key=value", nargs="*", help="settings, see below")
    args = cli.parse_args(argv)
    try:
        cfg = load_settings("deblur/default", args.overrides, required=("ckpt",))
        summary = run(args.input, args.output, cfg)
    except (UsageError, CheckpointError, FileNotFoundError, ValueError) as err:
        return fail(_PROG, str(err))
    print(
        f"{_PROG}: {summary['written']} deblurred, {summary['existing']} already there, "
        f"{len(summary['failed'])} failed -> {args.output} ({summary['backbone']}, {summary['device']}, "
        f"{summary['seconds']:.1f} s)"
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
