"""The mini reproduction's results and report: read the collector's table of the evaluation sweep and the
per-image files, compute the context (numbers, tables, the verdicts of :mod:`.verdicts`) and render
``report.md.j2`` (Jinja2; all prose lives in the template), plus one figure.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurmap.experiments.mini.common import METHODS, PROG, ReproError, shown
from neurmap.experiments.mini.plan import EVAL_SET, MOTION_VARIANTS, Plan, duration
from neurmap.experiments.mini.verdicts import (
    PAPER,
    ablation_reading,
    motion_learning,
    paired_difference,
    share_of_paper,
    standing,
    target_verdicts,
)
from neurmap.utils.machine import machine

__all__ = ["COLUMNS", "Results", "context", "gather", "render", "render_figure"]

#: Metric columns of the table: (summary key, header, format).
COLUMNS = (
    ("psnr", "PSNR ↑", ".2f"),
    ("ssim_torchmetrics", "SSIM ↑", ".4f"),
    ("lpips", "LPIPS ↓", ".4f"),
    ("niqe", "NIQE ↓", ".3f"),
    ("motion_mse_authors", "motion MSE (authors ×20) ↓", ".2f"),
    ("motion_mse_full", "motion MSE (full, px²) ↓", ".2f"),
    ("motion_epe", "motion EPE (px) ↓", ".2f"),
    ("signal_cos/reblur", "signal: reblur", "+.2f"),
    ("signal_cos/reblur_true_motion", "signal: reblur, true motion", "+.2f"),
    ("signal_cos/sharp_prior", "signal: sharp prior", "+.2f"),
    ("signal_cos/natural", "signal: natural prior", "+.2f"),
)
#: Short names of the runs in sentences.
LABELS = {
    "neurmap": "NeurMAP",
    "net1": "Net1",
    "net2": "Net2",
    "net3": "Net3",
    "baseline": "supervised",
    "oracle_motion": "oracle motion",
    "ceiling": "ceiling",
}
TEMPLATE = "report.md.j2"


@dataclass
class Results:
    """What the runs produced: means and per-image rows by run key (``start``, a variant), the zero motion
    map's errors and the validation EPE curves (iteration, px; iteration -1 = the zero map)."""

    summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    zero_motion: dict[str, float] = field(default_factory=dict)
    motion_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def num(value: Any) -> float:
    """A table cell as a float (empty or missing: nan)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, spec: str, unit: str = "") -> str:
    """``value`` formatted by ``spec``, or an em dash when it is missing or nan (the template's ``f`` filter)."""
    value = num(value)
    return "—" if math.isnan(value) else f"{value:{spec}}{unit}"


def setting(plan: Plan, key: str) -> Any:
    """A value of the composed NeurMAP fine-tune config (so the report shows what actually ran)."""
    from omegaconf import OmegaConf

    from neurmap.config import compose
    from neurmap.experiments.mini.plan import train_overrides

    if "mini_neurmap" not in plan.configs:
        overrides = train_overrides(plan, "mini_neurmap", ["neurmap"], motion=True)
        plan.configs["mini_neurmap"] = compose(overrides, plan.work / ".compose")
    return OmegaConf.select(plan.configs["mini_neurmap"], key)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def gather(plan: Plan, eval_sweep: Path, fine_tune_sweeps: list[Path]) -> Results:
    """The collector's table of ``eval_sweep`` (``sweep_summary.csv``), each job's per-image rows (in the
    output folder its ``final_metrics.json`` names), the zero-motion reference and the EPE curves."""
    from neurmap.config import FINAL_METRICS, compose

    results = Results()
    key_of = {ckpt: key for key, ckpt in plan.ckpts.items()}
    prefix = f"test/{EVAL_SET}/"
    for row in _read_csv(eval_sweep / "sweep_summary.csv"):
        key = key_of.get(row.get("ckpt", ""))
        if key is None or row["status"] != "done":
            raise ReproError(f"{eval_sweep / 'sweep_summary.csv'}: job {row['job']} is {row['status']} ({row})")
        results.summaries[key] = {k[len(prefix) :]: num(v) for k, v in row.items() if k.startswith(prefix)}
        record = json.loads((eval_sweep / row["job"] / FINAL_METRICS).read_text())
        results.per_image[key] = _read_csv(Path(record["output_dir"]) / f"{EVAL_SET}_per_image.csv")
    missing = sorted(set(plan.ckpts) - set(results.summaries))
    if missing:
        raise ReproError(f"{eval_sweep / 'sweep_summary.csv'} has no row for {missing}")
    scale = compose(["ckpt=unused"], plan.work / ".compose", config_name="evaluate").metrics.authors_scale
    test_dir = plan.data_dir / "kernel_synth" / "test"
    results.zero_motion = zero_motion_reference(test_dir, float(setting(plan, "model.reblur.alpha")), float(scale))
    runs = {"motion_pretrain": Path(plan.motion_ckpt).parent.parent} if plan.motion_ckpt else {}
    runs |= {p.name.split("_", 1)[1].rsplit("-", 1)[0]: p for s in fine_tune_sweeps for p in s.glob("*_*-*")}
    for name, run_dir in runs.items():
        if name == "motion_pretrain" or name in MOTION_VARIANTS:
            results.motion_curves[name] = epe_curve(run_dir)
    return results


def zero_motion_reference(test_dir: Path, alpha: float, authors_scale: float) -> dict[str, float]:
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


def epe_curve(run_dir: Path, set_name: str = "mini_val") -> list[tuple[int, float]]:
    """(iteration, val motion EPE) of a run from its CSV log, plus the zero map's EPE as iteration -1."""
    rows: list[tuple[int, float]] = []
    zero = math.nan
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        for row in _read_csv(path):
            value = row.get(f"val/{set_name}/motion_epe")
            if value:
                rows.append((int(float(row["step"])), float(value)))
                zero = float(row.get(f"val/{set_name}/motion_epe_zero") or zero)
    return [(-1, zero), *rows] if rows else []


# ------------------------------------------------------------------------------------------------ tables


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(plan: Plan, results: Results, variants: list[str]) -> str:
    """Blurry input, start, each fine-tune and the zero-motion reference; Δ columns against the start."""
    start = results.summaries.get("start", {})
    start_label = (
        "released GoPro-trained DMPHN(1-2-4), as released"
        if plan.released
        else "baseline trained here from scratch (released weights absent)"
    )
    blurry = {k[len("input_") :]: v for k, v in start.items() if k.startswith("input_")}
    rows = [("blurry input", blurry, False), (start_label, start, False)]
    rows += [
        (METHODS[k], results.summaries.get(k, {}), True) for k in ("baseline", *variants, "ceiling") if k in METHODS
    ]
    header = ["method", *(c[1] for c in COLUMNS), "ΔPSNR vs start", "ΔLPIPS vs start"]
    lines = [_row(header), "|" + "---|" * len(header)]
    for label, row, delta in rows:
        cells = [fmt(row.get(key), spec) for key, _, spec in COLUMNS]
        dp = fmt(num(row.get("psnr")) - num(start.get("psnr")), "+.2f", " dB") if delta else "—"
        dl = fmt(num(row.get("lpips")) - num(start.get("lpips")), "+.4f") if delta else "—"
        lines.append(_row([label, *cells, dp, dl]))
    if results.zero_motion:
        cells = [fmt(results.zero_motion.get(key), spec) for key, _, spec in COLUMNS]
        lines.append(_row(["*reference: motion map of zero*", *cells, "—", "—"]))
    return "\n".join(lines)


def target_table(verdicts: list[dict[str, Any]]) -> str:
    names = {"start": "released / start network", "baseline": "supervised fine-tune"}
    lines = [
        "| NeurMAP − reference | metric | mean ± s.e. (per image) | ahead by > 2 s.e.? |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        spec, unit = ("+.2f", " dB") if v["metric"] == "psnr" else ("+.4f", "")
        cell = f"{fmt(v['mean'], spec)} ± {fmt(v['se'], spec[1:])}{unit} (n={v['n']})"
        lines.append(f"| {names[v['reference']]} | {v['metric'].upper()} | {cell} | {'yes' if v['met'] else 'no'} |")
    return "\n".join(lines)


def epe_table(curves: dict[str, list[tuple[int, float]]]) -> str:
    """Val motion EPE (px) by iteration for the runs with M."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return "(no validation logs with motion EPE: a logger was off)"
    steps = sorted({i for c in curves.values() for i, _ in c if i >= 0})
    lines = [_row(["run", *(f"it {i + 1}" for i in steps)]), "|---|" + "---|" * len(steps)]
    for name, curve in curves.items():
        by_step = dict(curve)
        lines.append(_row([name, *(fmt(by_step.get(i), ".2f") for i in steps)]))
    return "\n".join(lines)


def stage_table(plan: Plan, total: float) -> str:
    lines = ["| stage | wall time | note |", "|---|---|---|"]
    lines += [f"| {s.name} | {duration(s.seconds)} | {s.note} |" for s in plan.stages]
    lines.append(f"| **total** (including start-up and the report) | **{duration(total)}** | |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ figure


def render_figure(plan: Plan, path: Path) -> dict[str, str]:
    """One held-out test image through every run: top row blurry, each output, sharp; bottom row the
    ground-truth motion and each M's motion in flow colours (one colour scale). Returns the rows' labels."""
    from neurmap.config import backbone_node
    from neurmap.data.folders import EvalImages
    from neurmap.data.io import write_image
    from neurmap.data.layouts import kernel_synth
    from neurmap.nets.reblur import canonicalize_motion
    from neurmap.tasks.inference import load_networks
    from neurmap.utils.flow_vis import flow_to_color, make_grid

    sample = EvalImages(kernel_synth(plan.data_dir / "kernel_synth" / "test"))[0]
    blur = sample["blur"][None]
    images, labels, flows = [sample["blur"]], ["blurry"], {"ground truth": sample["motion"]}
    backbone = backbone_node(plan.backbone)
    with torch.no_grad():
        for key, ckpt in plan.ckpts.items():
            nets = load_networks(ckpt, backbone)
            out = nets.deblur(blur).clamp(0, 1)
            images.append(out[0])
            labels.append(key)
            if nets.motion is not None:
                mb, ms = canonicalize_motion(nets.motion(blur)), canonicalize_motion(nets.motion(out))
                flows[key] = ((mb - ms) if nets.relative_motion else mb)[0] * nets.alpha * nets.motion_scale
    images.append(sample["sharp"])
    labels.append("sharp")
    scale = max(float(f.norm(dim=0).max()) for f in flows.values())
    colours = [flow_to_color(f[None], max_magnitude=max(scale, 1e-3))[0] for f in flows.values()]
    bottom = colours + [torch.ones_like(images[0])] * (len(images) - len(colours))
    grid = make_grid([*images, *bottom], nrow=len(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, grid.permute(1, 2, 0).numpy())
    return {"file": path.name, "top": ", ".join(labels), "bottom": ", ".join(flows)}


# ----------------------------------------------------------------------------------------------- context


def _skimage_version() -> str:
    try:
        import skimage

        return skimage.__version__
    except ImportError:
        return "?"


def _gap(results: Results, key: str, ref: str, metric: str) -> float:
    return num(results.summaries.get(key, {}).get(metric)) - num(results.summaries.get(ref, {}).get(metric))


def context(plan: Plan, results: Results, figure: dict[str, str], total: float) -> dict[str, Any]:
    """Every value the template words: settings that ran, tables, differences and verdicts."""
    opts = plan.opts
    s = results.summaries
    start, neur = s.get("start", {}), s.get("neurmap", {})
    diff = {
        metric: paired_difference(results.per_image.get("neurmap", []), results.per_image.get("baseline", []), metric)
        for metric in ("psnr", "lpips")
    }
    verdicts = target_verdicts(results.per_image)
    iterations = int(setting(plan, "iterations"))
    with_m = [k for k in ("net2", "net3") if k in s]
    pretrain = [e for i, e in results.motion_curves.get("motion_pretrain", []) if i >= 0]
    pretrain_zero = [e for i, e in results.motion_curves.get("motion_pretrain", []) if i < 0]
    zero_epe = num(results.zero_motion.get("motion_epe"))
    epe = num(neur.get("motion_epe"))
    gain = {m: _gap(results, "neurmap", "start", m) for m in ("psnr", "lpips")}
    paper_lpips = PAPER["lpips_after"] - PAPER["lpips_before"]
    flow = plan.manifest.get("synthesize", {}).get("kernel", {}).get("flow", {})
    loads = [f"{v:.2f}" for v in plan.load if not math.isnan(v)]
    return {
        "prog": PROG,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "total": duration(total),
        "within_budget": total <= 60.0 * opts.budget_minutes,
        "budget_minutes": opts.budget_minutes,
        "opts": opts,
        "released": plan.released,
        "start_weights": shown(plan.start_weights),
        "start_name": "the released DMPHN" if plan.released else "the from-scratch baseline",
        "counts": plan.manifest.get("counts", {}),
        "flow": ", ".join(f"{k} {v:g}" for k, v in flow.items()) if flow else "?",
        "skimage_version": _skimage_version(),
        "machine": machine(),
        "loads": " at the start, ".join(loads) + " at the end" if len(loads) == 2 else "unknown",
        "backbone": setting(plan, "backbone.name"),
        "iterations": iterations,
        "crop": setting(plan, "data.paired.transform.crop_size"),
        "batch_paired": setting(plan, "data.batch_size_paired"),
        "batch_unpaired": setting(plan, "data.batch_size_unpaired"),
        "lr": setting(plan, "backbone.lr"),
        "loss": setting(plan, "loss.name"),
        "results_table": results_table(plan, results, list(opts.variants)),
        "target_table": target_table(verdicts),
        "verdicts": verdicts,
        "target_met": bool(verdicts) and all(v["met"] for v in verdicts),
        "targets_met": sum(v["met"] for v in verdicts),
        "epe_table": epe_table(results.motion_curves),
        "figure": figure,
        "complete": all(k in s for k in ("start", "baseline", "neurmap")),
        "diff": {m: {"mean": d[0], "se": d[1], "n": d[2]} for m, d in diff.items()},
        "standing": {
            "psnr": standing(*diff["psnr"], lower_is_better=False),
            "lpips": standing(*diff["lpips"], lower_is_better=True),
        },
        "start": start,
        "blurry": {k[len("input_") :]: v for k, v in start.items() if k.startswith("input_")},
        "gain": gain,
        "supervised_gain": {m: _gap(results, "baseline", "start", m) for m in ("psnr", "lpips")},
        "motion": {
            "epe": epe,
            "zero": zero_epe,
            "zero_known": not math.isnan(zero_epe),
            "reading": motion_learning(epe, zero_epe),
        },
        "niqe": {"start": num(start.get("niqe")), "neurmap": num(neur.get("niqe"))},
        "net1_gap": _gap(results, "net1", "baseline", "psnr") if "net1" in s else None,
        "motion_gaps": {LABELS[k]: _gap(results, k, "baseline", "psnr") for k in ["neurmap", *with_m]},
        "ablation": ablation_reading(
            _gap(results, "net1", "baseline", "psnr") if "net1" in s else math.nan,
            [_gap(results, k, "baseline", "psnr") for k in ["neurmap", *with_m]],
        ),
        "paper": PAPER | {"lpips_gain": paper_lpips},
        "share": {
            "psnr": share_of_paper(gain["psnr"], PAPER["psnr_gain"]),
            "lpips": share_of_paper(gain["lpips"], paper_lpips),
        },
        "bracket": {
            LABELS[k]: paired_difference(results.per_image[k], results.per_image.get("baseline", []), "psnr")
            for k in ("neurmap", "oracle_motion", "ceiling")
            if k in results.per_image
        },
        "motion_ckpt": shown(plan.motion_ckpt),
        "pretrain": {"first": pretrain[0], "best": min(pretrain), "last": pretrain[-1]} if pretrain else None,
        "pretrain_zero": pretrain_zero[0] if pretrain_zero else None,
        "command": shown(" ".join(["python", "-m", PROG, *opts.argv])),
        "stages": plan.stages,
        "stage_table": stage_table(plan, total),
    }


def render(values: dict[str, Any]) -> str:
    """``report.md.j2`` filled with ``values`` (a missing value is an error, not an empty string)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["f"] = fmt
    env.filters["paragraph"] = lambda text: " ".join(text.split()) + "\n"  # one line per paragraph
    env.filters["pct"] = lambda v: fmt(v, "+.0f" if abs(num(v)) >= 10 else "+.1f", " %")
    return env.get_template(TEMPLATE).render(**values)
