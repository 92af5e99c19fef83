"""Evaluation with the paper's metrics: :func:`evaluate` runs what ``python -m neurmap.evaluate`` does.

The settings are ``conf/evaluate.yaml`` composed by Hydra (:mod:`neurmap.evaluate`). D (and M) come from
:func:`neurmap.tasks.inference.load_networks`; every image of the chosen ``test`` (or ``val``) sets runs whole, one
at a time (``tile=N`` runs very large ones in tiles, :func:`neurmap.tasks.inference.tiled`). Per image (columns of
``<set>_per_image.csv``), for the deblurred output and, as ``input_*``, for the blurry input itself:

* ``psnr`` and ``ssim_<convention>`` (:mod:`neurmap.metrics.fidelity`; ``metrics.ssim`` picks the
  convention). On sets whose protocol is ``realblur`` (``protocol=auto``: sets named ``realblur*``), both are
  taken RealBlur's way: intensity matching, ECC homography alignment to the ground truth and a validity mask
  (an ECC failure compares unaligned, with one warning);
* ``lpips`` (AlexNet, v0.1, real weights) and ``niqe`` (no reference; MATLAB pristine parameters). When their
  files are missing, one line says how to get them and the other metrics still run;
* on sets with ground-truth motion (kernel-synthesized ``mfmap``) and checkpoints with M:
  ``motion_mse_authors`` (the authors' x20 protocol), ``motion_mse_full`` (x alpha, consistent with Gong's
  full-length flows) and ``motion_epe`` (px), of the motion R receives in training (relative or absolute,
  times ``model.motion_scale``: :func:`neurmap.nets.motion.reblur_motion`); see :mod:`neurmap.metrics.motion`.
  On such sets, any checkpoint:
  ``motion_epe_zero``, the end-point error of a motion map of zero (an M that learned nothing);
* with ``metrics.signal=true``, on sets with sharp images and NeurMAP checkpoints: ``signal_cos/<term>``, the
  cosine between D's gradient of each of its training terms and of the supervised loss, on the centre crop of
  ``metrics.signal_crop`` px (:meth:`neurmap.systems.neurmap.NeurMAPSystem.signal`).

:func:`output_dir` places the outputs; ``summary.csv`` / ``summary.md`` hold the means per set (NaNs left
out), and the Hydra run folder gets :func:`final_metrics` as ``final_metrics.json``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from tqdm import tqdm

from neurmap.config import FINAL_METRICS
from neurmap.data.io import ImageReadError, data_roots, missing_roots, write_image
from neurmap.errors import UsageError
from neurmap.metrics import LPIPS, MetricUnavailable, align_realblur, load_niqe_params, niqe_score, psnr, ssim
from neurmap.metrics.fidelity import psnr_masked, ssim_masked
from neurmap.metrics.motion import motion_epe, motion_errors
from neurmap.nets.motion import reblur_motion
from neurmap.releases import weights_path
from neurmap.tasks.inference import Networks, load_networks, tiled
from neurmap.utils.device import resolve_device
from neurmap.utils.files import atomic_write, write_json
from neurmap.utils.records import check_record, check_writable, read_record, write_record
from neurmap.utils.tables import to_markdown, write_csv

__all__ = ["PROG", "Row", "evaluate", "final_metrics", "output_dir"]

#: The command's name, the prefix of its messages.
PROG = "neurmap.evaluate"
Row = dict[str, Any]


#: The settings record beside an evaluation's outputs (:mod:`neurmap.utils.records`).
RECORD = "eval_settings.json"


def output_dir(cfg: DictConfig, data_name: str) -> Path:
    """``cfg.output_dir``, else ``<run>/eval/<data>-<split>`` for a training run's ``<run>/checkpoints/x.ckpt``,
    else ``<log_dir>/evaluate/<ckpt name>/<data>-<split>`` (release weights, or a checkpoint outside a run:
    never beside the weights)."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    ckpt = Path(cfg.ckpt).expanduser().resolve()
    leaf = f"{data_name}-{cfg.split}"
    if ckpt.is_file() and ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "eval" / (leaf if ckpt.stem == "last" else f"{leaf}-{ckpt.stem}")
    return Path(cfg.paths.log_dir) / "evaluate" / (ckpt.name if ckpt.is_dir() else ckpt.stem) / leaf


