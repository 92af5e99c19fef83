"""The mini reproduction's two curves, beside its report in ``reports/``:

* ``motion``: M's motion error and the reblur term's signal cosine against M's pretraining iterations, from
  every checkpoint a ``experiment=mini_motion`` run kept (``best-step=*.ckpt``, one per validation): its
  val EPE on its own families (random_blur, which chose the checkpoint) and on mini_val (from the run's CSV
  log), and on crops of the held-out test set the EPE and the cosine that NeurMAP's R would give D with the
  released D (:mod:`lab.signal`; reported, never used to choose);
* ``length``: held-out test PSNR against fine-tuning length for the supervised fine-tune and NeurMAP, from
  one ``neurmap.evaluate`` multirun over the checkpoints of ``iterations=...`` sweeps
  (``make reproduce-mini-length``);
* ``val``: every fine-tune's validation metrics (the target family on training photographs) at each of its
  validations, from the runs' CSV logs: PSNR, M's error and the unpaired signal against iterations;
* ``weights``: the weight candidates of the arms on **validation** images (``split=val``: the target family on
  training photographs), from one ``neurmap.evaluate`` multirun over their checkpoints: PSNR, LPIPS, M's error,
  its length ratio and the signal cosines of each, the pick of each variant (best val PSNR), and a PSNR-LPIPS
  figure.

Each writes ``<out>.md`` (a table with the command behind it) and ``<out>.png`` (titled panels); ``--out``
defaults to ``logs/curves/<name>``, so a trial never replaces a committed report: name ``--out reports/<name>``
to make one (the Make targets do).

    python -m lab.curves motion RUN --weights DMPHN_FOLDER --out reports/mini_motion_curve
    python -m lab.curves length EVAL_SWEEP --out reports/mini_length_curve
    python -m lab.curves weights VAL_EVAL_SWEEP --out reports/mini_weights
    python -m lab.curves val RUN [RUN ...] --out reports/mini_val_curve
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.mini.common import shown

__all__ = ["length_rows", "main", "motion_rows", "val_rows"]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _val_epe(run: Path) -> dict[int, dict[str, float]]:
    """Iteration -> {"<set>": val EPE, "<set>_zero": zero map's} from a run's CSV logs."""
    out: dict[int, dict[str, float]] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        for row in _csv(path):
            for key, value in row.items():
                match = re.fullmatch(r"val/(.+)/motion_epe(_zero)?", key)
                if match and value:
                    name = match.group(1) + (match.group(2) or "")
                    out.setdefault(int(float(row["step"])) + 1, {})[name] = float(value)
    return out


def motion_rows(run: Path, weights: str, mini: Path, per_image: int, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """One row per kept checkpoint of a motion-pretraining run: iteration, val EPEs, test EPE and cosines."""
    from lab.signal import load_system, measure, summarize

    val = _val_epe(run)
    rows = []
    ckpts = sorted(run.glob("checkpoints/best-step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    for ckpt in ckpts:
        step = int(ckpt.stem.split("=")[1])
        system = load_system([f"paths.mini={mini}", f"model.deblur.pretrained={weights}", "variant=net2",
                              f"model.motion_pretrained='{ckpt}'", *overrides])  # fmt: skip
        summary = summarize(measure(system, mini / "kernel_synth" / "test", 96, per_image))
        row: dict[str, Any] = {"iteration": step, **{f"val_epe/{k}": v for k, v in val.get(step, {}).items()}}
        row |= {f"test/{k}": v[0] for k, v in summary.items()} | {f"test/{k}_se": v[1] for k, v in summary.items()}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def length_rows(eval_sweeps: Sequence[Path]) -> list[dict[str, Any]]:
    """(variant, iterations, test PSNR, LPIPS) of every job of evaluation multiruns over fine-tunes."""
    from omegaconf import OmegaConf

    rows = []
    for record_path in sorted(p for sweep in eval_sweeps for p in sweep.glob("*/final_metrics.json")):
        record = json.loads(record_path.read_text())
        run = Path(record["ckpt"]).parent.parent
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        metrics = record["metrics"]
        psnr = next(v for k, v in metrics.items() if k.endswith("/psnr") and "input" not in k)
        lpips = next((v for k, v in metrics.items() if k.endswith("/lpips") and "input" not in k), float("nan"))
        rows.append({"variant": str(cfg.variant.name), "iterations": int(cfg.iterations), "psnr": psnr, "lpips": lpips})
    return sorted(rows, key=lambda r: (r["variant"], r["iterations"]))


#: The columns of the validation curve: (metric suffix in a run's CSV log, column).
VAL_METRICS = (("/psnr", "psnr"), ("/motion_epe", "motion_epe"), ("/signal_cos/unpaired", "signal_unpaired"))


def val_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """(run folder's name, variant, iteration, val metrics) of each validation of each fine-tune run folder (or
    sweep job), read from its CSV log (``csv/version_*/metrics.csv``; the val set's name is the one the run
    logged). The folder names the run: two runs of one variant (the ceiling is a supervised run) stay apart."""
    from omegaconf import OmegaConf

    rows = []
    for run in runs:
        variant = str(OmegaConf.load(run / ".hydra" / "config.yaml").variant.name)
        for log in sorted(run.glob("csv/version_*/metrics.csv")):
            for record in csv.DictReader(log.open()):
                found = {
                    column: float(value)
                    for key, value in record.items()
                    for suffix, column in VAL_METRICS
                    if key.startswith("val/") and key.endswith(suffix) and "/input_" not in key and value
                }
                if "psnr" in found:
                    rows.append({"run": run.name, "variant": variant, "iteration": int(record["step"]) + 1, **found})
    return sorted(rows, key=lambda r: (r["run"], r["iteration"]))


def _val_figure(rows: list[dict[str, Any]]):
    fig = _line_panels(
        rows,
        "run",
        "iteration",
        ("psnr", "Validation PSNR against fine-tuning iterations", "PSNR (dB)"),
        ("signal_unpaired", "Unpaired signal against fine-tuning iterations", "cosine"),
    )
    fig.axes[1].axhline(0.0, color="grey", linewidth=0.8)
    return fig


def _line_panels(rows: list[dict[str, Any]], group: str, x: str, *panels: tuple[str, str, str], xscale: str = "linear"):
    """A figure of line panels, one line per value of ``group``: each panel (key, title, y label) plots the
    rows that have its key against ``x``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4))
    for i, name in enumerate(sorted({r[group] for r in rows})):
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            mine = [r for r in rows if r[group] == name and key in r]
            if mine:  # one colour per line across the panels
                ax.plot([r[x] for r in mine], [r[key] for r in mine], marker="o", color=f"C{i}", label=name)
    for ax, (_, title, ylabel) in zip(axes, panels, strict=True):
        ax.set(title=title, xlabel=x, ylabel=ylabel, xscale=xscale)
        ax.legend()
    return fig


