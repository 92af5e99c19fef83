"""End-to-end training through `neurmap.train`: fast_dev_run, learning, checkpoints, fine-tuning, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurmap.tasks.training import train
from tests.conftest import REPO, compose, tiny_overrides
from tests.helpers import run_multirun


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def test_fast_dev_run_of_the_default_config(tmp_path):
    cfg = compose(["debug=fdr"], tmp_path / "run")
    assert cfg.variant.name == "neurmap" and cfg.model.deblur.name == "unet" and cfg.loss.name == "paper_literal"
    train(cfg)


def test_tiny_run_writes_checkpoints_metrics_and_panels(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose(tiny_overrides("logger=csv"), run))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = _metrics(run)
    assert _column(rows, "train/motion/weighted/reblur") and _column(rows, "train/deblur/weighted/content")
    assert _column(rows, "val/builtin_camera/psnr") and _column(rows, "val/builtin_camera/reblur_psnr")
    assert _column(rows, "test/builtin_camera/psnr")
    assert list((run / "csv" / "version_0" / "images").glob("val_iter*.png"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["variant"]["name"] == "neurmap"
    out = capsys.readouterr().out
    assert "last.ckpt" in out and "metrics.csv" in out


def test_baseline_checkpoint_starts_a_neurmap_run(tmp_path):
    """model.deblur.pretrained starts D: with D's learning rate at 0, the fine-tune's
    last.ckpt holds exactly the baseline's D weights (and a neurmap run's other networks)."""
    base = tmp_path / "baseline"
    train(compose(tiny_overrides("variant=baseline", "test=false"), base))
    ckpt = base / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    fine = tmp_path / "finetune"
    frozen = ("model.deblur.optimizer.lr=0", "iterations=2", "test=false")
    train(compose(tiny_overrides(f"model.deblur.pretrained={ckpt}", *frozen), fine))
    after = torch.load(fine / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    deblur = {k: v for k, v in after.items() if k.startswith("deblur_net.")}
    assert deblur and all(torch.equal(v, state[k]) for k, v in deblur.items())
    assert any(k.startswith("motion_net.") for k in after)
    # and without the override D starts elsewhere (so the check above can fail)
    scratch = tmp_path / "scratch"
    train(compose(tiny_overrides(*frozen), scratch))
    other = torch.load(scratch / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not all(torch.equal(other[k], state[k]) for k in deblur)


@pytest.mark.slow
def test_short_default_run_learns(tmp_path):
    """D beats the blurry input on unseen blur, M learns motion that explains the blur D removed, and
    the reblur loss falls after its start-up transient.

    At iteration 0 D is the identity and M(B) = M(S_hat), so the reblur loss starts near 0; it rises
    while D starts to deblur and M's kernel priors push M(B) towards alpha, then falls as M learns
    the relative motion. The test compares its peak window with the last one.
    """
    run = tmp_path / "run"
    overrides = ["logger=csv", "iterations=100", "trainer.val_check_interval=50", "test=false"]
    quiet = ["trainer.enable_progress_bar=false", "model.signal_batches=0", "model.log_grad_norms=false"]
    train(compose([*overrides, *quiet, "trainer.log_every_n_steps=5"], run))
    rows = _metrics(run)
    psnr = _column(rows, "val/builtin_camera/psnr")
    blurry = _column(rows, "val/builtin_camera/input_psnr")
    assert psnr[-1] > blurry[-1], (psnr, blurry)
    gain = _column(rows, "val/builtin_camera/reblur_gain")
    assert gain[-1] > 0, gain
    reblur = _column(rows, "train/motion/weighted/reblur")
    windows = [sum(reblur[i : i + 5]) / 5 for i in range(len(reblur) - 4)]
    assert windows[-1] < max(windows), windows


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_cpu_processes_end_with_equal_weights(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    args = tiny_overrides(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "iterations=3",
        "test=false",
        f"hydra.run.dir={run}",
    )
    result = subprocess.run(
        [sys.executable, "-m", "neurmap.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "rank_consistency.json").read_text())
    ranks = report["ranks"]
    assert len(ranks) == 2
    assert ranks[0] == ranks[1]
    assert any(k.startswith("motion_net") for k in report["keys"])


@pytest.mark.slow
@pytest.mark.ddp
def test_nan_on_one_ddp_rank_stops_every_rank(tmp_path):
    """A NaN on rank 1 only must stop rank 0 too (it would otherwise wait forever in the all-reduce)."""
    run = tmp_path / "ddp"
    args = tiny_overrides(
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "iterations=4", "test=false", f"hydra.run.dir={run}",
        "+callbacks.nan._target_=tests.helpers.NanOnRank", "+callbacks.nan.rank=1", "+callbacks.nan.iteration=2",
    )  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "neurmap.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]  # rank 0 stopped on the flag, not on a broken peer
    assert "iteration 2" in result.stderr and "on another process (this one is finite)" in result.stderr


@pytest.mark.slow
def test_multirun_over_variants(tmp_path):
    """`python -m neurmap.train -m variant=...` runs each job in its own directory."""
    args = tiny_overrides("iterations=1", "trainer.val_check_interval=1", "test=false", "variant=baseline,net2")
    multiruns = run_multirun(tmp_path, *args)
    jobs = sorted(p.name for p in multiruns.glob("*/*") if p.is_dir())
    assert jobs == ["0_baseline-unet", "1_net2-unet"]
    assert all((p / "checkpoints" / "last.ckpt").is_file() for p in multiruns.glob("*/*_*"))
    from neurmap.collect import main as collect_main

    assert collect_main(["latest=true", f"root={multiruns}", "prefix=val/"]) == 0
    sweep = next(multiruns.iterdir())
    table = (sweep / "sweep_summary.md").read_text().splitlines()
    assert table[0].startswith("| job | status | variant | iterations | val/builtin_camera/")
    assert table[2].startswith("| 0_baseline-unet | done | baseline | 1 |")
    assert table[3].startswith("| 1_net2-unet | done | net2 | 1 |")


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    """SIGTERM during training ends the run with last.ckpt at the iteration it reached; resuming finishes."""
    run = tmp_path / "run"
    common = ["iterations=6", "trainer.val_check_interval=100", "test=false"]
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtIteration", "+callbacks.term.iteration=2"]
    with pytest.raises(SystemExit):
        train(compose(tiny_overrides(*common, *term), run))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * 3  # two whole NeurMAP iterations
    train(compose(tiny_overrides(*common, "ckpt_path=last"), run))
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 6 * 3


def test_sigterm_while_testing_names_the_trained_weights_and_ckpt_path_last_only_tests(tmp_path, capsys):
    """SIGTERM after the first test batch (training finished): status 1, one line naming last.ckpt, which stays
    the trained weights; the resume it names trains nothing again, tests, and finishes the run."""
    from neurmap.config import FINAL_METRICS
    from tests.helpers import checksums

    run = tmp_path / "run"
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtTestBatch", "+callbacks.term.batch=0"]
    with pytest.raises(SystemExit) as stop:
        train(compose(tiny_overrides("iterations=2", *term), run))
    assert stop.value.code == 1
    last = run / "checkpoints" / "last.ckpt"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "neurmap.train: error: stopped by SIGTERM while testing, after all 2 iteration(s) were trained; the trained "
        f"weights are in {last}: test them with the same settings and hydra.run.dir={run} ckpt_path=last (nothing "
        "is trained again)"
    )
    assert not (run / FINAL_METRICS).exists() and not (run / "checkpoints" / "interrupted.ckpt").exists()
    trained = checksums(last)
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * 3
    train(compose(tiny_overrides("iterations=2", "ckpt_path=last"), run))
    final = json.loads((run / FINAL_METRICS).read_text())
    assert final["iterations"] == 2 and "test/builtin_camera/psnr" in final["metrics"]
    assert checksums(last) == trained  # nothing trained again


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    """Exact resume on CPU: SIGTERM mid-run (mid-epoch), resume with ckpt_path=last; the final weights,
    optimizer states, LR schedules and the sharp-motion pool equal an uninterrupted run's. Iteration 5
    crosses the end of the 4-batch epochs, so the data order after an epoch boundary is covered too."""
    common = ["iterations=7", "trainer.val_check_interval=100", "test=false", "trainer.deterministic=true"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose(tiny_overrides(*common), whole))
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtIteration", "+callbacks.term.iteration=3"]
    with pytest.raises(SystemExit):
        train(compose(tiny_overrides(*common, *term), parts))
    assert torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * 3
    train(compose(tiny_overrides(*common, "ckpt_path=last"), parts))
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 7 * 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, different[:5]
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for key, state in opt_a["state"].items():
            assert all(torch.equal(state[n], opt_b["state"][key][n]) for n in state)
    assert a["lr_schedulers"] == b["lr_schedulers"]


def test_dry_run_prints_counts_and_an_estimate(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(compose(tiny_overrides("dry_run=true", "dry_run_iterations=2"), run)) is None
    out = capsys.readouterr().out
    assert "train paired" in out and "val   builtin_camera" in out
    assert "estimated training time for 4 iterations" in out
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_runs_record_their_provenance(tmp_path):
    run = tmp_path / "run"
    train(compose(tiny_overrides("logger=csv", "iterations=1", "test=false"), run))
    hparams = (run / "csv" / "version_0" / "hparams.yaml").read_text()
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert f"git_revision: {revision}" in hparams
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["provenance"]["choices"]["variant"] == "neurmap"


def test_wandb_runs_are_named_and_grouped_from_the_choices(tmp_path):
    cfg = compose(tiny_overrides("logger=wandb", "variant=net2", "seed=3"), tmp_path / "run")
    assert cfg.logger.wandb.name == "net2-unet-builtin-s3"
    assert cfg.logger.wandb.group == "builtin-unet"  # a multirun groups by its sweep instead
    assert cfg.logger.wandb.mode == os.environ.get("WANDB_MODE", "offline") and "net2" in cfg.logger.wandb.tags


def test_wandb_disabled_writes_no_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = tmp_path / "run"
    train(compose(tiny_overrides("logger=wandb", "iterations=1", "test=false"), run))
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "wandb").exists()
    # the next job of a sweep in this process gets a run of its own (offline: test_wandb_offline_run_writes_...)


@pytest.mark.slow
def test_wandb_offline_run_writes_a_syncable_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(compose(tiny_overrides("logger=wandb", "iterations=2", "trainer.val_check_interval=1", "test=false"), run))
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
