"""neurmap.reproduce_mini: the mini reproduction pipeline end to end on a tiny setting, its data and its errors.

The pipeline test uses the from-scratch fallback (no released weights), the small U-Net and 2 iterations
per run, so it takes well under a minute on 2 CPU cores. scikit-image provides the photographs; without it
the tests that need them skip.
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest

from neurmap.experiments import reproduce_mini as rm

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
    args += ["--motion-iterations", "2", "--motion-set", "model.motion_net.width=8", "--motion-set", "logger=none"]
    for item in TINY_SET:
        args += ["--set", item]
    return [*args, *extra]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("skimage")
    tmp_path = tmp_path_factory.mktemp("mini")
    assert rm.main(_tiny_args(tmp_path)) == 0
    return tmp_path, (tmp_path / "reports" / "mini_reproduction.md").read_text()


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
    for name in expected:
        assert any(label.startswith(name) for label in labels), (name, labels)
    assert len(rows) == len(expected)
    for label, cells in rows.items():
        for cell in cells[:4]:  # PSNR, SSIM, LPIPS, NIQE
            assert math.isfinite(_number(cell)), (label, cells)
        has_motion = label.startswith(("NeurMAP", "Net2", "Net3"))
        motion = cells[4:7]
        assert all(c != "—" for c in motion) == has_motion, (label, motion)
        if has_motion:
            assert all(math.isfinite(_number(c)) for c in motion)
    start = next(label for label in labels if label.startswith("baseline trained here"))
    assert _number(rows["blurry input"][0]) != _number(rows[start][0])


@pytest.mark.slow  # the module fixture runs the whole pipeline
def test_report_states_the_fallback_commands_times_and_paper_comparison(report):
    tmp_path, text = report
    assert "The released weights were not found" in text
    assert "python -m neurmap.train experiment=mini_scratch" in text
    assert text.count("python -m neurmap.train experiment=mini_neurmap") == 5  # supervised, neurmap, net1-3
    assert text.count("python -m neurmap.train experiment=mini_motion") == 1
    motion_ckpt = "model.motion_pretrained=" + str(tmp_path / "work" / "runs" / "motion_pretrain" / "checkpoints")
    commands = [
        line for line in text.splitlines() if line.startswith("python -m neurmap.train experiment=mini_neurmap")
    ]
    with_m = {line.split("variant=")[1].split()[0] for line in commands if motion_ckpt in line}
    assert with_m == {"neurmap", "net2", "net3"}, commands  # the variants with M start from the pretrained one
    assert re.search(r"^\| pretrain M \| ", text, re.M)
    assert "python -m neurmap.evaluate ckpt=" in text and "data=kernel_synth" in text
    assert "+0.93 dB" in text and "0.236 → 0.124" in text
    times = re.findall(r"^\| (?:train|evaluate|build) .*? \| ([0-9.]+ s|\d+ min [0-9.]+ s) \|", text, re.M)
    assert len(times) == 1 + 6 + 6  # data, 6 trainings (scratch + 5 fine-tunes), 6 evaluations (start + 5)
    assert "seed=0" in text and "total wall time" in text
    for name in ("scratch_baseline", "baseline", "neurmap", "net1", "net2", "net3"):
        assert (tmp_path / "work" / "runs" / name / "checkpoints" / "last.ckpt").is_file(), name


def test_data_is_deterministic_cached_and_split_by_photograph(tmp_path):
    pytest.importorskip("skimage")
    opts = rm.parse_args(_tiny_args(tmp_path))
    first = rm.build_data(opts, tmp_path / "a")
    again = rm.build_data(opts, tmp_path / "a")
    assert again == first and first["counts"] == {"paired": 4, "unpaired": 4, "val": 2, "test": 1}
    rm.build_data(opts, tmp_path / "b")
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
    changed = rm.parse_args([*_tiny_args(tmp_path), "--seed", "1"])
    rm.build_data(changed, tmp_path / "a")  # other settings: rebuilt in place
    assert (tmp_path / "a" / "paired/train/coins_1_blurryimg.png").read_bytes() != (
        tmp_path / "b" / "paired/train/coins_1_blurryimg.png"
    ).read_bytes()


def test_photos_are_rgb_in_unit_range():
    pytest.importorskip("skimage")
    for name in ("camera", "motorcycle_right"):
        photo = rm.load_photo(name)
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.float32
        assert photo.min() >= 0.0 and photo.max() <= 1.0
    with pytest.raises(rm.ReproError, match="no image 'nope'"):
        rm.load_photo("nope")


def test_test_crops_are_a_deterministic_grid():
    boxes = rm._crop_boxes((400, 600), 288, 4, None)
    assert boxes == [(0, 0, 288, 288), (0, 312, 288, 288), (112, 0, 288, 288), (112, 312, 288, 288)]
    assert rm._crop_boxes((100, 80), 288, 1, None) == [(0, 0, 100, 80)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-photos", "camera", "--test-photos", "camera"], "in both --train-photos and --test-photos"),
        (["--variants", "net1"], "--variants must include neurmap"),
        (["--paired-length", "5", "2"], "--paired-length"),
        (["--synth", "kernel.nope=1"], "--synth: unknown setting 'kernel.nope'"),
        (["--minutes-per-method", "0"], "--minutes-per-method must be > 0"),
        (["--report-name", "a/b"], "--report-name must be a file name"),
    ],
)
def test_bad_options_end_with_one_line(tmp_path, capsys, args, message):
    if "--synth" in args:
        pytest.importorskip("skimage")
    assert rm.main(["--work", str(tmp_path / "w"), "--data-only", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurmap.reproduce_mini: error:") and message in err[0], err


def test_missing_scikit_image_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    assert rm.main(["--work", str(tmp_path / "w"), "--data-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scikit-image is not installed" in err and "pip install" in err


def test_bad_training_override_stops_before_any_training(tmp_path, capsys):
    pytest.importorskip("skimage")
    assert rm.main(_tiny_args(tmp_path, "--set", "nope.key=1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("neurmap.reproduce_mini: error: neurmap.train overrides of scratch_baseline")
    assert "nope.key" in err[-1] and not (tmp_path / "work" / "runs").exists()


def test_iterations_in_a_time_budget():
    assert rm.iterations_in(2.0, 0.5) == 240
    assert rm.iterations_in(1.0, 7.0) == 8  # whole iterations only: 60 // 7
    assert rm.iterations_in(0.001, 10.0) == 1  # never zero
    with pytest.raises(rm.ReproError, match="cannot size the runs"):
        rm.iterations_in(1.0, 0.0)


@pytest.mark.slow
def test_minutes_per_method_sizes_every_run_and_names_the_report(tmp_path):
    """The GPU recipe's mechanism (make reproduce-gpu), on CPU with tiny settings: iterations come from timing,
    the fine-tunes get the NeurMAP count, and the report and figure carry --report-name."""
    pytest.importorskip("skimage")
    args = _tiny_args(tmp_path, "--variants", "neurmap", "--minutes-per-method", "0.01")
    args += ["--report-name", "gpu_reproduction"]
    assert rm.main(args) == 0
    text = (tmp_path / "reports" / "gpu_reproduction.md").read_text()
    assert (tmp_path / "reports" / "gpu_reproduction.png").is_file()
    assert not (tmp_path / "reports" / "mini_reproduction.md").exists()
    sized = dict(re.findall(r"time (neurmap|motion_pretrain)\b.*?-> (\d+) iterations in 0.01 min", text))
    assert set(sized) == {"neurmap", "motion_pretrain"}, text
    train_lines = [line for line in text.splitlines() if "python -m neurmap.train" in line]
    fine_tunes = [line for line in train_lines if "experiment=mini_neurmap" in line]
    assert fine_tunes and all(f"iterations={sized['neurmap']}" in line for line in fine_tunes), fine_tunes
    assert any(f"iterations={sized['motion_pretrain']}" in line for line in train_lines if "mini_motion" in line)


def test_paired_difference_matches_only_shared_images():
    a = [{"name": "x", "psnr": "30"}, {"name": "y", "psnr": "28"}, {"name": "z", "psnr": "27"}]
    b = [{"name": "x", "psnr": "29"}, {"name": "y", "psnr": "27.5"}, {"name": "w", "psnr": "20"}]
    mean, se, n = rm.paired_difference(a, b, "psnr")
    # differences 1.0 and 0.5 (z and w are unmatched): mean 0.75, sd 0.3536, se = sd / sqrt(2) = 0.25
    assert n == 2 and mean == pytest.approx(0.75) and se == pytest.approx(0.25)
    assert rm.paired_difference(a, [{"name": "q", "psnr": "1"}], "psnr")[2] == 0


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
    assert rm.ahead_by_two_se(mean, se, n, lower) is ahead
