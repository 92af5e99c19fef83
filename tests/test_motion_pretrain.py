"""Motion pretraining (variant=motion_pretrain), loading its M into NeurMAP, D's warm-up, and the new logs
(val motion EPE beside a zero map, per-term gradient norms of D)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from neurmap.config import instantiate_system
from neurmap.errors import UsageError
from neurmap.losses.terms import flow_supervision
from neurmap.nets.motion import MotionNet, load_motion_pretrained
from neurmap.tasks.inference import load_networks
from neurmap.tasks.training import train
from tests.conftest import compose, tiny_overrides

# M alone on the built-in pairs, long enough to learn something (a few seconds on CPU)
MOTION = [
    "variant=motion_pretrain",
    "logger=csv",
    "iterations=60",
    "trainer.val_check_interval=30",
    "data.batch_size_paired=4",
    "data.paired.num_images=32",
    "data.val.builtin_camera.num_images=6",
    "model.weights.flow=1.0",
    "model.motion.net.width=16",  # the default M; the tiny width-8 one does not learn this fast
]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "version_0" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("motion") / "run"
    train(compose(tiny_overrides(*MOTION), run))
    return run


def test_motion_pretraining_builds_m_only_and_beats_a_zero_map(pretrained):
    ckpt = torch.load(pretrained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    prefixes = {k.split(".", 1)[0] for k in ckpt["state_dict"]}
    assert prefixes == {"motion_net"}  # neither D nor N was built
    assert "deblur" not in ckpt["hyper_parameters"]["config"]["model"]  # variant=motion_pretrain sets backbone=null
    rows = _rows(pretrained)
    epe, zero = _column(rows, "val/builtin_camera/motion_epe"), _column(rows, "val/builtin_camera/motion_epe_zero")
    assert len(epe) == 2 and len(set(zero)) == 1
    assert epe[-1] < zero[-1], (epe, zero)  # M explains the blur better than "no motion" does
    assert _column(rows, "train/motion/weighted/flow") and _column(rows, "train/motion/weighted/reblur")
    assert _column(rows, "test/builtin_camera/motion_epe")
    best = list((pretrained / "checkpoints").glob("best-*.ckpt"))
    assert best, "the best checkpoint is kept by motion EPE (mode min)"


def test_motion_pretraining_has_no_d(pretrained, tmp_path):
    with pytest.raises(UsageError, match="holds no deblurring network"):
        load_networks(pretrained / "checkpoints" / "last.ckpt")
    with pytest.raises(InstantiationException, match="motion pretraining trains M alone, but backbone=unet puts a D"):
        instantiate_system(compose(tiny_overrides("variant=motion_pretrain", "backbone=unet"), tmp_path / "r"))


def test_pretrained_m_loads_into_neurmap_through_the_config(pretrained, tmp_path):
    ckpt = pretrained / "checkpoints" / "last.ckpt"
    cfg = compose(tiny_overrides(f"model.motion_pretrained={ckpt}", "model.motion.net.width=16"), tmp_path / "run")
    system = instantiate_system(cfg)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in system.motion_net.state_dict().items():
        assert torch.equal(value, saved[f"motion_net.{key}"]), key
    fresh = instantiate_system(compose(tiny_overrides("model.motion.net.width=16"), tmp_path / "f"))
    weight = next(iter(fresh.motion_net.state_dict()))
    assert not torch.equal(fresh.motion_net.state_dict()[weight], system.motion_net.state_dict()[weight])


def test_motion_pretrained_errors_name_the_file(tmp_path):
    net = MotionNet(width=8)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_motion_pretrained(net, tmp_path / "absent.ckpt")
    torch.save({"state_dict": {"deblur_net.net.w": torch.zeros(1)}}, tmp_path / "d_only.ckpt")
    with pytest.raises(ValueError, match=r"d_only.ckpt.*without a motion network"):
        load_motion_pretrained(net, tmp_path / "d_only.ckpt")
    torch.save(MotionNet(width=4).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_motion_pretrained(net, tmp_path / "narrow.pt")
    with pytest.raises(InstantiationException, match="no motion network"):
        instantiate_system(compose(tiny_overrides("variant=net1", "model.motion_pretrained=x"), tmp_path / "r"))


def test_flow_supervision_is_sign_invariant_and_zero_at_the_truth():
    target = torch.randn(2, 2, 5, 5)
    assert flow_supervision(target, target, "mse") == 0
    assert flow_supervision(-target, target, "mse") == 0  # the same line blur
    assert math.isclose(float(flow_supervision(target, target, "epe")), 1e-3, rel_tol=1e-3)  # sqrt(eps)
    assert flow_supervision(torch.zeros_like(target), target, "epe") > 0.5
    with pytest.raises(ValueError, match="flow norm"):
        flow_supervision(target, target, "l3")


def test_flow_weight_without_ground_truth_stops_with_one_line(tmp_path, fake_data_root, monkeypatch):
    monkeypatch.setenv("NEURMAP_DATA", str(fake_data_root))
    overrides = tiny_overrides(
        "variant=motion_pretrain", "data=folders", "data.batch_size_paired=1", "model.weights.flow=1"
    )
    cfg = compose(overrides, tmp_path / "r")
    with pytest.raises(KeyError, match="model.weights.flow > 0 needs ground-truth motion"):
        train(cfg)


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("warm") / "run"
    train(compose(tiny_overrides("logger=csv", "iterations=6", "model.warmup_iterations=4"), run))
    return run


def test_warmup_keeps_d_on_the_content_loss_for_exactly_k_iterations(warm_run):
    rows = [r for r in _rows(warm_run) if r.get("train/deblur/map_terms_on") not in (None, "")]
    iterations = [int(r["step"]) for r in rows]  # Lightning logs train rows by batch (= iteration)
    on = [float(r["train/deblur/map_terms_on"]) for r in rows]
    assert iterations == list(range(6)) and on == [0, 0, 0, 0, 1, 1]
    for row, active in zip(rows, on):
        for term in ("reblur", "sharp_prior", "natural", "motion_tv"):
            assert (row.get(f"train/deblur/weighted/{term}") not in (None, "")) == bool(active), (row["step"], term)
        assert row.get("train/deblur/weighted/content") not in (None, "")
        assert row.get("train/motion/weighted/reblur") not in (None, "")  # M trains throughout


def test_grad_norms_of_every_d_term_and_val_motion_epe_are_logged(warm_run):
    rows = _rows(warm_run)
    last = next(r for r in reversed(rows) if r.get("train/deblur/grad_share/reblur") not in (None, ""))
    terms = ("content", "reblur", "sharp_prior", "natural", "motion_tv")
    shares = [float(last[f"train/deblur/grad_share/{t}"]) for t in terms]
    norms = [float(last[f"train/deblur/grad_norm/{t}"]) for t in terms]
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-4) and all(n >= 0 for n in norms) and max(norms) > 0
    for share, norm in zip(shares, norms):
        assert math.isclose(share, norm / sum(norms), rel_tol=1e-4, abs_tol=1e-7)
    epe, zero = _column(rows, "val/builtin_camera/motion_epe"), _column(rows, "val/builtin_camera/motion_epe_zero")
    assert epe and zero and all(z > 0 for z in zero)


def test_grad_norms_equal_the_norm_of_each_terms_gradient():
    from neurmap.systems.neurmap import grad_norms

    w = torch.tensor([1.0, -2.0], requires_grad=True)
    parts = {"a": (w**2).sum(), "b": 3 * w.sum()}
    norms = grad_norms(parts, [w])
    assert torch.allclose(norms["a"], torch.tensor([2.0, -4.0]).norm())
    assert torch.allclose(norms["b"], torch.tensor([3.0, 3.0]).norm())


def test_warmup_needs_paired_data(tmp_path):
    with pytest.raises(InstantiationException, match="model.warmup_iterations=2 keeps D on the content loss"):
        instantiate_system(compose(tiny_overrides("variant=unsupervised", "model.warmup_iterations=2"), tmp_path / "r"))
