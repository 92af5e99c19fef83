"""Where does NeurMAP's unpaired signal point before fine-tuning? ``python -m lab.signal``.

For a start D (e.g. the released DMPHN) and one or more motion networks M (motion-pretraining checkpoints), on
crops of images with ground truth (the mini reproduction's held-out test family by default), it measures per
crop, with NeurMAP's own :meth:`~neurmap.systems.neurmap.NeurMAPSystem.signal`:

* ``signal_cos/reblur``: the cosine between D's gradient of the reblur term, with R fed the motion it receives
  in the method (M(B), or M(B) - M(D(B)) with ``model.relative_motion``, times ``model.motion_scale``), and D's
  gradient of the supervised loss; ``signal_cos/reblur_true_motion``: the same with the true motion;
* ``motion_epe`` / ``motion_epe_zero``: the end-point error of that motion and of a zero map (px);
* ``length_ratio``: mean |motion R receives| / mean |true motion|.

Means over crops, with the standard error, are printed as a Markdown table and written to ``--out`` (JSON).
``--fit-scale`` also picks, per M, the scale of R's motion that best explains the *unpaired training* blurry
images (``||B - R(D(B), s m)||^2``, no ground truth) and measures the signal with it. ``--fit-scale-synthetic
PHOTOS`` picks the scale that matches the mean length of the motion R receives to the true one on on-the-fly
blur of those photos (M's pretraining families, where the ground truth is known) and carries it over.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["fit_reblur_scale", "load_system", "measure", "summarize"]


def load_system(overrides: Sequence[str]) -> Any:
    """The NeurMAP system of ``python -m neurmap.train experiment=mini_neurmap <overrides>``, in eval mode."""
    from neurmap.config import compose, instantiate_system

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["experiment=mini_neurmap", *overrides], tmp)
        system = instantiate_system(cfg)  # D starts from model.deblur.pretrained
    return system.eval()


def _motion(system: Any, blurry: torch.Tensor, deblurred: torch.Tensor, scale: float) -> torch.Tensor:
    """The motion R receives in ``system``'s setting (relative or absolute), times ``scale`` (units of R)."""
    from neurmap.nets.motion import reblur_motion

    return reblur_motion(system.motion_net, blurry, deblurred, relative=system.relative_motion, scale=scale)


