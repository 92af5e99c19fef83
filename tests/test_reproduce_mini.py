"""neurmap.reproduce_mini: the mini reproduction end to end on a tiny setting (its stages are subprocess Hydra
runs and multiruns, then the collector and the report's template), its data, its verdicts and its errors.

The pipeline test uses the from-scratch fallback (no released weights), the small U-Net and 2 iterations
per run, so it takes about a minute on 2 CPU cores. scikit-image provides the photographs; without it
the tests that need them skip.
"""

from __future__ import annotations

import csv
import math
import re
import sys

import numpy as np
import pytest

from neurmap import reproduce_mini as entry
from neurmap.experiments.mini import data, options, verdicts
from neurmap.experiments.mini import report as mini_report
from neurmap.experiments.mini.common import ReproError

# Tiny networks and crops for every training run (shown in the report's commands like any --set).
TINY_SET = [
    "backbone.net.width=8",
    "model.motion_net.width=8",
    "model.discriminator.width=8",
    "model.discriminator.n_layers=2",
    "data.paired.transform.crop_size=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
]
TINY_DATA = [
    "--train-photos",
    "chelsea,coins",
    "--test-photos",
    "camera",
    "--crop",
    "240",
    "--train-crops",
    "2",
    "--test-crops",
    "1",
]