def _record(cfg: DictConfig, data_name: str, names: list[str], sets: DictConfig) -> dict[str, Any]:
    """What shapes an evaluation's numbers: the checkpoint, the data (choice, split, each set's resolved
    config with its roots) and the metric settings."""
    return {
        "ckpt": str(Path(cfg.ckpt).expanduser().resolve()),
        "backbone": OmegaConf.select(cfg, "model.deblur.name", default=None),
        "data": data_name,
        "split": cfg.split,
        "sets": {n: OmegaConf.to_container(sets[n], resolve=True) for n in names},
        "protocol": cfg.protocol,
        "tile": cfg.tile,
        "overlap": cfg.overlap,
        "metrics": OmegaConf.to_container(cfg.metrics, resolve=True),
    }


class _Metrics:
    """The configured metrics, with the ones whose files are missing dropped (one line each)."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.ssim_name = f"ssim_{cfg.ssim}"
        self.lpips = self.niqe = None
        self.notes: list[str] = []
        if cfg.lpips:
            try:
                self.lpips = LPIPS.from_pretrained(cfg.lpips_weights).to(device)
            except MetricUnavailable as err:
                self.notes.append(f"LPIPS skipped: {err}")
        if cfg.niqe:
            try:
                self.niqe = load_niqe_params(cfg.niqe_params)
            except MetricUnavailable as err:
                self.notes.append(f"NIQE skipped: {err}")
        self._warned: set[str] = set()

    def _safe(self, name: str, fn: Callable[[], float], image: str) -> float:
        try:
            return float(fn())
        except (ValueError, RuntimeError) as err:  # e.g. NIQE on an image smaller than its 96 px blocks
            if name not in self._warned:
                tqdm.write(
                    f"{PROG}: warning: {name} is nan for {image} (and silently for later failures): {err}",
                    file=sys.stderr,
                )
                self._warned.add(name)
            return math.nan

    def image(self, output: torch.Tensor, sharp: torch.Tensor | None, protocol: str, name: str, prefix: str) -> Row:
        """Metrics of one (1, 3, H, W) image in [0, 1] (``prefix`` = "" for the output, "input_" for B)."""
        row: Row = {}
        if sharp is not None:
            if protocol == "realblur":
                aligned = self._safe_align(output, sharp, name)
                pred, target, mask = aligned
                row["psnr"] = psnr_masked(pred, target, mask)
                row[self.ssim_name] = ssim_masked(pred, target, mask)
                pair = (_tensor(pred, output.device), _tensor(target, output.device))
            else:
                row["psnr"] = float(psnr(output, sharp))
                row[self.ssim_name] = float(ssim(output, sharp, self.cfg.ssim))
                pair = (output, sharp)
            if self.lpips is not None:
                row["lpips"] = float(self.lpips(*pair))
        if self.niqe is not None:
            row["niqe"] = self._safe(
                "niqe", lambda: niqe_score(output[0].cpu(), self.niqe, self.cfg.niqe_channel), name
            )
        return {f"{prefix}{k}": v for k, v in row.items()}

    def _safe_align(self, output: torch.Tensor, sharp: torch.Tensor, name: str) -> tuple:
        try:
            return align_realblur(output[0].cpu(), sharp[0].cpu())
        except RuntimeError as err:  # ECC did not converge: compare unaligned, and say so
            if "ecc" not in self._warned:
                tqdm.write(
                    f"{PROG}: warning: ECC alignment failed on {name}, compared unaligned: {err}", file=sys.stderr
                )
                self._warned.add("ecc")
            hwc = sharp[0].permute(1, 2, 0).cpu().numpy()
            return output[0].permute(1, 2, 0).cpu().numpy(), hwc, np.ones_like(hwc)


def _tensor(hwc: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(2, 0, 1)[None].float().to(device)


@torch.no_grad()
def _evaluate_set(
    name: str,
    dataset,
    nets: Networks,
    metrics: _Metrics,
    cfg: DictConfig,
    device: torch.device,
    images: Path | None,
    system: Any = None,
) -> tuple[list[Row], list[str]]:
    protocol = cfg.protocol if cfg.protocol != "auto" else ("realblur" if name.startswith("realblur") else "plain")
    rows: list[Row] = []
    failed: list[str] = []
    for index in tqdm(range(len(dataset)), desc=name, unit="img", file=sys.stderr, disable=not cfg.progress):
        try:
            sample = dataset[index]
        except ImageReadError as err:
            failed.append(str(err))
            tqdm.write(f"{PROG}: skipped {err}", file=sys.stderr)
            continue
        blur = sample["blur"][None].to(device)
        sharp = sample["sharp"][None].to(device) if "sharp" in sample else None
        deblurred = tiled(nets.deblur, blur, cfg.tile, cfg.overlap, nets.pad_multiple).clamp(0, 1)
        row: Row = {"name": sample["name"], "protocol": protocol}
        row |= metrics.image(deblurred, sharp, protocol, sample["name"], "")
        if cfg.metrics.input:
            row |= metrics.image(blur, sharp, protocol, sample["name"], "input_")
        if "motion" in sample and nets.motion is not None and cfg.metrics.motion:
            settings = {"relative": nets.relative_motion, "scale": nets.motion_scale}
            motion = reblur_motion(nets.motion, blur, deblurred, **settings)
            errors = motion_errors(motion, sample["motion"][None].to(device), nets.alpha, cfg.metrics.authors_scale)
            row |= {k: float(v) for k, v in errors.items()}
        if "motion" in sample and cfg.metrics.motion:  # the reference: an M that learned nothing
            truth = sample["motion"][None]
            row["motion_epe_zero"] = float(motion_epe(torch.zeros_like(truth), truth)[0])
        if system is not None and sharp is not None:
            row |= _signal(system, sample, int(cfg.metrics.signal_crop), device)
        rows.append(row)
        if images is not None:
            write_image(images / name / f"{sample['name']}.png", deblurred[0])
    return rows, failed


def _signal(system: Any, sample: dict[str, Any], crop: int, device: torch.device) -> Row:
    """Signal cosines of one image's centre crop (the whole image when it is smaller)."""
    h, w = sample["blur"].shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    keys = [k for k in ("blur", "sharp", "motion") if k in sample]
    batch = {k: sample[k][None, :, y : y + ch, x : x + cw].to(device) for k in keys}
    return {k: float(v[0]) for k, v in system.signal(batch).items()}


