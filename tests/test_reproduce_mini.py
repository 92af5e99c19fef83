"""neurmap.reproduce_mini: the mini reproduction end to end on a tiny setting (its stages are subprocess Hydra
runs and multiruns, then the collector and the report's template), its data, its verdicts and its errors.

The pipeline test uses the from-scratch fallback (no released weights), the small U-Net, 2 iterations per run and
only NeurMAP beside the supervised fine-tune. scikit-image provides the photographs; without it the tests that
need them skip.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurmap import reproduce_mini as entry
from neurmap.cli import settings
from neurmap.experiments.mini import data, report
from neurmap.experiments.mini.common import ReproError, shown
from neurmap.experiments.mini.run import (
    Run,
    check_configs,
    evaluation,
    fit_iterations,
    iterations_in,
    side_by_side,
    sweep,
    training,
)

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
    return Run(settings("reproduce_mini", args), args)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny run of the whole pipeline, written under another report_name."""
    pytest.importorskip("skimage")
    tmp_path = tmp_path_factory.mktemp("mini")
    args = tiny(tmp_path, "variants=[neurmap]", "ceiling=false", "report_name=tiny")
    assert entry.main(args) == 0
    assert not (tmp_path / "reports" / "mini_reproduction.md").exists()
    assert (tmp_path / "reports" / "tiny.png").is_file()
    return tmp_path, (tmp_path / "reports" / "tiny.md").read_text()


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the results table: label -> cells."""
    section = text.split("## Results", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run |")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


@pytest.mark.slow  # the module fixture runs the whole pipeline
def test_report_numbers_are_the_collectors_table(finished):
    """Every run has a row; its numbers are those of neurmap.collect's table of the evaluation sweep, and only the
    networks with M have motion errors and signal cosines."""
    tmp_path, text = finished
    with open(tmp_path / "work" / "sweeps" / "evaluate" / "sweep_summary.csv") as handle:
        rows = {r["ckpt"]: r for r in csv.DictReader(handle)}
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows.values())
    table = _table(text)
    labels = ["blurry input", "trained here from scratch", "start: source-converged (", "supervised fine-tune"]
    labels += ["NeurMAP", "*reference: motion map"]
    assert [label[: len(prefix)] for label, prefix in zip(table, labels)] == labels and len(table) == 6
    for job, label in (("_neurmap-unet", "NeurMAP"), ("_baseline-unet", "supervised")):
        (row,) = [r for c, r in rows.items() if job in c]
        cells = next(v for k, v in table.items() if k.startswith(label))
        assert cells[0] == f"{float(row['test/kernel_synth/psnr']):.2f}"
        assert cells[2] == f"{float(row['test/kernel_synth/lpips']):.4f}"
        assert cells[6] == f"{float(row['test/kernel_synth/signal_cos/unpaired']):+.2f}" if label == "NeurMAP" else "—"
        assert (cells[4] != "—") == (label == "NeurMAP") and (cells[5] != "—") == (label == "NeurMAP")
    assert "python -m neurmap.evaluate -m" in text and "## Targets" in text


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
    groups = side_by_side(run, [(with_m, ["neurmap", "net2"]), (alone, ["baseline"]), (oracle, ["oracle_motion"])])
    assert [[stage.name for stage, _ in group] for group in groups] == [
        ["fine-tunes with motion"],
        ["fine-tunes without motion", "fine-tunes oracle motion"],
    ]
    assert alone.command.startswith("OMP_NUM_THREADS=1 ") and oracle.command.startswith("OMP_NUM_THREADS=1 ")
    assert "variant=baseline" in ceiling.command and "hydra.run.dir=" in ceiling.command
    ckpts = re.search(r"ckpt=(\S+)", evaluate.command).group(1).split(",")
    assert len(ckpts) == 4 and "data=kernel_synth" in evaluate.command and "metrics.signal=true" in evaluate.command
    check_configs([with_m, without_m, ceiling, evaluate])  # every job composes


def test_data_is_deterministic_cached_and_split_by_photograph(tmp_path):
    pytest.importorskip("skimage")
    cfg = settings("reproduce_mini", tiny(tmp_path))
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
    data.build_data(settings("reproduce_mini", [*tiny(tmp_path), "seed=1"]), tmp_path / "a")  # rebuilt in place
    name = "paired/train/coins_1_blurryimg.png"
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_the_target_is_gongs_strong_blur_with_its_motion_and_mild_is_one_setting_away(tmp_path):
    """Gong's default (strong) ranges, tx/ty up to 27 px, build the unpaired, val and test sets with their true
    motion; data.synth=[preset=mild] (19 px) gives the milder bed, whose motion is shorter on the same crops."""
    pytest.importorskip("skimage")
    from neurmap.data.io import read_mfmap

    lengths = {}
    for preset, limit in ((None, 27.0), ("mild", 19.0)):
        root = tmp_path / str(preset)
        synth = "data.synth=['preset=mild']" if preset else "data.synth=[]"
        manifest = data.build_data(settings("reproduce_mini", [*tiny(tmp_path), synth]), root)
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
    assert len(err) == 1 and err[0].startswith("neurmap.reproduce_mini: error:") and message in err[0], err


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
    assert err[-1].startswith("neurmap.reproduce_mini: error: neurmap.train overrides of train scratch start")
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
        report.render({"prog": "neurmap.reproduce_mini"})


def test_reports_show_the_releases_variable_and_relative_paths(monkeypatch, tmp_path):
    releases = tmp_path / "release"
    monkeypatch.setenv("NEURMAP_RELEASES", str(releases))
    monkeypatch.chdir(tmp_path)
    line = f"neurmap.train model.deblur.pretrained={releases}/weights/dmphn_1_2_4 hydra.run.dir={tmp_path}/logs/run"
    expected = "neurmap.train model.deblur.pretrained=$NEURMAP_RELEASES/weights/dmphn_1_2_4 hydra.run.dir=logs/run"
    assert shown(line) == expected


def test_a_finished_sweep_of_the_same_command_is_reused_and_an_unfinished_one_is_not(tmp_path):
    import json as _json

    from neurmap.experiments.mini.run import RECORD, finished

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