#: The columns of the weight table: (final-metrics suffix, column).
WEIGHT_METRICS = (
    ("/psnr", "psnr"),
    ("/lpips", "lpips"),
    ("/motion_epe", "motion_epe"),
    ("/motion_epe_zero", "motion_epe_zero"),
    ("/motion_length_ratio", "length_ratio"),
    ("/signal_cos/unpaired", "signal_unpaired"),
    ("/signal_cos/reblur", "signal_reblur"),
    ("/signal_cos/reblur_true_motion", "signal_true_motion"),
)


def weight_rows(eval_sweep: Path) -> list[dict[str, Any]]:
    """One row per evaluated candidate: its run folder's name, variant, the effective weights of D's unpaired terms
    (lambda and beta folded in), its val metrics, and ``pick`` (the best val PSNR of its variant)."""
    from omegaconf import OmegaConf

    from neurmap.losses.objectives import LossWeights, from_mapping

    rows = []
    for record_path in sorted(eval_sweep.glob("*/final_metrics.json")):
        record = json.loads(record_path.read_text())
        run = Path(record["ckpt"]).parent.parent
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        metrics = {k: v for k, v in record["metrics"].items() if "/input_" not in k}
        row: dict[str, Any] = {"candidate": run.name, "variant": str(cfg.variant.name)}
        weights = from_mapping(LossWeights, OmegaConf.to_container(cfg.loss, resolve=True), "loss").effective()
        row |= {k: getattr(weights, k) for k in ("reblur_deblur", "sharp_prior", "natural")}
        for suffix, column in WEIGHT_METRICS:
            row[column] = next((float(v) for k, v in metrics.items() if k.endswith(suffix)), float("nan"))
        rows.append(row)
    for variant in {r["variant"] for r in rows}:
        mine = [r for r in rows if r["variant"] == variant]
        best = max(mine, key=lambda r: r["psnr"] if r["psnr"] == r["psnr"] else float("-inf"))
        for r in mine:
            r["pick"] = "yes" if r is best and len(mine) > 1 else ""
    return sorted(rows, key=lambda r: (r["variant"], r["reblur_deblur"], r["candidate"]))