def _summary(name: str, rows: list[Row], failed: int) -> Row:
    summary: Row = {"set": name, "protocol": rows[0]["protocol"] if rows else "", "images": len(rows), "failed": failed}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows if isinstance(r.get(key), float) and not math.isnan(r[key])]
        if values and key not in ("name", "protocol"):
            summary[key] = sum(values) / len(values)
    return summary


def evaluate(cfg: DictConfig) -> list[Row]:
    """Run the evaluation described by ``cfg`` (conf/evaluate.yaml); returns one summary row per set."""
    start = time.perf_counter()
    try:
        cfg.ckpt = ckpt = weights_path(cfg.ckpt)  # ckpt=release:<name>: $NEURMAP_RELEASES/weights/<name>
    except MissingMandatoryValue:
        raise UsageError(
            "ckpt=PATH is required (a neurmap .ckpt, or release weights with backbone=<name>, e.g. "
            "ckpt=release:dmphn_1_2_4 backbone=dmphn_1_2_4)"
        ) from None
    if cfg.split not in ("val", "test"):
        raise UsageError(f"split must be val or test, got {cfg.split!r}")
    if cfg.on_error not in ("fail", "skip"):
        raise UsageError(f"on_error={cfg.on_error}: expected fail (exit 1 when images were skipped) or skip (exit 0)")
    for key, low in (("tile", 1), ("overlap", 0)):
        value = cfg[key]
        if (value is not None or key == "overlap") and (
            not isinstance(value, int) or isinstance(value, bool) or value < low
        ):
            raise UsageError(f"{key}={value}: expected an integer >= {low} (px){' or null' if key == 'tile' else ''}")
    device = resolve_device(str(cfg.device))
    sets = cfg.data.get(cfg.split) or {}
    names = list(cfg.sets) if cfg.sets else list(sets)
    unknown = [n for n in names if n not in sets]
    if unknown or not names:
        raise UsageError(f"sets {unknown or names} not in data.{cfg.split}; it has {list(sets)}")
    data_name = HydraConfig.get().runtime.choices.get("data", "data") if HydraConfig.initialized() else "data"
    out = output_dir(cfg, data_name)
    record = _record(cfg, data_name, names, sets)
    # before any work: a folder that cannot be written, or that holds another evaluation's results, is one line
    missing = missing_roots(record["sets"])
    if missing:
        raise UsageError(
            f"data={data_name}: {len(missing)} data folder(s) do not exist: {', '.join(missing)} (set NEURMAP_DATA, "
            "or paths.<dataset>=<folder>; see README 'Data')"
        )
    check_writable(out, "output_dir")
    check_record(out / RECORD, record, what=f"the results in output_dir={out}", overwrite=bool(cfg.overwrite))
    if read_record(out / RECORD) is None and not cfg.overwrite and any(out.glob("*_per_image.csv")):
        raise UsageError(
            f"output_dir={out} holds results without {RECORD} (another evaluation's); pass overwrite=true to "
            "replace them, or choose another output_dir"
        )
    nets = load_networks(ckpt, OmegaConf.select(cfg, "model.deblur"), motion=bool(cfg.metrics.motion))
    nets.deblur.to(device)
    if nets.motion is not None:
        nets.motion.to(device)
    system = None
    target = str(nets.config.get("model", {}).get("_target_", "")) if nets.config is not None else ""
    if cfg.metrics.signal and target.endswith("NeurMAPSystem"):
        system = nets.system().to(device)
    metrics = _Metrics(cfg.metrics, device)
    write_record(out / RECORD, record)  # first: a stopped run's partial results are known to be this run's
    for note in metrics.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    summaries = []
    for name in names:
        node = sets[name]
        extra = {"on_error": "raise"} if "on_error" in node else {}  # we skip unreadable files ourselves
        dataset = instantiate(node, **extra)()
        images = out / "images" if cfg.save_images else None
        rows, failed = _evaluate_set(name, dataset, nets, metrics, cfg, device, images, system)
        write_csv(out / f"{name}_per_image.csv", rows)
        summaries.append(_summary(name, rows, len(failed)))
    write_csv(out / "summary.csv", summaries)
    header = f"# {nets.backbone} on data={data_name} ({cfg.split}), checkpoint {ckpt}"
    scored = [f"- {name}: {', '.join(data_roots(record['sets'][name])) or 'built in (no files)'}" for name in names]
    table = f"{header}\n\nData scored (set: roots):\n\n" + "\n".join(scored) + f"\n\n{to_markdown(summaries)}"
    atomic_write(out / "summary.md", table)
    print(table)
    if HydraConfig.initialized():
        run_record = Path(HydraConfig.get().runtime.output_dir) / FINAL_METRICS
        write_json(run_record, final_metrics(summaries, cfg.split, str(ckpt), out))
    print(f"{PROG}: wrote {out} ({time.perf_counter() - start:.1f} s, {device})")
    return summaries


def final_metrics(summaries: list[Row], split: str, ckpt: str, out: Path) -> dict[str, Any]:
    """The run's machine-readable record (what ``neurmap.collect`` reads): ``<split>/<set>/<metric>`` means."""
    metrics = {
        f"{split}/{row['set']}/{key}": value
        for row in summaries
        for key, value in row.items()
        if isinstance(value, float) and key not in ("set", "protocol")
    }
    return {"ckpt": ckpt, "output_dir": str(out), "metrics": metrics}
