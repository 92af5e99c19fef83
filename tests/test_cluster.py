"""Launchers: joblib (local parallel jobs) and submitit SLURM (validated with submitit's local executor),
and ckpt_path=auto, which lets a requeued job resume."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from neurmap.config import CONFIG_DIR
from neurmap.tasks.training import train
from tests.conftest import compose, tiny_overrides
from tests.helpers import run_multirun

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("cluster", "launcher"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("slurm_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_cluster_options_choose_an_installed_launcher(cluster, launcher):
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    cfg = _with_hydra(f"cluster={cluster}")
    chosen = get_class(cfg.hydra.launcher._target_)
    assert issubclass(chosen, Launcher) and chosen.__name__ == launcher.rsplit(".", 1)[1]
    if cluster.startswith("slurm"):
        assert cfg.ckpt_path == "auto"


def test_slurm_runs_one_ddp_process_per_gpu(tmp_path):
    cfg = compose(["cluster=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=8"], tmp_path)
    assert cfg.trainer.devices == 8 and cfg.trainer.num_nodes == 2
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy")
    hydra_cfg = _with_hydra("cluster=slurm", "hydra.launcher.gpus_per_node=8")
    assert hydra_cfg.hydra.launcher.tasks_per_node == 8 and hydra_cfg.hydra.launcher.max_num_timeout > 0


def _multirun(tmp_path, *args: str) -> list:
    overrides = tiny_overrides("iterations=2", "trainer.val_check_interval=1", "test=false", *args)
    return sorted(run_multirun(tmp_path, *overrides).glob("*/*/final_metrics.json"))


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(tmp_path):
    finals = _multirun(tmp_path, "cluster=joblib", "variant=baseline,net2")
    assert [p.parent.name for p in finals] == ["0_baseline-unet", "1_net2-unet"]
    assert all(json.loads(p.read_text())["iterations"] == 2 for p in finals)


@pytest.mark.slow
def test_slurm_config_through_submitits_local_executor(tmp_path):
    finals = _multirun(tmp_path, "cluster=slurm_local", "variant=net2")
    assert [p.parent.name for p in finals] == ["0_net2-unet"]
    assert list(finals[0].parent.parent.glob(".submitit/*/*_result.pkl"))  # submitit ran the job, stored its result


def test_ckpt_path_auto_starts_fresh_then_resumes(tmp_path):
    run = tmp_path / "run"
    common = ["trainer.val_check_interval=100", "test=false", "ckpt_path=auto", "iterations=3"]
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtIteration", "+callbacks.term.iteration=2"]
    with pytest.raises(SystemExit):  # nothing to resume: a fresh start, pre-empted after 2 iterations
        train(compose(tiny_overrides(*common, *term), run))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 3
    train(compose(tiny_overrides(*common), run))  # the requeued job continues from last.ckpt
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * 3
