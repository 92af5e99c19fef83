"""The mini reproduction's report: read the collector's table of the evaluation sweep and the per-image files,
judge them with pure functions (:func:`paired_difference`, :func:`standing`, :func:`target_verdicts`,
:func:`oracle_share`, :func:`motion_learning`), and render ``report.md.j2`` (Jinja2; the prose lives in the
template) plus two figures: one test image through every run, and PSNR against LPIPS for every run."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lab.mini.common import PROG, ReproError, shown
from lab.mini.run import EVAL_SET, Run, Stage, duration, train_overrides
from neurmap.utils.files import atomic_write
from neurmap.utils.machine import machine
from neurmap.utils.tables import to_markdown

__all__ = [
    "motion_learning",
    "oracle_share",
    "paired_difference",
    "render",
    "source_curve",
    "standing",
    "target_verdicts",
    "write_report",
]

#: Rows of the results table: run key -> label.
METHODS = {
    "released": "released GoPro-trained DMPHN(1-2-4)",
    "baseline": "supervised fine-tune (paired only)",
    "neurmap": "NeurMAP (natural-image discriminator)",
    "neurmap_frozen_m": "NeurMAP with M frozen after pretraining",
    "net1": "Net1 (no M/R, sharp/blurry discriminator)",
    "net2": "Net2 (M + R, no discriminator)",
    "net3": "Net3 (M + R, sharp-image discriminator)",
    "oracle_motion": "*ablation:* NeurMAP with oracle motion (R gets the true motion)",
    "ceiling": "*ceiling:* supervised on the test family's own pairs (unavailable to a real user)",
}
#: Metric columns of the table: (summary key, header, format).
COLUMNS = (
    ("psnr", "PSNR ↑", ".2f"),
    ("ssim_torchmetrics", "SSIM ↑", ".4f"),
    ("lpips", "LPIPS ↓", ".4f"),
    ("niqe", "NIQE ↓", ".3f"),
    ("motion_epe", "motion EPE (px) ↓", ".2f"),
    ("motion_length_ratio", "length ratio", ".2f"),
    ("signal_cos/unpaired", "signal: unpaired (weighted sum)", "+.2f"),
    ("signal_cos/reblur", "signal: reblur", "+.2f"),
    ("signal_cos/reblur_true_motion", "signal: reblur, true motion", "+.2f"),
    ("signal_cos/sharp_prior", "signal: sharp prior", "+.2f"),
    ("signal_cos/natural", "signal: natural prior", "+.2f"),
)
#: The bed can show unpaired value when the oracle is ahead of the supervised arm by at least this (dB).
ORACLE_MARGIN = 0.3
#: NeurMAP's target share of the oracle's PSNR gain over the supervised arm.
TARGET_SHARE = 0.5
#: The paper's DMPHN row on kernel-synthesized (unseen) blur, and the authors' training scale.
PAPER = {"psnr_gain": 0.93, "lpips_before": 0.236, "lpips_after": 0.124, "iterations": 210_000, "crop": 256}
DELTAS = (("psnr", "+.2f"), ("lpips", "+.4f"))
PerImage = Sequence[Mapping[str, str]]


# ---------------------------------------------------------------------------------------------- verdicts


def paired_difference(rows_a: PerImage, rows_b: PerImage, key: str) -> tuple[float, float, int]:
    """Mean and standard error of the per-image difference ``a - b`` of metric ``key`` over the images (``name``)
    both have a finite value for, and their count."""
    by_name = {r["name"]: r for r in rows_a}
    pairs = [(num(by_name.get(r["name"], {}).get(key)), num(r.get(key))) for r in rows_b]
    diffs = [x - y for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
    if not diffs:
        return math.nan, math.nan, 0
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), sem, len(diffs)


def standing(mean: float, se: float, n: int, lower_is_better: bool) -> str:
    """``ahead`` or ``behind`` when the difference points that way by more than twice its standard error,
    ``level`` within it (noise), ``unknown`` without a standard error."""
    if n < 2 or math.isnan(mean) or math.isnan(se):
        return "unknown"
    ahead = -mean if lower_is_better else mean
    return "ahead" if ahead > 2 * se else "behind" if -ahead > 2 * se else "level"


def target_verdicts(per_image: Mapping[str, PerImage], method: str = "neurmap") -> list[dict[str, Any]]:
    """For each reference (``start``, the supervised ``baseline``) and metric (PSNR up, LPIPS down): the mean and
    standard error of the per-image ``method`` - reference differences, and whether ``method`` is ahead by more
    than twice the standard error. ``per_image`` maps a run's key to its rows."""
    out = []
    for ref in ("start", "baseline"):
        for key, lower in (("psnr", False), ("lpips", True)):
            mean, se, n = paired_difference(per_image.get(method, []), per_image.get(ref, []), key)
            out.append({"reference": ref, "metric": key, "mean": mean, "se": se, "n": n,
                        "met": standing(mean, se, n, lower) == "ahead"})  # fmt: skip
    return out


