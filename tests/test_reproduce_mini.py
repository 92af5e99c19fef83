"""lab.reproduce_mini: the mini reproduction on a tiny setting: its stages (the commands, composed, run as stubs
that leave checkpoints; the source stage for real), its data, the report's pure functions on hand-written tables,
its verdicts and its errors.

The settings use the from-scratch fallback (no released weights), the small U-Net and 2 iterations per run.
scikit-image provides the photographs; without it the tests that need them skip.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lab import reproduce_mini as entry
from lab.mini import data, report
from lab.mini.common import ReproError, shown
from lab.mini.run import (
    Run,
    check_configs,
    evaluation,
    fit_iterations,
    iterations_in,
    slots,
    sweep,
    training,
)
from lab.mini.settings import load_settings

# Tiny networks and crops for every training run (shown in the report's commands like any override).
TINY_TRAIN = [
    "model.deblur.net.width=8",
    "model.motion.net.width=8",
    "model.disc.net.width=8",
    "model.disc.net.n_layers=2",
    "data.paired.transform.crop_size=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
]
TINY_MOTION = ["model.motion.net.width=8", "logger=none", "data.paired.crop_size=32", "data.val.random_blur.samples=2"]
TINY_DATA = ["data.train_photos=[chelsea,coins]", "data.test_photos=[camera]", "data.crop=240"]
TINY_DATA += ["data.train_crops=2", "data.test_crops=1", "data.paired_val_crops=1", "data.motion_procedural=2"]
# The source stage validates every iteration and stops at once on a plateau of 100 dB.
TINY_SOURCE = ["trainer.val_check_interval=1", "callbacks.early_stopping.patience=1"]
TINY_SOURCE += ["callbacks.early_stopping.min_delta=100", "+data.val.mini_val.records.max_images=1"]


def listing(key: str, items: list[str]) -> str:
    """A list-of-overrides setting as Hydra reads it: key=['a=1','b=2']."""
    return f"{key}=[{','.join(repr(item) for item in items)}]"


def tiny(tmp_path, *extra: str) -> list[str]:
    args = [f"work={tmp_path / 'work'}", f"out={tmp_path / 'reports'}", f"weights={tmp_path / 'no'}"]
    args += ["backbone_name=unet"]
    args += ["iterations=2", "scratch_iterations=2", "motion_iterations=2", "source_iterations=6", "jobs=2"]
    args += [*TINY_DATA, listing("train_overrides", TINY_TRAIN), listing("motion_overrides", TINY_MOTION)]
    return [*args, listing("source_overrides", TINY_SOURCE), *extra]


def tiny_run(tmp_path, *extra: str) -> Run:
    args = tiny(tmp_path, *extra)
    return Run(load_settings(args), args)


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the results table: label -> cells."""
    section = text.split("## Results", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run |")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


class FakeCommands:
    """``subprocess.Popen`` of the pipeline's stages: records each command and leaves what it would (checkpoints,
    final metrics, a sweep's job folders ``<num>_<variant>-<backbone>``) without training anything."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []

    def __call__(self, argv, stdout, stderr, env):
        self.started.append(list(argv))
        module, args = argv[2], dict(a.split("=", 1) for a in argv[3:] if "=" in a)
        runs = []
        if module == "neurmap.train" and "hydra.run.dir" in args:
            runs = [Path(args["hydra.run.dir"])]
        elif module == "neurmap.train":
            sweep_dir = Path(args["hydra.sweep.dir"])
            runs = [sweep_dir / f"{i}_{v}-{args['backbone']}" for i, v in enumerate(args["variant"].split(","))]
        for run_dir in runs:
            (run_dir / "checkpoints").mkdir(parents=True)
            for name in ("last.ckpt", "best.ckpt"):
                (run_dir / "checkpoints" / name).write_text("weights")
            (run_dir / "final_metrics.json").write_text(json.dumps({"iterations": 2, "metrics": {}}))
        return self

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


@pytest.mark.slow
def test_the_pipeline_composes_every_stage_and_reuses_the_finished_ones(tmp_path, monkeypatch):
    """The whole run with its commands stubbed: every stage is built and composed (a bad override would stop it),
    each folder records its command, the evaluation gets every checkpoint, and a second run of the same command
    reuses every finished training; a folder the command did not write is refused and left as it was."""
    from lab.mini import run as pipeline

    commands = FakeCommands()
    monkeypatch.setattr(pipeline.subprocess, "Popen", commands)
    monkeypatch.setattr(pipeline, "skimage_data", lambda: None)
    counts = {"paired": 4, "unpaired": 4, "test": 1}
    monkeypatch.setattr(pipeline, "build_data", lambda cfg, path: {"counts": counts, "flow": {}})
    args = tiny(tmp_path, "variants=[neurmap]")
    record = pipeline.run(load_settings(args), args)

    modules = [(argv[2], argv[3] == "-m") for argv in commands.started]
    assert modules == [("neurmap.train", False)] * 3 + [("neurmap.train", True)] * 2 + [("neurmap.train", False)] + [
        ("neurmap.evaluate", True),
        ("neurmap.collect", False),
    ]  # scratch start, source, M, the two arms, the ceiling, then the evaluation and the collector
    assert record.release.endswith("runs/scratch_baseline/checkpoints/last.ckpt")
    assert record.start.endswith("runs/source/checkpoints/best.ckpt") and record.source_iterations == 2
    assert record.motion_ckpt.endswith("runs/motion_pretrain/checkpoints/last.ckpt")
    assert list(record.ckpts) == ["start", "released", "neurmap", "baseline", "ceiling"]
    assert record.ckpts["neurmap"].endswith("sweeps/with_motion/0_neurmap-unet/checkpoints/last.ckpt")
    evaluate = commands.started[-2]
    assert f"ckpt={','.join(record.ckpts.values())}" in evaluate
    for argv in commands.started[:-1]:  # every stage with a folder records the command that wrote it
        folder = next(Path(a.split("=", 1)[1]) for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")))
        assert json.loads((folder / "stage.json").read_text())["argv"] == argv[1:]

    commands.started.clear()
    again = pipeline.run(load_settings(args), args)
    assert [argv[2] for argv in commands.started] == ["neurmap.evaluate", "neurmap.collect"]
    assert [note for _, _, note in again.stages].count("reused") == 6 and again.ckpts == record.ckpts

    stranger = tmp_path / "other" / "runs" / "scratch_baseline"
    stranger.mkdir(parents=True)
    (stranger / "mine.txt").write_text("keep")
    commands.started.clear()
    with pytest.raises(ReproError, match="was not written by lab.reproduce_mini"):
        pipeline.run(load_settings([*args, f"work={tmp_path / 'other'}"]), args)
    assert (stranger / "mine.txt").read_text() == "keep" and not commands.started


def _report_run(tmp_path) -> Run:
    """A finished run as the report reads it: the from-scratch release, the source-converged start, M, NeurMAP and
    the supervised arm."""
    run = tiny_run(tmp_path, "variants=[neurmap]", "ceiling=false")
    run.release, run.start, run.source_iterations = "runs/scratch/last.ckpt", "runs/source/best.ckpt", 6
    run.motion_ckpt = "runs/motion/last.ckpt"
    run.ckpts = {k: f"{k}.ckpt" for k in ("start", "released", "neurmap", "baseline")}
    counts = {"paired": 4, "paired_val": 2, "unpaired": 4, "val": 2, "test": 3, "motion_photos": 6}
    run.manifest = {"counts": counts, "flow": {"tx_max": 27.0}}
    run.load, run.seconds = [1.0, 1.5], 125.0
    return run


#: A hand-written evaluation: means by run key (test/kernel_synth/<metric> of the collector's table).
SUMMARIES = {
    "start": {"psnr": 25.0, "lpips": 0.3, "input_psnr": 22.5, "input_lpips": 0.45, "motion_epe_zero": 9.0},
    "released": {"psnr": 24.0, "lpips": 0.32},
    "baseline": {"psnr": 26.0, "lpips": 0.26},
    "neurmap": {
        "psnr": 26.5,
        "lpips": 0.24,
        "motion_epe": 6.0,
        "motion_length_ratio": 0.9,
        "signal_cos/unpaired": 0.25,
    },
}


def test_the_report_words_the_table_it_is_given(tmp_path):
    """The rendered report on a hand-written evaluation: its results table holds those numbers and their changes
    from the start, and its targets hold the per-image differences."""
    pytest.importorskip("jinja2")
    run = _report_run(tmp_path)
    per_image = {
        "neurmap": _rows(a=26.0, b=27.0, c=26.6),
        "baseline": _rows(a=25.5, b=26.4, c=26.0),  # NeurMAP +0.5, +0.6, +0.6 dB
        "start": _rows(a=25.0, b=25.0, c=25.0),
    }
    figures = {"panel": {"file": "tiny.png", "top": "blurry", "bottom": "ground truth"}, "tradeoff": "t.png"}
    text = report.render(report.context(run, SUMMARIES, per_image, figures))
    table = _table(text)
    assert [label.split(" ")[0] for label in table] == [
        "blurry",
        "trained",
        "start:",
        "supervised",
        "NeurMAP",
        "*reference:",
    ]
    assert table["blurry input"][0] == "22.50" and table["blurry input"][2] == "0.4500"
    assert table["start: source-converged (6 iterations on the pairs)"][0] == "25.00"
    neurmap = next(cells for label, cells in table.items() if label.startswith("NeurMAP"))
    # PSNR, LPIPS, M's error and length ratio, its unpaired signal, then the changes from the start
    assert [neurmap[i] for i in (0, 2, 4, 5, 6, 11, 12)] == [
        "26.50",
        "0.2400",
        "6.00",
        "0.90",
        "+0.25",
        "+1.50",
        "-0.0600",
    ]
    supervised = next(cells for label, cells in table.items() if label.startswith("supervised"))
    assert supervised[4] == "—" and supervised[11] == "+1.00"
    assert next(cells for label, cells in table.items() if label.startswith("*reference"))[4] == "9.00"
    # differences 0.5, 0.6, 0.6: mean 0.567, sd 0.0577, s.e. 0.0333
    assert "| +0.567 ± 0.033 dB | yes |" in text and "is ahead on PSNR and ahead on LPIPS" in text
    assert "python -m lab.reproduce_mini work=" in text and "2 min 05.0 s" in text


def test_gather_reads_the_collectors_table_and_each_jobs_per_image_file(tmp_path):
    run = _report_run(tmp_path)
    run.ckpts = {"start": "a.ckpt", "neurmap": "b.ckpt"}
    sweep_dir = run.work / "sweeps" / "evaluate"
    rows = [("0", "done", "a.ckpt", "25.0"), ("1", "done", "b.ckpt", "26.5")]
    for job, _, _, psnr in rows:
        out = tmp_path / "eval" / job
        out.mkdir(parents=True)
        (out / "kernel_synth_per_image.csv").write_text(f"name,psnr\nx,{psnr}\n")
        (sweep_dir / job).mkdir(parents=True)
        (sweep_dir / job / "final_metrics.json").write_text(json.dumps({"output_dir": str(out)}))

    def table(lines):
        lines = ["job,status,ckpt,test/kernel_synth/psnr,val/other", *(",".join([*r, "1"]) for r in lines)]
        (sweep_dir / "sweep_summary.csv").write_text("\n".join(lines) + "\n")

    table(rows)
    summaries, per_image = report.gather(run)
    assert summaries == {"start": {"psnr": 25.0}, "neurmap": {"psnr": 26.5}}
    assert per_image["neurmap"] == [{"name": "x", "psnr": "26.5"}]
    table([rows[0], ("1", "unfinished", "b.ckpt", "")])
    with pytest.raises(ReproError, match="job 1 is unfinished"):
        report.gather(run)
    table(rows[:1])
    with pytest.raises(ReproError, match=r"has no row for \['neurmap'\]"):
        report.gather(run)


def test_a_free_slot_goes_to_the_next_stage_at_once(tmp_path):
    """Two slots, three one-slot stages: the long first stage waits (at most a minute) for the third one's
    marker, which the third writes only if it starts while the first still runs, in the slot the short second
    stage left; in fixed pairs the first would time out (exit 1) and the run would stop."""
    from lab.mini.run import Stage, execute_queue

    run = tiny_run(tmp_path, "jobs=2")
    marker = tmp_path / "third_started"
    wait = f"import pathlib, sys, time; t = time.time() + 60\nwhile not pathlib.Path({str(marker)!r}).exists():\n"
    wait += "    time.sleep(0.05)\n    if time.time() > t: sys.exit(1)"
    stages = [
        Stage("long", ("-c", wait)),
        Stage("short", ("-c", "pass")),
        Stage("third", ("-c", f"import pathlib; pathlib.Path({str(marker)!r}).touch()")),
    ]
    execute_queue(run, [(stage, 1) for stage in stages], poll=0.05)
    names = [stage.name for stage, _, _ in run.stages]  # in the order they were seen to end
    assert marker.is_file() and names[0] == "short" and sorted(names[1:]) == ["long", "third"]


def test_stages_are_the_commands_a_user_would_type(tmp_path):
    """The fine-tune sweeps, the ceiling and the evaluation as commands (what the report prints), composed
    without running anything: the variants with M start it from the pretraining run, the others do not."""
    run = tiny_run(tmp_path)
    run.start, run.motion_ckpt = "start/last.ckpt", "motion/last.ckpt"
    with_m = sweep(run, "with_motion", ["neurmap", "net2", "net3", "oracle_motion"], True)
    without_m = sweep(run, "without_motion", ["baseline", "net1"], False)
    ceiling = training(run, "fine-tune ceiling", "mini_neurmap", "ceiling", ["variant=baseline"])
    run.ckpts = {"start": "start/last.ckpt"} | {v: f"runs/{v}/last.ckpt" for v in ("baseline", "neurmap", "net1")}
    evaluate = evaluation(run)
    for stage in (with_m, without_m):
        assert stage.command.startswith("OMP_NUM_THREADS=1 python -m neurmap.train -m cluster=joblib")
        assert "experiment=mini_neurmap" in stage.command and "seed=0" in stage.command
    assert "variant=neurmap,net3,oracle_motion,net2 " in with_m.command  # the longest first
    assert "model.motion_pretrained=motion/last.ckpt" in with_m.command
    assert "variant=net1,baseline " in without_m.command and "motion_pretrained" not in without_m.command
    alone = sweep(run, "without_motion", ["baseline"], False)  # one job: no launcher, every job's threads
    assert alone.command.startswith("OMP_NUM_THREADS=2 python -m neurmap.train -m experiment=mini_neurmap")
    # single-job stages share the two slots with one thread each; a sweep of several jobs runs alone
    oracle = sweep(run, "oracle_motion", ["oracle_motion"], True, ["loss.reblur_deblur=100"])
    assert oracle.command.endswith(f"loss.reblur_deblur=100 hydra.sweep.dir={oracle.out}")
    taken = slots(run, [(with_m, ["neurmap", "net2"]), (alone, ["baseline"]), (oracle, ["oracle_motion"])])
    assert [(stage.name, n) for stage, n in taken] == [
        ("fine-tunes with motion", 2),
        ("fine-tunes without motion", 1),
        ("fine-tunes oracle motion", 1),
    ]
    assert alone.command.startswith("OMP_NUM_THREADS=1 ") and oracle.command.startswith("OMP_NUM_THREADS=1 ")
    assert "variant=baseline" in ceiling.command and "hydra.run.dir=" in ceiling.command
    ckpts = re.search(r"ckpt=(\S+)", evaluate.command).group(1).split(",")
    assert len(ckpts) == 4 and "data=kernel_synth" in evaluate.command and "metrics.signal=true" in evaluate.command
    check_configs([with_m, without_m, ceiling, evaluate])  # every job composes


def test_data_is_deterministic_cached_and_split_by_photograph(tmp_path):
    pytest.importorskip("skimage")
    cfg = load_settings(tiny(tmp_path))
    first = data.build_data(cfg, tmp_path / "a")
    again = data.build_data(cfg, tmp_path / "a")
    counts = {"paired": 4, "paired_val": 2, "unpaired": 4, "val": 2, "test": 1, "motion_photos": 6}
    assert again == first and first["counts"] == counts
    assert len(list((tmp_path / "a" / "photos" / "motion").glob("leaves_*.png"))) == 2
    data.build_data(cfg, tmp_path / "b")
    for rel in ("paired/train/coins_1_blurryimg.png", "kernel_synth/test/camera_0_000_blurryimg.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert {p.name.split("_")[0] for p in (tmp_path / "a" / "kernel_synth" / "test").glob("*.png")} == {"camera"}
    assert {p.name.split("_")[0] for p in (tmp_path / "a").glob("*/train/**/*.png")} == {"chelsea", "coins"}
    validated = {p.name.split("_")[0] for p in (tmp_path / "a" / "kernel_synth" / "val").glob("*.png")}
    assert validated == {"chelsea", "coins"}  # validation crops come from training photographs only
    # the paired set's motion is its uniform blur: one vector per image, canonical, of the drawn length
    from neurmap.data.io import read_mfmap

    for path in (tmp_path / "a" / "paired" / "train").glob("*_mfmap.mat"):
        motion = read_mfmap(path)
        assert (motion == motion[:, :1, :1]).all() and motion[1, 0, 0] >= 0
        assert 3.0 <= float(motion[:, 0, 0].norm()) <= 19.0
    (tmp_path / "a" / "mine.txt").write_text("keep")  # a user's file in the data folder
    data.build_data(load_settings([*tiny(tmp_path), "seed=1"]), tmp_path / "a")  # rebuilt in place
    name = "paired/train/coins_1_blurryimg.png"
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "kernel_synth",
        "manifest.json",
        "mine.txt",
        "paired",
        "photos",
    ]


def test_a_rebuild_deletes_only_what_a_data_build_wrote(tmp_path):
    """A manifest of another tool is refused; one of this command from before it listed its entries stands for the
    three sub-folders; an interrupted build leaves a manifest of no settings that names them, so the next build
    clears them; a manifest naming something outside its folder is refused before anything is deleted."""
    pytest.importorskip("skimage")
    root = tmp_path / "data"
    (root / "photos" / "train").mkdir(parents=True)
    (root / "photos" / "train" / "old.png").write_bytes(b"old")
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("keep")
    (root / "mine.txt").write_text("keep")
    (root / "manifest.json").write_text(json.dumps({"name": "another tool's"}))
    with pytest.raises(ReproError, match="was not written by lab.reproduce_mini"):
        data.build_data(load_settings(tiny(tmp_path)), root)
    assert (root / "photos" / "train" / "old.png").read_bytes() == b"old"
    (root / "manifest.json").write_text(json.dumps({"settings": {"seed": 5, "layout": 3}}))
    with pytest.raises(ReproError, match="no image 'nope'"):  # fails after clearing, before writing
        data.build_data(load_settings([*tiny(tmp_path), "data.train_photos=[nope]"]), root)
    assert not (root / "photos").exists()
    assert (root / "mine.txt").read_text() == "keep" and (root / "notes" / "a.txt").read_text() == "keep"
    pending = {"settings": None, "entries": ["kernel_synth", "paired", "photos"]}
    assert json.loads((root / "manifest.json").read_text()) == pending
    (root / "manifest.json").write_text(json.dumps({"settings": None, "entries": ["../notes"]}))
    with pytest.raises(ReproError, match="'entries' must list sub-folder names"):
        data.build_data(load_settings(tiny(tmp_path)), root)
    assert (root / "notes" / "a.txt").read_text() == "keep"


def test_the_target_is_gongs_strong_blur_with_its_motion_and_mild_is_one_setting_away(tmp_path):
    """Gong's default (strong) ranges, tx/ty up to 27 px, build the unpaired, val and test sets with their true
    motion; data.synth=[preset=mild] (19 px) gives the milder bed, whose motion is shorter on the same crops."""
    pytest.importorskip("skimage")
    from neurmap.data.io import read_mfmap

    lengths = {}
    for preset, limit in ((None, 27.0), ("mild", 19.0)):
        root = tmp_path / str(preset)
        synth = "data.synth=['preset=mild']" if preset else "data.synth=[]"
        manifest = data.build_data(load_settings([*tiny(tmp_path), synth]), root)
        assert manifest["flow"]["tx_max"] == manifest["flow"]["ty_max"] == limit
        for split in ("train", "val", "test"):
            blurry = sorted((root / "kernel_synth" / split).glob("*_blurryimg.png"))
            assert blurry and all(Path(str(p).replace("_blurryimg.png", "_mfmap.mat")).is_file() for p in blurry)
        maps = [read_mfmap(p) for p in sorted((root / "kernel_synth" / "test").glob("*_mfmap.mat"))]
        lengths[preset] = float(torch.stack([m.norm(dim=0).mean() for m in maps]).mean())
    assert lengths[None] > lengths["mild"] > 0


@pytest.mark.slow  # three tiny trainings
def test_source_stage_stops_on_its_val_plateau_and_is_reused(tmp_path, capsys):
    """source_only: the source stage runs until its paired-val PSNR stops improving (here: no gain of 100 dB
    in one validation, so it stops at the second of at most 6 iterations), keeps its best checkpoint, and a
    second run with the same settings reuses it without training."""
    pytest.importorskip("skimage")
    args = tiny(tmp_path, "source_only=true")
    assert entry.main(args) == 0
    source = tmp_path / "work" / "runs" / "source"
    best = source / "checkpoints" / "best.ckpt"
    assert best.is_file() and json.loads((source / "final_metrics.json").read_text())["iterations"] == 2
    stamp = best.stat().st_mtime_ns
    capsys.readouterr()
    assert entry.main(args) == 0
    assert "converge on the source: reusing" in capsys.readouterr().out
    assert best.stat().st_mtime_ns == stamp
    stranger = tmp_path / "other" / "runs" / "source"
    stranger.mkdir(parents=True)
    (stranger / "mine.txt").write_text("keep")
    assert entry.main([*args, f"work={tmp_path / 'other'}"]) == 2  # a folder this command did not write
    assert (stranger / "mine.txt").read_text() == "keep"


def test_photos_are_rgb_in_unit_range():
    pytest.importorskip("skimage")
    for name in ("camera", "motorcycle_right"):
        photo = data.load_photo(name)
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.float32
        assert photo.min() >= 0.0 and photo.max() <= 1.0
    with pytest.raises(ReproError, match="no image 'nope'"):
        data.load_photo("nope")


def test_test_crops_are_a_deterministic_grid():
    boxes = data.crop_boxes((400, 600), 288, 4, None)
    assert boxes == [(0, 0, 288, 288), (0, 312, 288, 288), (112, 0, 288, 288), (112, 312, 288, 288)]
    assert data.crop_boxes((100, 80), 288, 1, None) == [(0, 0, 100, 80)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.train_photos=[camera]", "data.test_photos=[camera]"], "in both train_photos and test_photos"),
        (["variants=[net1]"], "variants must include method (neurmap)"),
        (["data.paired_length=[5,2]"], "data.paired_length"),
        (["data.synth=['kernel.nope=1']"], "data.synth: unknown key 'kernel.nope'"),
        (["data.synth=[kernel.nope=1]"], "list items holding '='"),
        (["minutes_per_method=0"], "minutes_per_method must be > 0"),
        (["report_name=a/b"], "report_name must be a file name"),
        (["jobs=two"], "jobs"),
        (["nope=1"], "nope"),
    ],
)
def test_bad_settings_end_with_one_line(tmp_path, capsys, args, message):
    if any(a.startswith("data.") for a in args):
        pytest.importorskip("skimage")
    assert entry.main([f"work={tmp_path / 'w'}", "data_only=true", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lab.reproduce_mini: error:") and message in err[0], err


def test_missing_scikit_image_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    assert entry.main([f"work={tmp_path / 'w'}", "data_only=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scikit-image is not installed" in err and "pip install" in err


def test_bad_training_override_stops_before_any_training(tmp_path, capsys):
    pytest.importorskip("skimage")
    assert entry.main([*tiny(tmp_path), "train_overrides=['nope.key=1']"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lab.reproduce_mini: error: neurmap.train overrides of train scratch start")
    assert "nope.key" in err[-1] and not (tmp_path / "work" / "runs").exists()


def test_iterations_in_a_time_budget():
    assert iterations_in(2.0, 0.5) == 240
    assert iterations_in(1.0, 7.0) == 8  # whole iterations only: 60 // 7
    assert iterations_in(0.001, 10.0) == 1  # never zero
    with pytest.raises(ReproError, match="cannot size the runs"):
        iterations_in(1.0, 0.0)


def test_minutes_per_method_sizes_the_runs_without_running_them(tmp_path):
    """minutes_per_method times a few tiny NeurMAP and motion-pretraining iterations in process and records the
    counts that fit; the settings stay as composed, and the fine-tune commands carry the NeurMAP count."""
    pytest.importorskip("skimage")
    run = tiny_run(tmp_path, "minutes_per_method=0.05")
    run.iterations = {"mini_neurmap": 2, "mini_motion": 2}
    run.start = "null"
    data.build_data(run.cfg, run.work / "data")
    fit_iterations(run, ["mini_neurmap", "mini_motion"], timed=2, warmup=1)
    assert run.cfg.iterations == 2 and run.cfg.motion_iterations == 2  # as composed
    sized = run.iterations["mini_neurmap"]
    assert sized >= 1 and run.iterations["mini_motion"] >= 1
    assert [stage.name for stage, _, _ in run.stages] == ["time mini_neurmap", "time mini_motion"]
    assert all("iterations in 0.05 min" in note for _, _, note in run.stages)
    assert f"iterations={sized} " in sweep(run, "all", ["baseline"], False).command


def test_paired_difference_matches_only_shared_images():
    a = [{"name": "x", "psnr": "30"}, {"name": "y", "psnr": "28"}, {"name": "z", "psnr": "27"}]
    b = [{"name": "x", "psnr": "29"}, {"name": "y", "psnr": "27.5"}, {"name": "w", "psnr": "20"}]
    mean, se, n = report.paired_difference(a, b, "psnr")
    # differences 1.0 and 0.5 (z and w are unmatched): mean 0.75, sd 0.3536, se = sd / sqrt(2) = 0.25
    assert n == 2 and mean == pytest.approx(0.75) and se == pytest.approx(0.25)
    assert report.paired_difference(a, [{"name": "q", "psnr": "1"}], "psnr")[2] == 0


@pytest.mark.parametrize(
    ("mean", "se", "n", "lower", "word"),
    [
        (0.6, 0.16, 16, False, "ahead"),
        (-0.6, 0.16, 16, False, "behind"),  # PSNR down by 3.75 s.e.
        (0.01, 0.01, 16, False, "level"),  # ahead on the mean, but within 2 s.e.
        (-0.0004, 0.0002, 16, True, "level"),  # exactly 2 s.e. is not "more than twice"
        (0.0012, 0.0005, 16, True, "behind"),  # LPIPS up by 2.4 s.e.
        (1.0, float("nan"), 1, False, "unknown"),
    ],
)
def test_standing_words_a_difference_against_its_noise(mean, se, n, lower, word):
    assert report.standing(mean, se, n, lower) == word


def _rows(**psnr: float) -> list[dict[str, str]]:
    return [{"name": name, "psnr": str(value), "lpips": str(1 - value / 100)} for name, value in psnr.items()]


def test_target_verdicts_compare_neurmap_with_both_references_per_image():
    per_image = {
        "neurmap": _rows(a=30.0, b=31.0, c=29.0),
        "start": _rows(a=28.0, b=29.2, c=26.8),  # NeurMAP +2.0, +1.8, +2.2 dB: far beyond 2 s.e.
        "baseline": _rows(a=30.1, b=30.8, c=29.1),  # -0.1, +0.2, -0.1: within noise
    }
    found = {(v["reference"], v["metric"]): v for v in report.target_verdicts(per_image)}
    assert set(found) == {("start", "psnr"), ("start", "lpips"), ("baseline", "psnr"), ("baseline", "lpips")}
    assert found["start", "psnr"]["met"] and found["start", "psnr"]["mean"] == pytest.approx(2.0)
    assert found["start", "lpips"]["met"]  # lower LPIPS (it is 1 - PSNR/100 here) is ahead
    assert not found["baseline", "psnr"]["met"] and found["baseline", "psnr"]["n"] == 3
    assert not report.target_verdicts({"neurmap": per_image["neurmap"]})[0]["met"]  # no reference rows


@pytest.mark.parametrize(
    ("epe", "zero", "reading"),
    [(5.0, 10.0, "learned"), (9.0, 10.0, "partial"), (9.8, 10.0, "none"), (float("nan"), 10.0, None)],
)
def test_motion_learning_against_the_zero_map(epe, zero, reading):
    assert report.motion_learning(epe, zero) == reading


def test_template_refuses_a_missing_value():
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.UndefinedError):
        report.render({"prog": "lab.reproduce_mini"})


def test_reports_show_the_releases_variable_and_relative_paths(monkeypatch, tmp_path):
    releases = tmp_path / "release"
    monkeypatch.setenv("NEURMAP_RELEASES", str(releases))
    monkeypatch.chdir(tmp_path)
    line = f"neurmap.train model.deblur.pretrained={releases}/weights/dmphn_1_2_4 hydra.run.dir={tmp_path}/logs/run"
    expected = "neurmap.train model.deblur.pretrained=$NEURMAP_RELEASES/weights/dmphn_1_2_4 hydra.run.dir=logs/run"
    assert shown(line) == expected


def test_a_finished_sweep_of_the_same_command_is_reused_and_an_unfinished_one_is_not(tmp_path):
    import json as _json

    from lab.mini.run import RECORD, finished

    argv = ["-m", "neurmap.train", "-m", "variant=neurmap"]
    sweep_dir = tmp_path / "sweep"
    for job in ("0_neurmap-unet", "1_net2-unet"):
        (sweep_dir / job).mkdir(parents=True)
    (sweep_dir / RECORD).write_text(_json.dumps({"argv": argv, "config": "abc"}))
    (sweep_dir / "0_neurmap-unet" / "final_metrics.json").write_text("{}")
    assert not finished(sweep_dir, argv, "abc")  # one job has not finished
    (sweep_dir / "1_net2-unet" / "final_metrics.json").write_text("{}")
    assert finished(sweep_dir, argv, "abc")
    assert not finished(sweep_dir, [*argv, "iterations=5"], "abc")  # another command
    assert not finished(sweep_dir, argv, "abd")  # the same command over other configs