def _tiny_args(tmp_path, *extra: str) -> list[str]:
    args = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "reports"), "--backbone", "unet"]
    args += ["--weights", str(tmp_path / "absent"), "--iterations", "2", "--scratch-iterations", "2", *TINY_DATA]
    args += ["--jobs", "2"]
    args += ["--motion-iterations", "2", "--motion-set", "model.motion_net.width=8", "--motion-set", "logger=none"]
    args += ["--motion-set", "data.paired.crop_size=32", "--motion-set", "data.val.random_blur.samples=2"]
    for item in TINY_SET:
        args += ["--set", item]
    return [*args, *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One tiny run of the whole pipeline, sized by --minutes-per-method (the GPU recipe's mechanism) and
    written under another --report-name."""
    pytest.importorskip("skimage")
    tmp_path = tmp_path_factory.mktemp("mini")
    args = _tiny_args(tmp_path, "--minutes-per-method", "0.01", "--report-name", "tiny_reproduction")
    assert entry.main(args) == 0
    assert not (tmp_path / "reports" / "mini_reproduction.md").exists()
    assert (tmp_path / "reports" / "tiny_reproduction.png").is_file()
    return tmp_path, (tmp_path / "reports" / "tiny_reproduction.md").read_text()


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the results table: label -> cells."""
    section = text.split("## Results", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def _number(cell: str) -> float:
    return float(re.sub(r"[^0-9eE.+-]", "", cell))


@pytest.mark.slow  # the module fixture runs the whole pipeline
def test_report_has_every_row_with_numeric_metrics(report):
    _, text = report
    rows = _table(text)
    reference = rows.pop("*reference: motion map of zero*")
    assert reference[:4] == ["—"] * 4 and all(math.isfinite(_number(c)) for c in reference[4:7])
    labels = list(rows)
    expected = ["blurry input", "baseline trained here", "supervised fine-tune", "NeurMAP", "Net1", "Net2", "Net3"]
    expected += ["*ablation:* NeurMAP with oracle motion", "*ceiling:* supervised on the target family's own pairs"]
    for name in expected:
        assert any(label.startswith(name) for label in labels), (name, labels)
    assert len(rows) == len(expected)
    for label, cells in rows.items():
        for cell in cells[:4]:  # PSNR, SSIM, LPIPS, NIQE
            assert math.isfinite(_number(cell)), (label, cells)
        has_motion = label.startswith(("NeurMAP", "Net2", "Net3", "*ablation:*"))
        motion = cells[4:7]
        assert all(c != "—" for c in motion) == has_motion, (label, motion)
        reblur_signal, true_signal = cells[7:9]  # cosines of the reblur term, with M's and with the true motion
        assert (reblur_signal != "—") == has_motion, (label, cells)
        if has_motion:
            assert all(math.isfinite(_number(c)) for c in motion)
            assert -1 <= _number(reblur_signal) <= 1 and -1 <= _number(true_signal) <= 1
    start = next(label for label in labels if label.startswith("baseline trained here"))
    assert _number(rows["blurry input"][0]) != _number(rows[start][0])


def test_stages_are_the_commands_a_user_would_type(tmp_path):
    """The fine-tune sweeps, the ceiling and the evaluation as commands (what the report prints), composed
    without running anything: the variants with M start it from the pretraining run, the others do not."""
    from neurmap.experiments.mini.pipeline import check_configs, evaluation_stage, sweep_stage, training_stage
    from neurmap.experiments.mini.plan import CEILING, Plan

    opts = options.parse_args(_tiny_args(tmp_path))
    plan = Plan(opts, tmp_path / "work", start_weights="start/last.ckpt", motion_ckpt="motion/last.ckpt")
    with_m = sweep_stage(plan, "with_motion", ["neurmap", "net2", "net3", "oracle_motion"], True)
    without_m = sweep_stage(plan, "without_motion", ["baseline", "net1"], False)
    ceiling = training_stage(plan, "fine-tune ceiling", "mini_neurmap", "ceiling", CEILING)
    plan.ckpts = {"start": "start/last.ckpt"} | {v: f"runs/{v}/last.ckpt" for v in ("baseline", "neurmap", "net1")}
    evaluation = evaluation_stage(plan)
    for stage in (with_m, without_m):
        assert stage.command.startswith("OMP_NUM_THREADS=1 python -m neurmap.train -m cluster=joblib")
        assert "experiment=mini_neurmap" in stage.command and "seed=0" in stage.command
    assert "variant=neurmap,net3,oracle_motion,net2 " in with_m.command  # the longest first
    assert "model.motion_pretrained=motion/last.ckpt" in with_m.command
    assert "variant=net1,baseline " in without_m.command and "motion_pretrained" not in without_m.command
    assert "variant=baseline" in ceiling.command and "kernel_synth/train" in ceiling.command
    assert "hydra.run.dir=" in ceiling.command and "ceiling" in ceiling.command
    ckpts = re.search(r"ckpt=(\S+)", evaluation.command).group(1).split(",")
    assert len(ckpts) == 4 and "data=kernel_synth" in evaluation.command and "metrics.signal=true" in evaluation.command
    check_configs([with_m, without_m, ceiling, evaluation])  # every job composes


@pytest.mark.slow  # the module fixture runs the whole pipeline
def test_report_numbers_are_the_collectors_table(report):
    """The results table is read from neurmap.collect's sweep_summary.csv of the evaluation sweep."""
    tmp_path, text = report
    with open(tmp_path / "work" / "sweeps" / "evaluate" / "sweep_summary.csv") as handle:
        rows = {r["ckpt"]: r for r in csv.DictReader(handle)}
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows.values())
    (neurmap_ckpt,) = [c for c in rows if "_neurmap-unet" in c]
    table = _table(text)
    label = next(k for k in table if k.startswith("NeurMAP"))
    assert table[label][0] == f"{float(rows[neurmap_ckpt]['test/kernel_synth/psnr']):.2f}"
    assert table[label][2] == f"{float(rows[neurmap_ckpt]['test/kernel_synth/lpips']):.4f}"


def test_data_is_deterministic_cached_and_split_by_photograph(tmp_path):
    pytest.importorskip("skimage")
    opts = options.parse_args(_tiny_args(tmp_path))
    first = data.build_data(opts, tmp_path / "a")
    again = data.build_data(opts, tmp_path / "a")
    assert again == first and first["counts"] == {"paired": 4, "unpaired": 4, "val": 2, "test": 1}
    data.build_data(opts, tmp_path / "b")
    for rel in ("paired/train/coins_1_blurryimg.png", "kernel_synth/test/camera_0_000_blurryimg.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    names = {p.name.split("_")[0] for p in (tmp_path / "a" / "kernel_synth" / "test").iterdir()}
    assert names == {"camera"}
    trained = {p.name.split("_")[0] for p in (tmp_path / "a").glob("*/train/**/*.png")}
    assert trained == {"chelsea", "coins"}
    validated = {p.name.split("_")[0] for p in (tmp_path / "a" / "kernel_synth" / "val").glob("*.png")}
    assert validated == {"chelsea", "coins"}  # validation crops come from training photographs only
    # the paired set's motion is its uniform blur: one vector per image, canonical, of the drawn length
    from neurmap.data.io import read_mfmap

    for path in (tmp_path / "a" / "paired" / "train").glob("*_mfmap.mat"):
        motion = read_mfmap(path)
        assert (motion == motion[:, :1, :1]).all() and motion[1, 0, 0] >= 0
        assert 3.0 <= float(motion[:, 0, 0].norm()) <= 19.0
    changed = options.parse_args([*_tiny_args(tmp_path), "--seed", "1"])
    data.build_data(changed, tmp_path / "a")  # other settings: rebuilt in place
    assert (tmp_path / "a" / "paired/train/coins_1_blurryimg.png").read_bytes() != (
        tmp_path / "b" / "paired/train/coins_1_blurryimg.png"
    ).read_bytes()


def test_photos_are_rgb_in_unit_range():
    pytest.importorskip("skimage")
    for name in ("camera", "motorcycle_right"):
        photo = data.load_photo(name)
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.float32
        assert photo.min() >= 0.0 and photo.max() <= 1.0
    with pytest.raises(ReproError, match="no image 'nope'"):
        data.load_photo("nope")


def test_test_crops_are_a_deterministic_grid():
    boxes = data._crop_boxes((400, 600), 288, 4, None)
    assert boxes == [(0, 0, 288, 288), (0, 312, 288, 288), (112, 0, 288, 288), (112, 312, 288, 288)]
    assert data._crop_boxes((100, 80), 288, 1, None) == [(0, 0, 100, 80)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-photos", "camera", "--test-photos", "camera"], "in both --train-photos and --test-photos"),
        (["--variants", "net1"], "--variants must include neurmap"),
        (["--paired-length", "5", "2"], "--paired-length"),
        (["--synth", "kernel.nope=1"], "--synth: unknown key 'kernel.nope'"),
        (["--minutes-per-method", "0"], "--minutes-per-method must be > 0"),
        (["--report-name", "a/b"], "--report-name must be a file name"),
    ],
)
def test_bad_options_end_with_one_line(tmp_path, capsys, args, message):
    if "--synth" in args:
        pytest.importorskip("skimage")
    assert entry.main(["--work", str(tmp_path / "w"), "--data-only", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurmap.reproduce_mini: error:") and message in err[0], err


def test_missing_scikit_image_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    assert entry.main(["--work", str(tmp_path / "w"), "--data-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scikit-image is not installed" in err and "pip install" in err


def test_bad_training_override_stops_before_any_training(tmp_path, capsys):
    pytest.importorskip("skimage")
    assert entry.main(_tiny_args(tmp_path, "--set", "nope.key=1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("neurmap.reproduce_mini: error: neurmap.train overrides of train scratch start")
    assert "nope.key" in err[-1] and not (tmp_path / "work" / "runs").exists()


def test_iterations_in_a_time_budget():
    assert verdicts.iterations_in(2.0, 0.5) == 240
    assert verdicts.iterations_in(1.0, 7.0) == 8  # whole iterations only: 60 // 7
    assert verdicts.iterations_in(0.001, 10.0) == 1  # never zero
    with pytest.raises(ReproError, match="cannot size the runs"):
        verdicts.iterations_in(1.0, 0.0)


@pytest.mark.slow  # the module fixture runs the whole pipeline
def test_minutes_per_method_sizes_every_run(report):
    """Iterations come from timing; every fine-tune gets the NeurMAP count, so D iterations stay equal."""
    _, text = report
    sized = dict(re.findall(r"time (neurmap|motion_pretrain)\b.*?-> (\d+) iterations in 0.01 min", text))
    assert set(sized) == {"neurmap", "motion_pretrain"}, text
    train_lines = [line for line in text.splitlines() if "python -m neurmap.train" in line]
    fine_tunes = [line for line in train_lines if "experiment=mini_neurmap" in line]
    assert len(fine_tunes) == 3 and all(f"iterations={sized['neurmap']} " in line for line in fine_tunes), fine_tunes
    assert any(f"iterations={sized['motion_pretrain']} " in line for line in train_lines if "mini_motion" in line)


def test_paired_difference_matches_only_shared_images():
    a = [{"name": "x", "psnr": "30"}, {"name": "y", "psnr": "28"}, {"name": "z", "psnr": "27"}]
    b = [{"name": "x", "psnr": "29"}, {"name": "y", "psnr": "27.5"}, {"name": "w", "psnr": "20"}]
    mean, se, n = verdicts.paired_difference(a, b, "psnr")
    # differences 1.0 and 0.5 (z and w are unmatched): mean 0.75, sd 0.3536, se = sd / sqrt(2) = 0.25
    assert n == 2 and mean == pytest.approx(0.75) and se == pytest.approx(0.25)
    assert verdicts.paired_difference(a, [{"name": "q", "psnr": "1"}], "psnr")[2] == 0


@pytest.mark.parametrize(
    ("mean", "se", "n", "lower", "ahead"),
    [
        (0.6, 0.16, 16, False, True),  # PSNR up by 3.75 s.e.
        (0.01, 0.01, 16, False, False),  # within 2 s.e.
        (-0.0012, 0.0005, 16, True, True),  # LPIPS down by 2.4 s.e.
        (0.0012, 0.0005, 16, True, False),  # LPIPS up: the wrong way
        (1.0, float("nan"), 1, False, False),  # one image: no standard error, no verdict
    ],
)
def test_ahead_by_two_standard_errors(mean, se, n, lower, ahead):
    assert verdicts.ahead_by_two_se(mean, se, n, lower) is ahead


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
    assert verdicts.standing(mean, se, n, lower) == word


def _rows(**psnr: float) -> list[dict[str, str]]:
    return [{"name": name, "psnr": str(value), "lpips": str(1 - value / 100)} for name, value in psnr.items()]


def test_target_verdicts_compare_neurmap_with_both_references_per_image():
    per_image = {
        "neurmap": _rows(a=30.0, b=31.0, c=29.0),
        "start": _rows(a=28.0, b=29.2, c=26.8),  # NeurMAP +2.0, +1.8, +2.2 dB: far beyond 2 s.e.
        "baseline": _rows(a=30.1, b=30.8, c=29.1),  # -0.1, +0.2, -0.1: within noise
    }
    found = {(v["reference"], v["metric"]): v for v in verdicts.target_verdicts(per_image)}
    assert set(found) == {("start", "psnr"), ("start", "lpips"), ("baseline", "psnr"), ("baseline", "lpips")}
    assert found["start", "psnr"]["met"] and found["start", "psnr"]["mean"] == pytest.approx(2.0)
    assert found["start", "lpips"]["met"]  # lower LPIPS (it is 1 - PSNR/100 here) is ahead
    assert not found["baseline", "psnr"]["met"] and found["baseline", "psnr"]["n"] == 3
    assert not verdicts.target_verdicts({"neurmap": per_image["neurmap"]})[0]["met"]  # no reference rows


@pytest.mark.parametrize(
    ("epe", "zero", "reading"),
    [(5.0, 10.0, "learned"), (9.0, 10.0, "partial"), (9.8, 10.0, "none"), (float("nan"), 10.0, None)],
)
def test_motion_learning_against_the_zero_map(epe, zero, reading):
    assert verdicts.motion_learning(epe, zero) == reading


@pytest.mark.parametrize(
    ("net1", "gaps", "reading"),
    [
        (0.05, [-0.5, -0.3], "loss_with_m"),
        (-0.1, [0.4, 0.3], "gain_with_m"),
        (0.05, [0.4, -0.3], None),  # mixed
        (0.5, [-0.5, -0.3], None),  # the discriminator alone moves it too
        (float("nan"), [-0.5], None),  # no Net1 run
    ],
)
def test_ablation_reading(net1, gaps, reading):
    assert verdicts.ablation_reading(net1, gaps) == reading


def test_share_of_the_papers_gain():
    assert verdicts.share_of_paper(0.465, 0.93) == pytest.approx(50.0)
    assert verdicts.share_of_paper(-0.093, 0.93) == pytest.approx(-10.0)
    assert math.isnan(verdicts.share_of_paper(float("nan"), 0.93))


def test_template_refuses_a_missing_value():
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.UndefinedError):
        mini_report.render({"prog": "neurmap.reproduce_mini"})


def test_minutes_per_method_sizes_the_runs_without_running_them(tmp_path):
    """--minutes-per-method times a few tiny NeurMAP and motion-pretraining iterations in process and stores the
    counts that fit in a copy of the options (the options themselves stay as parsed)."""
    pytest.importorskip("skimage")
    from neurmap.experiments.mini.pipeline import fit_iterations
    from neurmap.experiments.mini.plan import Plan

    opts = options.parse_args(_tiny_args(tmp_path, "--minutes-per-method", "0.05"))
    plan = Plan(opts, tmp_path / "work", start_weights="null")
    plan.work.mkdir()
    data.build_data(opts, plan.data_dir)
    fit_iterations(plan, timed=2, warmup=1)
    assert opts.iterations == 2 and opts.motion_iterations == 2  # as parsed, not mutated
    assert plan.opts.iterations >= 1 and plan.opts.motion_iterations >= 1
    assert [s.name for s in plan.stages] == ["time neurmap", "time motion_pretrain"]
    assert all("iterations in 0.05 min" in s.note for s in plan.stages)


def test_curves_read_lengths_and_val_errors_from_run_records(tmp_path):
    """The length curve reads variant and iterations from each evaluated run's config, the motion curve the val
    EPEs from a run's CSV log (iteration = logged step + 1)."""
    import json

    from neurmap.experiments.mini import curves

    sweep = tmp_path / "evaluate"
    for job, (variant, iterations, psnr) in enumerate([("neurmap", 200, 27.1), ("baseline", 100, 26.9)]):
        run = tmp_path / "runs" / f"{variant}_{iterations}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"variant:\n  name: {variant}\niterations: {iterations}\n")
        record = {
            "ckpt": str(run / "checkpoints" / "last.ckpt"),
            "metrics": {"test/k/psnr": psnr, "test/k/input_psnr": 1.0},
        }
        (sweep / str(job)).mkdir(parents=True)
        (sweep / str(job) / "final_metrics.json").write_text(json.dumps(record))
    rows = curves.length_rows([sweep])
    assert [(r["variant"], r["iterations"], r["psnr"]) for r in rows] == [
        ("baseline", 100, 26.9),
        ("neurmap", 200, 27.1),
    ]
    assert all(math.isnan(r["lpips"]) for r in rows)
    log = tmp_path / "motion" / "csv" / "version_0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text(
        "step,val/a/motion_epe,val/a/motion_epe_zero,train/x\n249,3.5,9.0,\n260,,,1.0\n499,2.5,9.0,\n"
    )
    assert curves._val_epe(tmp_path / "motion") == {250: {"a": 3.5, "a_zero": 9.0}, 500: {"a": 2.5, "a_zero": 9.0}}


def test_reports_show_the_weights_variable_and_relative_paths(monkeypatch, tmp_path):
    from neurmap.experiments.mini.common import shown

    weights = tmp_path / "release" / "dmphn_1_2_4"
    monkeypatch.setenv("NEURMAP_DMPHN_WEIGHTS", str(weights))
    monkeypatch.chdir(tmp_path)
    line = f"python -m neurmap.train backbone.pretrained={weights} hydra.run.dir={tmp_path}/logs/run"
    assert shown(line) == "python -m neurmap.train backbone.pretrained=$NEURMAP_DMPHN_WEIGHTS hydra.run.dir=logs/run"