def oracle_share(method: float, oracle: float) -> float:
    """The share of the oracle's gain over the supervised arm that a method recovers (both as differences from
    the supervised arm); NaN when the oracle gains nothing."""
    return method / oracle if oracle > 0 and not math.isnan(method) else math.nan


def source_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """The source stage's validation curve from its CSV log: iteration, paired-val PSNR, target-val PSNR (none
    without the log: a run with ``logger=none``, or a start from ``source_ckpt``)."""
    rows: list[dict[str, float]] = []
    for row in _csv(metrics_csv) if metrics_csv.is_file() else []:
        psnr = num(row.get("val/paired_val/psnr"))
        if not math.isnan(psnr):
            rows.append({"iteration": int(num(row["step"])) + 1, "paired_val": psnr,
                         "target_val": num(row.get("val/mini_val/psnr"))})  # fmt: skip
    return rows


def motion_learning(epe: float, zero_epe: float) -> str | None:
    """M's end-point error against a motion map of zero: ``learned`` (below 80 % of the zero map's), ``partial``
    (below 95 %), ``none``; None when either is unknown."""
    if math.isnan(epe) or math.isnan(zero_epe) or zero_epe <= 0:
        return None
    return "learned" if epe < 0.8 * zero_epe else "partial" if epe < 0.95 * zero_epe else "none"


# ------------------------------------------------------------------------------------------------ results


def num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, spec: str, unit: str = "") -> str:
    """``value`` formatted by ``spec``, or an em dash when it is missing (the template's ``f`` filter)."""
    value = num(value)
    return "—" if math.isnan(value) else f"{value:{spec}}{unit}"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def gather(run: Run) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, str]]]]:
    """Means (from the collector's ``sweep_summary.csv`` of the evaluation sweep) and per-image rows (from each
    job's output folder) by run key."""
    from neurmap.config import FINAL_METRICS

    sweep, prefix = run.work / "sweeps" / "evaluate", f"test/{EVAL_SET}/"
    key_of = {ckpt: key for key, ckpt in run.ckpts.items()}
    summaries, per_image = {}, {}
    for row in _csv(sweep / "sweep_summary.csv"):
        key = key_of.get(row.get("ckpt", ""))
        if key is None or row["status"] != "done":
            raise ReproError(f"{sweep / 'sweep_summary.csv'}: job {row['job']} is {row['status']} ({row})")
        summaries[key] = {k[len(prefix) :]: num(v) for k, v in row.items() if k.startswith(prefix)}
        record = json.loads((sweep / row["job"] / FINAL_METRICS).read_text())
        per_image[key] = _csv(Path(record["output_dir"]) / f"{EVAL_SET}_per_image.csv")
    if set(run.ckpts) - set(summaries):
        raise ReproError(f"{sweep / 'sweep_summary.csv'} has no row for {sorted(set(run.ckpts) - set(summaries))}")
    return summaries, per_image


