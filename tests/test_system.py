"""NeurMAPSystem: optimizer partition, per-network updates, variants, LR schedule, clipping, NaN guard."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from neurmap.config import instantiate_datamodule, instantiate_system

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


@pytest.mark.parametrize("relative", [True, False])
def test_relative_motion_switch_sets_what_r_receives(tiny_cfg, relative):
    """model.relative_motion reaches the motion R gets: M(B) - M(S_hat), or M(B) alone (tests/test_objectives
    checks that the objectives reblur along exactly that motion); both train."""
    system, trainer = _fit(tiny_cfg(f"model.relative_motion={str(relative).lower()}"), batches=1)
    m_blur, m_deblurred = torch.full((1, 2, 4, 4), 0.3), torch.full((1, 2, 4, 4), 0.1)
    expected = m_blur - m_deblurred if relative else m_blur
    assert torch.equal(system.relative(m_blur, m_deblurred), expected)
    assert trainer.global_step == 3


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