def _weights_figure(rows: list[dict[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        ax.scatter([r["lpips"] for r in mine], [r["psnr"] for r in mine], label=variant)
        for r in mine:
            ax.annotate(r["candidate"], (r["lpips"], r["psnr"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set(
        title="Weight candidates on validation: PSNR against LPIPS", xlabel="LPIPS (AlexNet) ↓", ylabel="PSNR (dB) ↑"
    )
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _table(rows: list[dict[str, Any]], keys: Sequence[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [
            f"{row.get(k, float('nan')):.3f}" if isinstance(row.get(k), float) else str(row.get(k, "—")) for k in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write(out: Path, title: str, command: str, table: str, figure, note: str) -> None:
    from neurmap.utils.files import atomic_write
    from neurmap.utils.machine import machine

    out.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110, bbox_inches="tight")
    atomic_write(out.with_suffix(".png"), image.getvalue())
    text = f"# {title}\n\n![{title}]({out.with_suffix('.png').name})\n\n{table}\n\n{note}\n\nMachine: {machine()}.\n\n"
    text += f"Command:\n\n```bash\n{command}\n```\n"
    atomic_write(out.with_suffix(".md"), text)


def _motion_figure(rows: list[dict[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("val_epe/random_blur", "val, own families"), ("val_epe/mini_val", "mini_val (test family)"),
                       ("test/motion_epe", "test crops, motion R receives")):  # fmt: skip
        a.plot(its, [r.get(key, float("nan")) for r in rows], marker="o", label=label)
    zeros = (
        ("val_epe/random_blur_zero", "zero map, own families", "C0"),
        ("test/motion_epe_zero", "zero map, test", "C2"),
    )
    for key, label, colour in zeros:
        value = next((r[key] for r in rows if key in r), float("nan"))
        a.axhline(value, color=colour, linestyle="--", linewidth=1, label=label)
    a.set(
        title="M's end-point error against pretraining iterations", xlabel="pretraining iterations", ylabel="EPE (px)"
    )
    a.legend(fontsize=8)
    b.plot(its, [r.get("test/signal_cos/reblur", float("nan")) for r in rows], marker="o", label="M's motion")
    b.plot(its, [r.get("test/signal_cos/reblur_true_motion", float("nan")) for r in rows], "--", label="true motion")
    b.axhline(0.0, color="grey", linewidth=0.8)
    b.set(title="Signal of the reblur term on D (test crops)", xlabel="pretraining iterations", ylabel="cosine")
    b.legend(fontsize=8)
    return fig


def _length_figure(rows: list[dict[str, Any]]):
    return _line_panels(
        rows,
        "variant",
        "iterations",
        ("psnr", "Test PSNR against fine-tuning length", "PSNR (dB)"),
        ("lpips", "Test LPIPS against fine-tuning length", "LPIPS"),
        xscale="log",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m lab.curves", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="curve", required=True)
    motion = sub.add_parser("motion", help="M's EPE and the reblur signal against pretraining iterations")
    motion.add_argument("run", type=Path, help="an experiment=mini_motion run folder")
    motion.add_argument("--weights", required=True, help="the start D (released DMPHN(1-2-4) folder)")
    motion.add_argument("--mini", type=Path, default=Path("logs/reproduce_mini/data"))
    motion.add_argument("--crops-per-image", type=int, default=1)
    motion.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="NeurMAP config override")
    motion.add_argument("--out", type=Path, default=Path("logs/curves/mini_motion_curve"))
    length = sub.add_parser("length", help="test PSNR and LPIPS against fine-tuning length")
    length.add_argument("eval_sweep", type=Path, nargs="+", help="neurmap.evaluate multiruns over the fine-tunes")
    length.add_argument("--out", type=Path, default=Path("logs/curves/mini_length_curve"))
    val = sub.add_parser("val", help="the fine-tunes' validation metrics against iterations")
    val.add_argument("runs", type=Path, nargs="+", help="fine-tune run folders (or sweep jobs)")
    val.add_argument("--note", default="", help="a line on how the runs were trained")
    val.add_argument("--out", type=Path, default=Path("logs/curves/mini_val_curve"))
    weights = sub.add_parser("weights", help="the arms' weight candidates on validation images")
    weights.add_argument("eval_sweep", type=Path, help="a neurmap.evaluate split=val multirun over the candidates")
    weights.add_argument("--note", default="", help="a line on how the candidates were trained")
    weights.add_argument("--out", type=Path, default=Path("logs/curves/mini_weights"))
    opts = parser.parse_args(argv)
    command = shown("python -m lab.curves " + shlex.join(argv))
    if opts.curve == "motion":
        rows = motion_rows(opts.run, opts.weights, opts.mini, opts.crops_per_image, opts.set)
        keys = ["iteration", *sorted({k for r in rows for k in r} - {"iteration"})]
        keys = [k for k in keys if not k.endswith("_se")]
        title = "M's error and the reblur signal against pretraining iterations"
        note = (
            "`val_epe/<set>`: the run's own validation, on its pretraining families (`random_blur`, which chooses "
            "the checkpoint) and on mini_val (the test family on training photographs). `test/*`: the held-out "
            f"test images, {opts.crops_per_image} centre-grid crop(s) of 96 px each, with the released D; the "
            "signal is the reblur term's cosine with the supervised loss, `length_ratio` the motion R receives over "
            "the true length. Reported, never used to choose."
        )
        _write(opts.out, title, command, _table(rows, keys), _motion_figure(rows), note)
    elif opts.curve == "val":
        rows = val_rows(opts.runs)
        title = "Validation metrics of the fine-tunes against iterations"
        note = (
            f"{opts.note} Validation: the target family on training photographs (mini_val), never the held-out test; "
            "`motion_epe`: the motion R receives from M against the true motion (px); `signal_unpaired`: the cosine "
            "between D's gradient of the weighted sum of its unpaired terms and of the supervised loss."
        ).strip()
        keys = ["run", "variant", "iteration", "psnr", "motion_epe", "signal_unpaired"]
        _write(opts.out, title, command, _table(rows, keys), _val_figure(rows), note)
    elif opts.curve == "weights":
        rows = weight_rows(opts.eval_sweep)
        keys = ["candidate", "variant", "reblur_deblur", "sharp_prior", "natural", "psnr", "lpips", "motion_epe"]
        keys += ["motion_epe_zero", "length_ratio", "signal_unpaired", "signal_reblur", "signal_true_motion", "pick"]
        title = "Weight candidates of the arms, chosen on validation"
        note = (
            f"{opts.note} Validation: the target family on training photographs (`split=val`), never the held-out "
            "test. `reblur_deblur`, `sharp_prior` and `natural` are D's weights of its unpaired terms (content: 100). "
            "`motion_epe` and `length_ratio`: the motion R receives from M against the true motion. `signal_*`: "
            "the cosine between D's gradient of the term (`unpaired`: the weighted sum of D's unpaired terms) and "
            "of the supervised loss. `pick`: the best val PSNR of its variant."
        ).strip()
        _write(opts.out, title, command, _table(rows, keys), _weights_figure(rows), note)
    else:
        rows = length_rows(opts.eval_sweep)
        title = "Test PSNR and LPIPS against fine-tuning length"
        note = "Every run: experiment=mini_neurmap from the released D, seed 0; evaluated on the held-out test set."
        table = _table(rows, ["variant", "iterations", "psnr", "lpips"])
        _write(opts.out, title, command, table, _length_figure(rows), note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