def figure(run: Run, path: Path) -> dict[str, str]:
    """One held-out test image through every run: top row blurry, each output, sharp; bottom row the
    ground-truth motion and each M's motion in flow colours (one colour scale). Returns the rows' labels."""
    from neurmap.config import backbone_node
    from neurmap.data.folders import EvalImages
    from neurmap.data.io import write_image
    from neurmap.data.layouts import kernel_synth
    from neurmap.nets.motion import reblur_motion
    from neurmap.tasks.inference import load_networks
    from neurmap.utils.flow_vis import flow_to_color, make_grid

    sample = EvalImages(kernel_synth(run.work / "data" / "kernel_synth" / "test"))[0]
    blur = sample["blur"][None]
    images, labels, flows = [sample["blur"]], ["blurry"], {"ground truth": sample["motion"]}
    with torch.no_grad():
        for key, ckpt in run.ckpts.items():
            nets = load_networks(ckpt, backbone_node(run.cfg.backbone_name))
            out = nets.deblur(blur).clamp(0, 1)
            images.append(out[0])
            labels.append(key)
            if nets.motion is not None:
                settings = {"relative": nets.relative_motion, "scale": nets.motion_scale}
                flows[key] = reblur_motion(nets.motion, blur, out, **settings)[0] * nets.alpha
    images.append(sample["sharp"])
    labels.append("sharp")
    scale = max(max(float(f.norm(dim=0).max()) for f in flows.values()), 1e-3)
    colours = [flow_to_color(f[None], max_magnitude=scale)[0] for f in flows.values()]
    grid = make_grid(
        [*images, *colours, *[torch.ones_like(images[0])] * (len(images) - len(colours))], nrow=len(images)
    )
    write_image(path, grid.permute(1, 2, 0).numpy())
    return {"file": path.name, "top": ", ".join(labels), "bottom": ", ".join(flows)}


# ------------------------------------------------------------------------------------------------ report


def results_table(run: Run, summaries: dict[str, dict[str, float]]) -> str:
    """Blurry input, the released D, the start, each arm and a zero motion map; the last columns are changes
    from the start."""
    start = summaries.get("start", {})
    release = METHODS["released"] if run.released else "trained here from scratch (release absent)"
    if "released" in summaries:
        begin = f"start: source-converged ({run.source_iterations or '?'} iterations on the pairs)"
    else:
        begin = f"start: {release}"
    labels = METHODS | {"released": release, "start": begin}
    rows = [["blurry input", *(fmt(start.get(f"input_{k}"), spec) for k, _, spec in COLUMNS), "—", "—"]]
    for key in ("released", "start", "baseline", *run.cfg.variants, "ceiling"):
        if key in summaries:
            row = summaries[key]
            delta = [fmt(row.get(m, math.nan) - start.get(m, math.nan), spec) for m, spec in DELTAS]
            label = labels[key]
            fresh = key in ("released", "start")
            rows.append([label, *(fmt(row.get(k), spec) for k, _, spec in COLUMNS), *(["—"] * 2 if fresh else delta)])
    zero = ["—" if k != "motion_epe" else fmt(start.get("motion_epe_zero"), spec) for k, _, spec in COLUMNS]
    rows.append(["*reference: motion map of zero*", *zero, "—", "—"])
    header = ["run", *(c[1] for c in COLUMNS), "ΔPSNR vs start", "ΔLPIPS vs start"]
    return to_markdown([dict(zip(header, row)) for row in rows]).rstrip()