def _crops(h: int, w: int, size: int, per_image: int) -> list[tuple[int, int]]:
    """Up to ``per_image`` crop origins on an even grid (the centre crop when 1)."""
    side = max(1, math.ceil(math.sqrt(per_image)))
    ys = [round((h - size) * (i + 0.5) / side) for i in range(side)] if side > 1 else [(h - size) // 2]
    xs = [round((w - size) * (j + 0.5) / side) for j in range(side)] if side > 1 else [(w - size) // 2]
    return [(y, x) for y in ys for x in xs][:per_image]


def _records(root: str | Path, with_motion: bool = True) -> list[dict[str, Any]]:
    from neurmap.data.layouts import kernel_synth

    return kernel_synth(root, with_motion=with_motion)


def measure(system: Any, root: str | Path, crop: int, per_image: int) -> dict[str, list[float]]:
    """Per-crop signal cosines, motion errors and length ratio on the ``kernel_synth`` layout at ``root``."""
    from neurmap.data.io import read_image, read_mfmap
    from neurmap.metrics.motion import motion_epe

    rows: dict[str, list[float]] = {}
    for record in _records(root):
        blur, sharp, motion = read_image(record["blur"]), read_image(record["sharp"]), read_mfmap(record["motion"])
        for y, x in _crops(*blur.shape[-2:], crop, per_image):
            window = (slice(None), slice(y, y + crop), slice(x, x + crop))
            batch = {"blur": blur[window][None], "sharp": sharp[window][None], "motion": motion[window][None]}
            values = {k: float(v[0]) for k, v in system.signal(batch).items()}
            with torch.no_grad():
                b = batch["blur"]
                moved = _motion(system, b, system.deblur_net(b), system.motion_scale) * system.reblur.alpha
            truth = batch["motion"]
            values["motion_epe"] = float(motion_epe(moved, truth)[0])
            values["motion_epe_zero"] = float(motion_epe(torch.zeros_like(truth), truth)[0])
            values["length_ratio"] = float(moved.norm(dim=1).mean() / truth.norm(dim=1).mean().clamp_min(1e-6))
            for key, value in values.items():
                rows.setdefault(key, []).append(value)
    return rows


@torch.no_grad()
def fit_reblur_scale(system: Any, root: str | Path, crop: int, per_image: int, scales: Sequence[float]) -> float:
    """The scale s of R's motion that minimises ``||B - R(D(B), s m)||^2`` summed over crops of the blurry
    images at ``root`` (no ground truth is read: the unpaired training images qualify)."""
    from neurmap.data.io import read_image

    errors = dict.fromkeys(scales, 0.0)
    for record in _records(root, with_motion=False):
        blur = read_image(record["blur"])
        for y, x in _crops(*blur.shape[-2:], crop, per_image):
            b = blur[:, y : y + crop, x : x + crop][None]
            deblurred = system.deblur_net(b)
            motion = _motion(system, b, deblurred, 1.0)  # unscaled: the scales tried multiply it
            for s in scales:
                errors[s] += float((system.reblur(deblurred, s * motion) - b).pow(2).mean())
    return min(errors, key=errors.get)


@torch.no_grad()
def synthetic_scale(system: Any, photos: str | Path, crop: int, samples: int = 32) -> float:
    """Mean true length / mean length of the motion R receives, on on-the-fly blur of ``photos`` (the families of
    ``data=random_blur``, fixed samples): the length calibration measured where the ground truth is known."""
    from neurmap.synth.random_blur import RandomBlur

    data = RandomBlur(photos, samples, crop, (0.0, 40.0), {"linear": 1.0, "smooth": 1.0}, deterministic=True, seed=7)
    true = given = 0.0
    for i in range(len(data)):
        sample = data[i]
        b = sample["blur"][None]
        motion = _motion(system, b, system.deblur_net(b), 1.0)  # unscaled: the calibration is measured on it
        given += float((motion * system.reblur.alpha).norm(dim=1).mean())
        true += float(sample["motion"].norm(dim=0).mean())
    return true / max(given, 1e-6)


def summarize(rows: dict[str, list[float]]) -> dict[str, tuple[float, float, int]]:
    out = {}
    for key, values in rows.items():
        t = torch.tensor(values, dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
        out[key] = (float(t.mean()), se, len(values))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.signal", description=__doc__.split("\n")[0])
    parser.add_argument("--mini", default="logs/reproduce_mini/data", help="the mini reproduction's data folder")
    parser.add_argument("--split", default="test", help="kernel_synth split measured: test (held out) or val")
    parser.add_argument("--weights", required=True, help="start D: model.deblur.pretrained (released DMPHN folder)")
    parser.add_argument("--motion", action="append", default=[], help="M checkpoint (repeatable; 'none' = Xavier)")
    parser.add_argument("--scale", type=float, action="append", default=None, help="model.motion_scale (repeatable)")
    parser.add_argument(
        "--fit-scale", action="store_true", help="also the scale fitted on the unpaired training images"
    )
    parser.add_argument("--fit-scale-synthetic", default=None, metavar="PHOTOS", help="also the scale fitted on PHOTOS")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--crops-per-image", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--out", default=None, help="JSON file for the per-crop values and means")
    opts = parser.parse_args(argv)
    torch.manual_seed(0)
    mini = Path(opts.mini)
    results = []
    base = [f"paths.mini={mini}", f"model.deblur.pretrained={opts.weights}", "variant=net2", *opts.set]
    for ckpt in opts.motion or ["none"]:
        motion = [] if ckpt == "none" else [f"model.motion_pretrained='{ckpt}'"]
        scales = list(opts.scale or [1.0])
        if opts.fit_scale:
            system = load_system([*base, *motion])
            grid = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
            fitted = fit_reblur_scale(system, mini / "kernel_synth" / "train", opts.crop, 1, grid)
            print(f"{ckpt}: scale fitted on the unpaired training images = {fitted}", file=sys.stderr)
            scales.append(fitted)
        if opts.fit_scale_synthetic:
            fitted = round(synthetic_scale(load_system([*base, *motion]), opts.fit_scale_synthetic, opts.crop), 3)
            print(f"{ckpt}: scale fitted on synthetic blur = {fitted}", file=sys.stderr)
            scales.append(fitted)
        for scale in scales:
            system = load_system([*base, *motion, f"model.motion_scale={scale}"])
            rows = measure(system, mini / "kernel_synth" / opts.split, opts.crop, opts.crops_per_image)
            results.append({"motion": ckpt, "scale": scale, "summary": summarize(rows), "rows": rows})
            s = results[-1]["summary"]
            print(
                f"| {ckpt} | {scale:g} | "
                + " | ".join(f"{k} {m:+.3f} ± {e:.3f}" for k, (m, e, _) in sorted(s.items()))
                + " |",
                flush=True,
            )
    if opts.out:
        from neurmap.utils.files import write_json

        write_json(opts.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
