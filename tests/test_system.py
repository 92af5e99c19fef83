"""NeurMAPSystem: optimizer partition, per-network updates, variants, LR schedule, clipping, NaN guard."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neurmap.config import instantiate_datamodule, instantiate_system
from neurmap.data.io import read_image

VARIANTS = {"baseline": 1, "net1": 2, "net2": 2, "net3": 3, "neurmap": 3, "unsupervised": 3}
NETS = {"deblur": "deblur_net", "motion": "motion_net", "disc": "discriminator"}


def _fit(cfg, callbacks=(), batches: int | None = None):
    L.seed_everything(0)
    datamodule = instantiate_datamodule(cfg)
    system = instantiate_system(cfg)
    iterations = batches if batches is not None else int(cfg.iterations)
    trainer = instantiate(
        cfg.trainer,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        max_steps=iterations * system.n_optimizers,
        limit_val_batches=0,
    )
    trainer.fit(system, datamodule=datamodule)
    return system, trainer


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


class _StepAudit(L.Callback):
    """Before each optimizer step, record which networks changed since the previous one."""

    def __init__(self):
        self.events: list[tuple[str, set[str]]] = []
        self._prev_name = None
        self._snap = None

    def _nets(self, pl_module):
        return {n: getattr(pl_module, attr) for n, attr in NETS.items() if getattr(pl_module, attr) is not None}

    def _close(self, pl_module):
        if self._prev_name is not None:
            changed = {n for n, net in self._nets(pl_module).items() if _changed(self._snap[n], net)}
            self.events.append((self._prev_name, changed))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._close(pl_module)
        name = next(n for n, o in zip(pl_module.opt_names, trainer.optimizers) if o is optimizer)
        self._prev_name = name
        self._snap = {n: _snapshot(net) for n, net in self._nets(pl_module).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._close(pl_module)
        self._prev_name = None


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_iteration_of_every_variant(tiny_cfg, variant):
    audit = _StepAudit()
    system, trainer = _fit(tiny_cfg(f"variant={variant}"), [audit], batches=1)
    assert system.n_optimizers == VARIANTS[variant]
    assert trainer.global_step == VARIANTS[variant]  # global_step counts every optimizer step
    assert system.iteration == 1
    # Step order motion -> disc -> deblur, and each step changes only its own network.
    expected_order = [n for n in ("motion", "disc", "deblur") if n in system.opt_names]
    assert [name for name, _ in audit.events] == expected_order
    for name, changed in audit.events:
        assert changed == {name}, f"{name} step changed {changed}"


def test_optimizers_partition_the_trainable_parameters(tiny_cfg):
    system, trainer = _fit(tiny_cfg("variant=neurmap"), batches=1)
    owners: dict[int, int] = {}
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                owners[id(p)] = owners.get(id(p), 0) + 1
    trainable = [p for p in system.parameters() if p.requires_grad]
    assert all(owners.get(id(p)) == 1 for p in trainable)
    assert len(owners) == len(trainable)
    assert list(system.reblur.parameters()) == []


def test_learning_rates_decay_linearly_to_zero(tiny_cfg):
    cfg = tiny_cfg("variant=neurmap", "iterations=4")
    system, trainer = _fit(cfg, batches=3)
    base = {n: cfg.model[n].optimizer.lr for n in ("deblur", "motion", "disc")}
    for name, optimizer in zip(system.opt_names, trainer.optimizers):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(base[name] * (1 - 3 / 4))


def test_gradient_clipping_bounds_the_update(tiny_cfg):
    clip = 1e-3
    cfg = tiny_cfg(
        "variant=baseline",
        "model.deblur.optimizer._target_=torch.optim.SGD",
        "~model.deblur.optimizer.betas",
        "~model.deblur.optimizer.eps",
        "model.deblur.optimizer.lr=1.0",
        f"model.deblur.grad_clip={clip}",
        "iterations=1",
    )
    L.seed_everything(0)
    system = instantiate_system(cfg)
    before = [p.detach().clone() for p in system.deblur_net.parameters()]
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, max_steps=1, limit_val_batches=0)
    trainer.fit(system, datamodule=instantiate_datamodule(cfg))
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(system.deblur_net.parameters(), before)))
    assert 0 < step.item() <= clip * (1 + 1e-4)  # SGD with lr 1: update norm = clipped grad norm


def test_non_finite_loss_stops_with_the_term_name(tiny_cfg):
    cfg = tiny_cfg("variant=baseline", "loss.content=nan")
    with pytest.raises(FloatingPointError, match=r"deblur loss at iteration 0.*content"):
        _fit(cfg, batches=1)


class _PixelMotion(torch.nn.Module):
    """A parameter-free M: the raw motion at a pixel is its first two channels minus 1/2, so its horizontal
    component takes either sign and canonicalisation matters."""

    def forward(self, x):
        return x[:, :2] - 0.5


class _RecordingReblur(torch.nn.Module):
    """R that keeps a copy of every motion it receives."""

    def __init__(self, reblur):
        super().__init__()
        self.reblur, self.alpha, self.motions = reblur, reblur.alpha, []

    def forward(self, image, motion):
        self.motions.append(motion.detach().clone())
        return self.reblur(image, motion)


def _expected_motion(blur, deblurred, relative, scale):
    """The motion R receives, written out: each raw map flipped where its horizontal part is negative."""

    def canonical(image):
        raw = image[:, :2] - 0.5
        return torch.where(raw[:, 1:2] < 0, -raw, raw)

    motion = canonical(blur) - canonical(deblurred) if relative else canonical(blur)
    return scale * motion


@pytest.mark.parametrize("relative", [True, False])
def test_training_evaluation_deblurring_and_the_signal_measure_give_r_the_same_motion(tiny_cfg, relative, monkeypatch):
    """model.relative_motion and model.motion_scale reach every place that computes the motion R receives: M's and
    D's steps, the image panels, evaluation, deblurring (whole and tiled) and the signal measure. Both settings
    train."""
    from lab import signal as signal_measure
    from neurmap.losses.objectives import BatchSplit
    from neurmap.tasks import evaluation
    from neurmap.tasks.deblurring import deblur_image
    from neurmap.tasks.inference import Networks
    from tests import fake_data

    scale = 2.5
    system, trainer = _fit(
        tiny_cfg(f"model.relative_motion={str(relative).lower()}", f"model.motion_scale={scale}"), batches=1
    )
    assert trainer.global_step == 3
    system.motion_net = _PixelMotion()
    system.reblur = recorder = _RecordingReblur(system.reblur)
    system.eval()
    torch.manual_seed(0)
    blur, sharp = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    split = BatchSplit(blur, sharp, 0, False)
    with torch.no_grad():
        deblurred = system.deblur_net(blur)
    expected = _expected_motion(blur, deblurred, relative, scale)

    system._motion_loss(split, deblurred)  # M's step
    assert torch.allclose(recorder.motions[-1], expected, atol=1e-6)
    system._deblur_loss(split, [deblurred], True, None)  # D's step
    assert torch.allclose(recorder.motions[-1], expected, atol=1e-6)
    system.image_panels({"blur": blur})  # validation panels: S_hat is clamped to [0, 1]
    assert torch.allclose(
        recorder.motions[-1], _expected_motion(blur, deblurred.clamp(0, 1), relative, scale), atol=1e-6
    )

    nets = Networks(system.deblur_net, _PixelMotion(), 40.0, "unet", 4, relative_motion=relative, motion_scale=scale)
    for tile in (None, 8):  # M works per pixel, so tiles stitch exactly
        out = deblur_image(nets, blur[0], torch.device("cpu"), tile=tile, overlap=4, motion=True)
        motion = _expected_motion(blur[:1], out["deblurred"][None], relative, scale)
        assert torch.allclose(out["motion"], 40.0 * motion[0], atol=1e-5), tile

    given = []
    monkeypatch.setattr(evaluation, "motion_errors", lambda motion, *_: given.append(motion) or {})
    cfg = OmegaConf.create(
        {"protocol": "plain", "progress": False, "tile": None, "overlap": 0}
        | {"metrics": {"input": False, "motion": True, "authors_scale": 20.0}}
    )
    sample = {"blur": blur[0], "sharp": sharp[0], "motion": torch.zeros(2, 16, 24), "name": "a"}
    no_image_metrics = type("NoImageMetrics", (), {"image": lambda self, *_: {}})()
    evaluation._evaluate_set("a", [sample], nets, no_image_metrics, cfg, torch.device("cpu"), None)
    with torch.no_grad():
        shown = system.deblur_net(blur[:1]).clamp(0, 1)
    assert torch.allclose(given[0], _expected_motion(blur[:1], shown, relative, scale), atol=1e-6)

    root = fake_data.kernel_synth(tiny_cfg.tmp_path / "data", per_split=1) / "test"
    crop = 16
    b = read_image(next(root.glob("*_blurryimg.png")))[None, :, 12:28, 20:36]  # the centre crop of 40 x 56
    with torch.no_grad():
        d = system.deblur_net(b)
    measured = []
    monkeypatch.setattr(
        "neurmap.metrics.motion.motion_epe", lambda pred, truth: measured.append(pred) or truth[:, 0, 0, 0]
    )
    signal_measure.measure(system, root, crop, per_image=1)
    assert torch.allclose(measured[0], system.reblur.alpha * _expected_motion(b, d, relative, scale), atol=1e-5)
    recorder.motions.clear()
    signal_measure.fit_reblur_scale(system, root, crop, per_image=1, scales=[scale])
    assert torch.allclose(recorder.motions[0], _expected_motion(b, d, relative, scale), atol=1e-6)


def test_authors_code_preset_composes_and_runs(tiny_cfg):
    # MS-SSIM needs >= 161 px crops, so switch its ratio off for the tiny run; every other weight is the preset's.
    cfg = tiny_cfg("loss=authors_code", "loss.reblur_msssim_ratio=0")
    assert cfg.loss.kernel_hinge == 1.0 and cfg.loss.map_on_paired
    system, trainer = _fit(cfg, batches=1)
    assert trainer.global_step == 3


def test_invalid_variant_values_are_rejected(tiny_cfg):
    with pytest.raises(Exception, match="variant.discriminator"):
        instantiate_system(tiny_cfg("variant.discriminator=patch"))
    with pytest.raises(Exception, match="paired"):
        instantiate_system(tiny_cfg("variant.paired=false", "variant.unpaired=false"))


def test_lr_factor_function():
    from neurmap.systems.neurmap import linear_decay

    assert [linear_decay(i, 4) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert not math.isnan(linear_decay(0, 1))


@pytest.mark.parametrize(
    "switches",
    [
        ["trainer.precision=bf16-mixed"],
        ["model.channels_last=true"],
        ["+model.compile.backend=eager"],
    ],
)
def test_gpu_users_switches_run_on_cpu(tiny_cfg, switches):
    """bf16 autocast, channels_last and torch.compile (eager backend here) each run an iteration,
    and the reblur stays in fp32 under autocast (tested in test_reblur)."""
    system, trainer = _fit(tiny_cfg(*switches), batches=1)
    assert trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in system.parameters())
    if "model.channels_last=true" in switches:
        conv = next(m for m in system.deblur_net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_frozen_m_never_moves_and_still_feeds_the_sharp_pool(tiny_cfg, tmp_path):
    """variant=neurmap_frozen_m: no M step (two optimizers, N then D), M's weights stay those it started from,
    and the E[|M(S)|] pool behind the sharp-image prior is still fed."""
    pretrained, _ = _fit(tiny_cfg("variant=neurmap"), batches=1)
    path = tmp_path / "motion.pt"
    torch.save(pretrained.motion_net.state_dict(), path)
    audit = _StepAudit()
    system, _ = _fit(tiny_cfg("variant=neurmap_frozen_m", f"model.motion_pretrained={path}"), [audit], batches=2)
    assert system.opt_names == ["deblur", "disc"]
    assert [name for name, _ in audit.events] == ["disc", "deblur"] * 2
    assert not _changed(torch.load(path, weights_only=True), system.motion_net)
    assert int(system.pool.count) > 0
    with pytest.raises(ValueError, match="freezes M as it starts, but model.motion_pretrained is not set"):
        _fit(tiny_cfg("variant=neurmap_frozen_m"), batches=1)


class _Recorder(torch.nn.Module):
    """A network stub: remembers every input batch and returns ``out(x)``."""

    def __init__(self, out):
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.out = out

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.out(x)


@pytest.mark.parametrize(("variant", "map_on_paired"), [("neurmap", False), ("neurmap", True), ("net1", False)])
def test_m_and_n_steps_read_the_unsupervised_rows(tiny_cfg, variant, map_on_paired):
    """M sees B, S and S_hat of the unpaired rows (every row with loss.map_on_paired) in one batch; N sees the
    "real" images, then S_hat (Net1: and B) of the same rows."""
    from neurmap.losses.objectives import split_batch

    system = instantiate_system(tiny_cfg(f"variant={variant}", f"loss.map_on_paired={str(map_on_paired).lower()}"))
    system.motion_net = _Recorder(lambda x: 0.1 * x[:, :2])
    system.discriminator = _Recorder(lambda x: [x.mean(dim=1, keepdim=True)])
    blur, sharp = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    batch = {
        "paired": {"blur": blur[:2], "sharp": sharp[:2]},
        "blur": {"blur": blur[2:]},
        "sharp": {"sharp": sharp[2:]},
    }
    split = split_batch(batch, system.variant, map_on_paired)
    rows = slice(0, None) if map_on_paired else slice(2, None)
    s_hat = blur[rows] + 0.05
    if system.variant.motion:
        system._motion_loss(split, s_hat)
        (seen,) = system.motion_net.inputs
        assert torch.equal(seen, torch.cat([blur[rows], sharp[rows], s_hat]))
        assert int(system.pool.count) == seen.shape[0] // 3  # M(S) of every unsupervised row entered the pool
    parts = system._disc_loss(split, s_hat)
    real, fake = system.discriminator.inputs
    if variant == "net1":  # discriminator=sharp: the sharp images are real, and the blurry ones are fake too
        assert torch.equal(real, sharp[rows]) and torch.equal(fake, torch.cat([s_hat, blur[rows]]))
    else:
        assert torch.equal(real, torch.cat([sharp[rows][0::2], blur[rows][1::2]])) and torch.equal(fake, s_hat)
    assert set(parts) == {"real", "fake"}
