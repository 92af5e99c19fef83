"""The evaluation command: metrics per image and per set, protocols, motion error, bad input."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from neurmap.metrics.motion import motion_epe, motion_errors, motion_mse
from neurmap.tasks.evaluation import evaluate, output_dir
from neurmap.tasks.training import train
from tests import fake_data
from tests.conftest import compose, tiny_overrides
from tests.helpers import checksums


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose(tiny_overrides("test=false"), run))
    return run / "checkpoints" / "last.ckpt"


def _eval_cfg(tmp_path, *overrides):
    return compose(["progress=false", *overrides], tmp_path / "hydra", config_name="evaluate")


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_motion_error_is_zero_for_the_ground_truth_and_sign_invariant():
    gt = torch.randn(2, 2, 8, 9, generator=torch.Generator().manual_seed(0)) * 5
    # canonical (horizontal >= 0, as read_mfmap returns it) and at least 2 px horizontally, so that gt + 1 is
    # nearer to gt than to -gt at every pixel (the sign-invariant errors then pick the + branch)
    gt[:, 1] = gt[:, 1].abs() + 2.0
    assert motion_mse(gt, gt).abs().max() < 1e-12 and motion_epe(gt, gt).abs().max() < 1e-12
    assert torch.allclose(motion_mse(-gt, gt), motion_mse(gt, gt)) and motion_epe(-gt, gt).abs().max() < 1e-12
    pred = gt + 1.0
    assert torch.allclose(motion_mse(pred, gt), torch.full((2,), 1.0, dtype=torch.float64))  # mean over u and v
    assert torch.allclose(motion_epe(pred, gt), torch.full((2,), 2**0.5, dtype=torch.float64))
    raw = gt / 40  # M's units: full length = 40 |m|
    errors = motion_errors(raw, gt, alpha=40.0, authors_scale=20.0)
    assert errors["motion_mse_full"].abs().max() < 1e-12
    expected = (gt / 2).pow(2).mean(dim=(1, 2, 3)).double()  # x20 is half the full length
    assert torch.allclose(errors["motion_mse_authors"], expected)


def test_evaluate_kernel_synth_writes_tables_with_motion_error(ckpt, tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("NEURMAP_DATA", str(fake_data_root))
    out = tmp_path / "eval"
    summaries = evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", "data=kernel_synth", f"output_dir={out}"))
    assert [s["set"] for s in summaries] == ["kernel_synth"] and summaries[0]["images"] == 3
    rows = _rows(out / "kernel_synth_per_image.csv")
    assert len(rows) == 3 and rows[0]["protocol"] == "plain"
    for key in ("psnr", "ssim_torchmetrics", "input_psnr", "motion_mse_authors", "motion_mse_full", "motion_epe"):
        assert all(float(r[key]) >= 0 for r in rows), key
    # every fake motion map is 3 px long everywhere: a zero map is 3 px off
    assert all(abs(float(r["motion_epe_zero"]) - 3.0) < 1e-6 for r in rows)
    # the fake blur is a 3-tap box of 3 px: the input PSNR is finite and the same as PSNR(B, S)
    assert abs(summaries[0]["input_psnr"] - sum(float(r["input_psnr"]) for r in rows) / 3) < 1e-9
    table = (out / "summary.md").read_text()
    assert "| kernel_synth | plain | 3 | 0 |" in table and "motion_epe" in table
    assert _rows(out / "summary.csv")[0]["set"] == "kernel_synth"
    # the run folder's record, read by neurmap.collect for evaluation sweeps: the same means, by split/set/metric
    record = json.loads((tmp_path / "hydra" / "final_metrics.json").read_text())
    assert record["output_dir"] == str(out) and record["ckpt"] == str(ckpt)
    assert record["metrics"]["test/kernel_synth/psnr"] == summaries[0]["psnr"]
    assert record["metrics"]["test/kernel_synth/motion_epe"] == summaries[0]["motion_epe"]
    assert "test/kernel_synth/images" not in record["metrics"]  # counts are not metrics


def test_realblur_sets_use_the_aligned_protocol(ckpt, tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("NEURMAP_DATA", str(fake_data_root))
    out = tmp_path / "eval"
    evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", "data=realblur", f"output_dir={out}", "metrics.niqe=false"))
    rows = _rows(out / "realblur_per_image.csv")
    assert len(rows) == 4 and {r["protocol"] for r in rows} == {"realblur"}
    assert all(float(r["psnr"]) > 10 for r in rows)


def test_unreadable_images_are_skipped_and_counted(ckpt, tmp_path, monkeypatch, capsys):
    from tests import fake_data

    root = tmp_path / "data"
    base = fake_data.urb(root)
    (base / "test" / "scene0" / "test_0.png").write_bytes(b"broken")
    monkeypatch.setenv("NEURMAP_DATA", str(root))
    fake_data.gopro(root)  # data=urb's paired set, under NEURMAP_DATA
    out = tmp_path / "eval"
    summaries = evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", "data=urb", f"output_dir={out}", "sets=[urb]"))
    assert summaries[0]["images"] == 3 and summaries[0]["failed"] == 1
    assert "test_0.png: not a readable image" in capsys.readouterr().err


def test_missing_lpips_weights_give_one_line_and_the_rest_runs(ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    cfg = _eval_cfg(tmp_path, f"ckpt={ckpt}", f"output_dir={out}", f"metrics.lpips_weights={tmp_path}/none.ckpt")
    evaluate(cfg)
    err = capsys.readouterr().err
    assert "LPIPS skipped:" in err
    rows = _rows(out / "builtin_camera_per_image.csv")
    assert "lpips" not in rows[0] and float(rows[0]["psnr"]) > 0


def test_default_output_is_next_to_the_checkpoint(ckpt, tmp_path):
    cfg = _eval_cfg(tmp_path, f"ckpt={ckpt}", "split=val")
    assert output_dir(cfg, "builtin") == ckpt.parent.parent / "eval" / "builtin-val"


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from neurmap.evaluate import main as evaluate_main

    monkeypatch.setenv("NEURMAP_LOG_DIR", str(tmp_path))
    for args, message in (([], "ckpt=PATH is required"), ([f"ckpt={tmp_path}/x.ckpt"], "x.ckpt does not exist")):
        assert evaluate_main(args) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("neurmap.evaluate: error:") and message in last, last
    assert list(tmp_path.glob("evaluate/runs/*")) == []  # a usage error leaves no run folder


LIGHT = ["progress=false", "metrics.lpips=false", "metrics.niqe=false"]


def _evaluate_main(tmp_path, *args, run="hydra-cli"):
    from neurmap.evaluate import main as evaluate_main

    return evaluate_main([*LIGHT, *args, f"hydra.run.dir={tmp_path / run}"])


def test_another_checkpoint_in_an_output_folder_is_refused(ckpt, tmp_path, capsys):
    out = tmp_path / "runA-eval"
    evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", f"output_dir={out}", *LIGHT))
    capsys.readouterr()
    before = checksums(out)
    other = tmp_path / "runB.ckpt"
    other.write_bytes(ckpt.read_bytes())
    assert _evaluate_main(tmp_path, f"ckpt={other}", f"output_dir={out}") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"neurmap.evaluate: error: the results in output_dir={out} were made by another run (eval_settings.json: "
        f"ckpt={ckpt} -> {other}); pass overwrite=true to replace them, or choose another output"
    )
    assert checksums(out) == before and not (tmp_path / "hydra-cli").exists()


def test_other_data_in_an_output_folder_is_refused_and_the_summary_names_its_data(ckpt, tmp_path, capsys):
    first, second = fake_data.folders(tmp_path / "d1"), fake_data.folders(tmp_path / "d2", seed=5)
    out = tmp_path / "eval"
    evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", "data=folders", f"paths.folders={first}", f"output_dir={out}", *LIGHT))
    assert f"- folders: {first}/paired/test" in (out / "summary.md").read_text()
    capsys.readouterr()
    before = checksums(out)
    assert _evaluate_main(tmp_path, f"ckpt={ckpt}", "data=folders", f"paths.folders={second}", f"output_dir={out}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"neurmap.evaluate: error: the results in output_dir={out} were made by another run")
    assert "sets=" in err and "overwrite=true" in err and len(err.splitlines()) == 1
    assert checksums(out) == before


def test_default_output_of_release_weights_is_under_the_log_folder(tmp_path):
    weights = tmp_path / "weights" / "unet.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    cfg = _eval_cfg(tmp_path, f"ckpt={weights}", "backbone=unet", f"paths.log_dir={tmp_path / 'logs'}")
    assert output_dir(cfg, "builtin") == tmp_path / "logs" / "evaluate" / "unet" / "builtin-test"


def test_an_unreadable_image_exits_1_with_the_count(ckpt, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    base = fake_data.urb(root)
    (base / "test" / "scene0" / "test_0.png").write_bytes(b"broken")
    monkeypatch.setenv("NEURMAP_DATA", str(root))
    fake_data.gopro(root)  # data=urb's paired set, under NEURMAP_DATA
    args = [f"ckpt={ckpt}", "data=urb", "sets=[urb]"]
    assert _evaluate_main(tmp_path, *args, f"output_dir={tmp_path / 'a'}") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "neurmap.evaluate: error: 1 image(s) could not be read and were skipped (on_error=skip: exit 0)"
    assert _evaluate_main(tmp_path, *args, f"output_dir={tmp_path / 'b'}", "on_error=skip", run="hydra-skip") == 0


def test_ckpt_release_scores_the_releases_entry_and_a_missing_one_is_one_line(tmp_path, monkeypatch, capsys):
    """`ckpt=release:<name>` scores `$NEURMAP_RELEASES/weights/<name>` (its results under the log folder, named
    after it); without the variable, one line and no run folder."""
    from hydra.utils import instantiate

    from neurmap.config import backbone_node

    releases = tmp_path / "releases"
    (releases / "weights").mkdir(parents=True)
    weights = releases / "weights" / "unet.pth"
    torch.save(instantiate(backbone_node("unet").net).state_dict(), weights)
    logs, args = tmp_path / "logs", ["ckpt=release:unet.pth", "backbone=unet", "sets=[builtin_camera]"]
    monkeypatch.delenv("NEURMAP_RELEASES", raising=False)
    assert _evaluate_main(tmp_path, *args, f"paths.log_dir={logs}") == 2
    assert capsys.readouterr().err.strip() == (
        "neurmap.evaluate: error: release:unet.pth needs NEURMAP_RELEASES=<folder> holding weights/unet.pth "
        "(a release folder or file; see README 'Released weights')"
    )
    assert not (tmp_path / "hydra-cli").exists()
    monkeypatch.setenv("NEURMAP_RELEASES", str(releases))
    assert _evaluate_main(tmp_path, *args, f"paths.log_dir={logs}") == 0
    out = logs / "evaluate" / "unet" / "builtin-test"
    assert json.loads((out / "eval_settings.json").read_text())["ckpt"] == str(weights)
    assert _rows(out / "builtin_camera_per_image.csv")


def test_sigterm_mid_scoring_stops_with_one_line_and_status_1(ckpt, tmp_path, monkeypatch, capsys):
    """SIGTERM while the second image is scored: exit 1, one line saying how to go on, no summary."""
    import signal

    from neurmap.tasks import evaluation

    calls, tiled = [], evaluation.tiled

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return tiled(*args, **kwargs)

    monkeypatch.setattr(evaluation, "tiled", stop_at_the_second)
    out = tmp_path / "eval"
    assert _evaluate_main(tmp_path, f"ckpt={ckpt}", f"output_dir={out}") == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (
        "neurmap.evaluate: error: stopped by SIGTERM; run it again to score every image (no summary was written)"
    )
    assert "Traceback" not in err and len(calls) == 2
    assert (out / "eval_settings.json").is_file() and not (out / "summary.csv").exists()
