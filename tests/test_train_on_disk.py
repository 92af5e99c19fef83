"""Training on the documented on-disk layouts (tiny fake trees): the issue's headline commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neurmap.train import train
from tests import fake_data
from tests.conftest import REPO, compose, tiny_overrides

# Small crops and batches: the fake images are 40x56 and these runs must take seconds on a CPU.
DISK = [
    "data.num_workers=0",
    "data.paired.transform.crop_size=32",
    "data.batch_size_paired=2",
    "data.batch_size_unpaired=2",
    "++trainer.fast_dev_run=true",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_data.all_layouts(root)
    return root


@pytest.mark.parametrize("choice", ["kernel_synth", "urb", "gopro", "folders"])
def test_fast_dev_run_on_each_data_choice(data_root, tmp_path, monkeypatch, choice):
    monkeypatch.setenv("NEURMAP_DATA", str(data_root))
    train(compose(tiny_overrides(f"data={choice}", *DISK), tmp_path / "run"))


@pytest.mark.slow
def test_headline_command_mprnet_on_realblur(data_root, tmp_path):
    env = dict(os.environ, NEURMAP_DATA=str(data_root))
    cmd = [
        sys.executable,
        "-m",
        "neurmap.train",
        "backbone=mprnet",
        "data=realblur",
        *DISK,
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/realblur/psnr" in result.stdout + result.stderr


def test_missing_root_stops_before_training_with_one_line(tmp_path):
    env = dict(os.environ, NEURMAP_DATA=str(tmp_path / "absent"))
    cmd = [sys.executable, "-m", "neurmap.train", "data=kernel_synth", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("neurmap.train: error:") and "GOPRO_Large/train does not exist" in last, last
    assert not (tmp_path / "run" / "checkpoints").exists()