def tradeoff_figure(summaries: dict[str, dict[str, float]], path: Path, title: str) -> str:
    """PSNR against LPIPS, one labelled point per run (the paper's claim is largely perceptual)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for key, row in summaries.items():
        x, y = row.get("lpips", math.nan), row.get("psnr", math.nan)
        if not (math.isnan(x) or math.isnan(y)):
            ax.scatter([x], [y], color="tab:red" if key.startswith("neurmap") else "tab:blue")
            ax.annotate(key, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set(xlabel="LPIPS (AlexNet) ↓", ylabel="PSNR (dB) ↑", title=title)
    ax.invert_xaxis()  # better to the right and up
    ax.grid(alpha=0.3)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, image.getvalue())
    return path.name


def context(
    run: Run, summaries: dict[str, dict[str, float]], per_image: dict[str, list], figures: dict[str, Any]
) -> dict[str, Any]:
    """Every value the template words: the settings that ran, tables, differences and verdicts."""
    from omegaconf import OmegaConf

    from neurmap.config import compose
    from neurmap.losses.objectives import LossWeights, from_mapping

    method = run.cfg.method  # the NeurMAP arm the targets judge
    composed = compose(train_overrides(run, "mini_neurmap", [method], True), run.work / ".compose")
    start = summaries.get("start", {})
    zero_epe = start.get("motion_epe_zero", math.nan)
    epe = num(summaries.get(method, {}).get("motion_epe"))
    baseline = per_image.get("baseline", [])
    diff = {m: paired_difference(per_image.get(method, []), baseline, m) for m, _ in DELTAS}
    bracket = {
        k: {m: paired_difference(rows, baseline, m) for m, _ in DELTAS}
        for k, rows in per_image.items()
        if k not in ("released", "start", "baseline")
    }
    oracle = bracket.get("oracle_motion", {}).get("psnr", (math.nan, math.nan, 0))
    unpaired = num(summaries.get(method, {}).get("signal_cos/unpaired"))
    verdicts = target_verdicts(per_image, method)
    curve = source_curve(run.work / "runs" / "source" / "csv" / "version_0" / "metrics.csv")
    return {
        "prog": PROG,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cfg": run.cfg,
        "run": run,
        "setting": lambda key: OmegaConf.select(composed, key),  # what the NeurMAP fine-tune ran with
        "weights": from_mapping(LossWeights, OmegaConf.to_container(composed.loss, resolve=True), "loss").effective(),
        "total": duration(run.seconds),
        "within_budget": run.seconds <= 60.0 * run.cfg.budget_minutes,
        "release": shown(run.release),
        "start_weights": shown(run.start),
        "motion_ckpt": shown(run.motion_ckpt),
        "counts": run.manifest.get("counts", {}),
        "flow": ", ".join(f"{k} {v:g}" for k, v in run.manifest.get("flow", {}).items()) or "?",
        "machine": machine(),
        "loads": ", ".join(f"{v:.2f}" for v in run.load if not math.isnan(v)) or "unknown",
        "paper": PAPER,
        "results_table": results_table(run, summaries),
        "verdicts": verdicts,
        "diff": diff,
        "standing": {m: standing(*diff[m], lower_is_better=m == "lpips") for m in diff},
        "gain": {
            k: {m: summaries.get(k, {}).get(m, math.nan) - start.get(m, math.nan) for m, _ in DELTAS}
            for k in (method, "baseline")
        },
        "motion": {
            "epe": epe,
            "zero": zero_epe,
            "reading": motion_learning(epe, zero_epe),
            "ratio": num(summaries.get(method, {}).get("motion_length_ratio")),
        },  # fmt: skip
        "bracket": bracket,
        "oracle": {
            "mean": oracle[0],
            "se": oracle[1],
            "n": oracle[2],
            "shows": oracle[0] >= ORACLE_MARGIN and standing(*oracle, lower_is_better=False) == "ahead",
        },  # fmt: skip
        "margin": ORACLE_MARGIN,
        "share": oracle_share(diff["psnr"][0], oracle[0]),
        "target_share": TARGET_SHARE,
        "unpaired_signal": unpaired,
        "targets": {
            "oracle": oracle[0] >= ORACLE_MARGIN and standing(*oracle, lower_is_better=False) == "ahead",
            "psnr": standing(*diff["psnr"], lower_is_better=False) == "ahead",
            "lpips": standing(*diff["lpips"], lower_is_better=True) == "ahead",
            "share": oracle_share(diff["psnr"][0], oracle[0]) >= TARGET_SHARE,
            "signal": unpaired > 0,
        },
        "source_curve": curve,
        "source_best": max(curve, key=lambda r: r["paired_val"])["iteration"] if curve else None,
        "figures": figures,
        "command": Stage("run", ("-m", PROG, *run.argv)).command,
        "stages": [
            (stage.command if stage.argv else f"# {stage.name}: in process", stage.name, duration(s), note)
            for stage, s, note in run.stages
        ],
        "complete": all(k in summaries for k in ("start", "baseline", method)),
        "method": method,
        "method_label": METHODS.get(method, method),
    }


def render(values: dict[str, Any]) -> str:
    """``report.md.j2`` filled with ``values`` (a missing value is an error, not an empty string)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)  # fmt: skip
    env.filters["f"] = fmt
    env.filters["paragraph"] = lambda text: " ".join(text.split()) + "\n"  # one line per paragraph
    return env.get_template("report.md.j2").render(**values)


def write_report(run: Run) -> Path:
    """``<out>/<report_name>.md`` and ``.png`` of a finished run."""
    out = Path(run.cfg.out).expanduser() / f"{run.cfg.report_name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    summaries, per_image = gather(run)
    figures = {
        "panel": figure(run, out.with_suffix(".png")),
        "tradeoff": tradeoff_figure(
            summaries,
            out.with_name(f"{out.stem}_psnr_lpips.png"),
            f"Held-out test, {run.cfg.backbone_name}: PSNR against LPIPS of every run",
        ),
    }
    atomic_write(out, render(context(run, summaries, per_image, figures)))
    return out
