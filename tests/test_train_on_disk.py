"""Training on the documented on-disk layouts (tiny fake trees): the issue's headline commands."""

from __future__ import annotations

import json

import pytest

from neurmap.config import FINAL_METRICS, instantiate_datamodule
from neurmap.tasks.training import train
from tests import fake_data
from tests.conftest import compose, tiny_overrides

# Small crops and batches: the fake images are 40x56 and these runs must take seconds on a CPU.
DISK = [
    "data.num_workers=0",
    "data.paired.transform.crop_size=32",
    "data.batch_size_paired=2",
    "data.batch_size_unpaired=2",
    "++trainer.fast_dev_run=true",
]


@pytest.fixture
def data_root(fake_data_root):
    return fake_data_root


@pytest.mark.parametrize("choice", ["kernel_synth", "urb", "gopro", "folders"])
def test_fast_dev_run_on_each_data_choice(data_root, tmp_path, monkeypatch, choice):
    monkeypatch.setenv("NEURMAP_DATA", str(data_root))
    train(compose(tiny_overrides(f"data={choice}", *DISK), tmp_path / "run"))
    record = json.loads((tmp_path / "run" / FINAL_METRICS).read_text())
    assert record["iterations"] == 1  # fast_dev_run: one whole iteration on this layout's data


@pytest.mark.slow
def test_headline_command_mprnet_on_realblur(data_root, tmp_path, capsys, monkeypatch):
    from neurmap.train import main as train_main

    monkeypatch.setenv("NEURMAP_DATA", str(data_root))
    args = ["backbone=mprnet", "data=realblur", *DISK, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    assert train_main([*args, "trainer.enable_progress_bar=false"]) == 0
    captured = capsys.readouterr()
    assert "val/realblur/psnr" in captured.out + captured.err


def test_missing_root_stops_before_training_with_one_line(tmp_path, capsys, monkeypatch):
    from neurmap.train import main as train_main

    monkeypatch.setenv("NEURMAP_DATA", str(tmp_path / "absent"))
    assert train_main(["data=kernel_synth", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("neurmap.train: error: data=kernel_synth: ") and "data folder(s) do not exist" in last, last
    assert f"{tmp_path / 'absent'}/GOPRO_Large" in last and f"{tmp_path / 'absent'}/kernel_synth" in last, last
    assert not (tmp_path / "run").exists()  # a usage error leaves no run folder


def test_synthesized_set_trains_as_kernel_synth(tmp_path, data_root, monkeypatch):
    """`python -m neurmap.synthesize src=DIR dst=DIR` output is what data=kernel_synth reads (train, val and test)."""
    import numpy as np

    from neurmap.data.io import write_image
    from neurmap.synthesize import main as synthesize_main

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 1), ("test", 2)):
        for i in range(count):
            write_image(tmp_path / "photos" / split / f"{i}.png", fake_data.image(rng, (64, 80)))
        small_flows = ["kernel.flow.tx_max=6", "kernel.flow.ty_max=6", "kernel.flow.center_shift_max=4"]
        dst = tmp_path / "kernel_synth" / split
        assert synthesize_main([f"src={tmp_path / 'photos' / split}", f"dst={dst}", *small_flows]) == 0
    monkeypatch.setenv("NEURMAP_DATA", str(data_root))
    cfg = compose(
        tiny_overrides("data=kernel_synth", *DISK, f"paths.kernel_synth={tmp_path / 'kernel_synth'}"), tmp_path / "run"
    )
    train(cfg)

    dm = instantiate_datamodule(cfg)
    dm.setup("test")
    sample = dm.test_sets["kernel_synth"][0]
    assert sample["motion"].shape[-2:] == sample["blur"].shape[-2:] and float(sample["motion"][1].min()) >= 0
