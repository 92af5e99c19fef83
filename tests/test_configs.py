"""Every config composes and instantiates; the paper's constants; bad overrides fail with one clear line."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neurmap.config import backbone_node, instantiate_datamodule, instantiate_system
from neurmap.losses.objectives import LossWeights, from_mapping
from tests.conftest import CONF, compose, tiny_overrides

GROUPS = [
    "backbone",
    "data",
    "loss",
    "variant",
    "ratio",
    "model",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]

#: Table 3: D alone; D + N (Net1); D + M (Net2); D + M + N (Net3, NeurMAP, unsupervised); M alone (pretraining)
OPTIMIZERS = {
    "baseline": 1,
    "net1": 2,
    "net2": 2,
    "net3": 3,
    "neurmap": 3,
    "unsupervised": 3,
    "motion_pretrain": 1,
    "oracle_motion": 3,
    "neurmap_frozen_m": 2,
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_instantiates(tiny_cfg, fake_data_root, monkeypatch, group, option):
    monkeypatch.setenv("NEURMAP_DATA", str(fake_data_root))  # on-disk data choices list their files
    monkeypatch.delenv("NEURMAP_RELEASES", raising=False)  # the mini recipes' D then starts from scratch (tiny)
    extra = ["loss.reblur_msssim_ratio=0"] if group == "loss" else []
    if option.startswith("mini_"):  # make reproduce-mini's recipes read <paths.mini>/{paired,kernel_synth}
        from tests import fake_data

        mini = fake_data.mini(tiny_cfg.tmp_path / "mini")
        extra.append(f"paths.mini={mini}")
    if option == "random_blur":  # motion-pretraining data: sharp photos, M alone
        extra += ["variant=motion_pretrain", f"paths.photos={fake_data_root / 'kernel_synth' / 'train'}"]
    if option == "neurmap_frozen_m":  # M frozen as it starts: it needs a start
        path = tiny_cfg.tmp_path / "motion.pt"
        torch.save(instantiate_system(tiny_cfg("variant=neurmap")).motion_net.state_dict(), path)
        extra.append(f"model.motion_pretrained={path}")
    if option.startswith("table"):  # the paper's recipes need a release (tested apart)
        extra.append("model.deblur.pretrained=null")
    if option == "motion_pretrain" and group == "model":  # M alone: no D (variant=motion_pretrain does the same)
        extra.append("~backbone")
    cfg = tiny_cfg(f"{group}={option}", *extra)
    assert OmegaConf.missing_keys(cfg) == set()
    system = instantiate_system(cfg)
    # model=motion_pretrain on its own (not through variant=motion_pretrain) still builds M alone
    kind = "motion_pretrain" if cfg.model._target_.endswith(".MotionPretrainSystem") else cfg.variant.name
    assert system.n_optimizers == OPTIMIZERS[kind], (kind, system.n_optimizers)
    instantiate_datamodule(cfg)
    for node in (cfg.get("callbacks") or {}).values():
        if node and "_target_" in node:
            instantiate(node)
    for node in (cfg.get("logger") or {}).values():
        if node and "_target_" in node:
            instantiate(node)
    instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("option", _options("trainer"))
def test_trainer_options_compose(tiny_cfg, option):
    cfg = tiny_cfg(f"trainer={option}")
    assert cfg.trainer.use_distributed_sampler is False  # the datamodule shards each loader itself
    assert cfg.trainer.get("gradient_clip_val") is None  # clipping is per network: model.<network>.grad_clip
    # GPU options cannot start here; check they instantiate once pointed at the CPU.
    instantiate(cfg.trainer, accelerator="cpu", devices=1, precision="32-true", logger=False)


def test_paper_literal_preset_holds_the_papers_constants(tiny_cfg):
    cfg = tiny_cfg("backbone=dmphn", "loss=paper_literal")
    loss = cfg.loss
    assert (loss.lam, loss.beta, cfg.model.reblur.alpha) == (100.0, 0.1, 40.0)  # §4.1
    assert loss.reblur_motion == loss.reblur_deblur == loss.content == loss.natural == 1.0  # x lam, x beta
    assert loss.kernel_blurry == loss.kernel_sharp == loss.kernel_deblurred == loss.sharp_prior == 1.0
    assert cfg.model.reblur.alpha == 40.0 and cfg.model.reblur.n_samples == 15
    # §4.1: three Adams, lr D 5e-5 (a published backbone), M 1e-4, N 1e-4, betas (0.9, 0.999), eps 1e-8
    system = instantiate_system(cfg)
    optimizers, _ = system.configure_optimizers()
    assert system.opt_names == ["deblur", "motion", "disc"]
    assert all(isinstance(o, torch.optim.Adam) for o in optimizers)
    settings = [(g["lr"], g["betas"], g["eps"]) for g in (o.param_groups[0] for o in optimizers)]
    assert settings == [(5e-5, (0.9, 0.999), 1e-8), (1e-4, (0.9, 0.999), 1e-8), (1e-4, (0.9, 0.999), 1e-8)]


@pytest.mark.parametrize(("backbone", "network"), [("unet", "UNet"), ("mprnet", "MPRNet")])
def test_the_backbone_choice_is_d_with_its_own_optimizer(backbone, network, tmp_path):
    """`backbone=<name>` on the command line puts the option at model.deblur (the run's choices still name it):
    the system's D is that network, trained with the option's learning rate and gradient clipping."""
    from neurmap.composition import check_overrides

    (job,) = check_overrides("train", [f"backbone={backbone}", "variant=baseline"], multirun=False)
    assert job.hydra.runtime.choices.backbone == backbone
    system = instantiate_system(compose([f"backbone={backbone}", "variant=baseline"], tmp_path))
    option = backbone_node(backbone)
    assert type(system.deblur_net.net).__name__ == network
    (optimizer,), _ = system.configure_optimizers()
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in system.deblur_net.parameters()}
    assert optimizer.param_groups[0]["lr"] == option.optimizer.lr
    assert system._optim["deblur"]["grad_clip"] == option.grad_clip
    assert system.deblur_net.pad_multiple == option.pad_multiple


@pytest.mark.parametrize(
    "overrides", [[], ["backbone=mprnet"], ["variant=motion_pretrain"], ["experiment=table1_mprnet"]]
)
def test_the_model_node_reads_no_other_group(overrides, tmp_path):
    """Every network's settings live in the model node: none of its values is an interpolation of another
    group (the run passes loss, variant and iterations to the system)."""
    model = OmegaConf.to_yaml(compose(overrides, tmp_path).model)  # unresolved
    assert re.findall(r"\$\{(?!oc\.env:|neurmap_release:)[^}]*\}", model) == []  # environment variables only


def test_mini_fine_tunes_use_the_sweeps_choice(tiny_cfg):
    """README, Faithfulness: lambda = 100 on M's reblur and on the content loss; D's MAP terms at 1/100."""
    from tests import fake_data

    mini = fake_data.mini(tiny_cfg.tmp_path / "mini")
    loss = tiny_cfg("experiment=mini_neurmap", f"paths.mini={mini}").loss
    assert loss.name == "content_led"
    assert (loss.lam, loss.reblur_motion, loss.content, loss.reblur_deblur) == (100.0, 1.0, 1.0, 0.01)
    assert (loss.beta, loss.natural) == (0.01, 1.0)
    priors = ("kernel_blurry", "kernel_sharp", "kernel_deblurred", "motion_tv", "sharp_prior", "deblurred_motion_tv")
    assert [loss[k] for k in priors] == [0.01] * 6
    assert (loss.content_norm, loss.map_on_paired) == ("l2", False)  # the paper's, not the authors' code


def _effective(loss) -> LossWeights:
    return from_mapping(LossWeights, OmegaConf.to_container(loss, resolve=True), "loss").effective()


def test_beta_override_reaches_the_natural_weight(tiny_cfg):
    assert _effective(tiny_cfg("loss.beta=0.5").loss).natural == 0.5


#: The weights each term entered its objective with when every preset spelled them out (lam and beta folded in).
EFFECTIVE = {
    "paper_literal": {"reblur_motion": 100.0, "reblur_deblur": 100.0, "content": 100.0, "natural": 0.1},
    "content_led": {"reblur_motion": 100.0, "reblur_deblur": 1.0, "content": 100.0, "natural": 0.01},
    "authors_code": {"reblur_motion": 1.0, "reblur_deblur": 100.0, "content": 100.0, "natural": 1.0},
}


@pytest.mark.parametrize("preset", list(EFFECTIVE))
def test_presets_keep_their_effective_weights_and_lambda_scales_the_reconstruction_terms(tiny_cfg, preset):
    """lam x reblur_motion, reblur_deblur and content, beta x natural (eq. 10-11); halving lam halves the three."""
    effective = _effective(tiny_cfg(f"loss={preset}").loss)
    assert {k: getattr(effective, k) for k in EFFECTIVE[preset]} == EFFECTIVE[preset]
    lam = tiny_cfg(f"loss={preset}").loss.lam
    halved = _effective(tiny_cfg(f"loss={preset}", f"loss.lam={lam / 2}").loss)
    for key in ("reblur_motion", "reblur_deblur", "content"):
        assert getattr(halved, key) == EFFECTIVE[preset][key] / 2
    assert (halved.natural, halved.sharp_prior) == (effective.natural, effective.sharp_prior)


def test_lam_50_halves_the_papers_reconstruction_weights(tiny_cfg):
    effective = _effective(tiny_cfg("loss=paper_literal", "loss.lam=50").loss)
    assert (effective.reblur_motion, effective.reblur_deblur, effective.content) == (50.0, 50.0, 50.0)
    assert (effective.natural, effective.kernel_blurry) == (0.1, 1.0)


@pytest.mark.parametrize(
    ("variant", "motion", "disc", "paired", "unpaired"),
    [
        ("baseline", False, "none", True, False),
        ("net1", False, "sharp", True, True),
        ("net2", True, "none", True, True),
        ("net3", True, "sharp", True, True),
        ("neurmap", True, "natural", True, True),
        ("unsupervised", True, "natural", False, True),
    ],
)
def test_variants_follow_table_3(tiny_cfg, variant, motion, disc, paired, unpaired):
    v = tiny_cfg(f"variant={variant}").variant
    assert (v.name, v.motion, v.discriminator, v.paired, v.unpaired) == (variant, motion, disc, paired, unpaired)
    assert v.disc_fake_blurry == (variant == "net1")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["iterations=???"], "iterations"),
        (["+model.motion.net.widht=3"], "widht"),
        (["trainer.max_steps=100"], "trainer.max_steps=100 has no effect here: the run length is `iterations`"),
        (["+trainer.gradient_clip_val=1.0"], "set model.<deblur|motion|disc>.grad_clip"),
        (["+loss.kernel_blury=1.0"], "kernel_blury"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(tmp_path, monkeypatch, capsys, args, needle):
    """The command line as typed (errors of composition in detail: tests/test_cli.py)."""
    from neurmap.train import main as train_main

    monkeypatch.setenv("NEURMAP_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    assert train_main(list(args)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("neurmap.train: error: ") and needle in last, last
    assert list(tmp_path.glob("train/runs/*")) == []  # no run folder is left


@pytest.mark.parametrize(
    ("option", "sharp", "natural"), [("s1_n05", 1.0, 0.5), ("s2_n01", 2.0, 0.1), ("s1_n01", 1.0, 0.1)]
)
def test_ratio_sweep_sets_the_table_4_weights(tiny_cfg, option, sharp, natural):
    cfg = tiny_cfg(f"ratio={option}")
    assert cfg.loss.sharp_prior == sharp and cfg.loss.beta == natural and _effective(cfg.loss).natural == natural


@pytest.mark.parametrize(
    ("recipe", "backbone", "layout", "batch"),
    [
        ("table1_dmphn", "dmphn_1_2_4", "kernel_synth", 2),
        ("table1_mprnet", "mprnet", "kernel_synth", 2),
        ("table2_dmphn", "dmphn_1_2_4", "realblur", 4),
        ("table2_mprnet", "mprnet", "realblur", 4),
    ],
)
def test_paper_table_recipes(recipe, backbone, layout, batch, tmp_path):
    """Tables 1 and 2: the backbone, the unpaired domain, the authors' batch sizes, 256 px crops, ~210k
    iterations (400 epochs of 526 GoPro batches) and the paper's literal weights."""
    from neurmap.config import compose

    cfg = compose([f"experiment={recipe}"], tmp_path)
    assert cfg.model.deblur.name == backbone and cfg.variant.name == "neurmap"
    assert cfg.data.unpaired_blur.records._target_ == f"neurmap.data.layouts.{layout}"
    assert cfg.data.batch_size_paired == cfg.data.batch_size_unpaired == batch
    assert cfg.data.paired.transform.crop_size == 256 and cfg.iterations == 210000
    assert (cfg.loss.lam, cfg.loss.beta, cfg.loss.kernel_blurry, cfg.model.reblur.alpha) == (100.0, 0.1, 1.0, 40.0)
    assert cfg.model.deblur.grad_clip == (0.01 if backbone == "mprnet" else None)


def test_the_logged_config_records_the_effective_weights_beside_lambda_and_beta(tmp_path):
    from neurmap.tasks.training import _check_config

    record = _check_config(compose(["loss.lam=50"], tmp_path / "a"))
    assert (record["loss"]["lam"], record["loss"]["beta"], record["loss"]["content"]) == (50.0, 0.1, 1.0)
    effective = record["loss_effective"]
    assert (effective["content"], effective["reblur_deblur"], effective["natural"]) == (50.0, 50.0, 0.1)
    assert "lam" not in effective and "beta" not in effective  # folded in


def test_tiny_overrides_follow_the_layout_the_extra_overrides_compose():
    """TINY's settings stay where their node is: another backbone drops TINY's D settings (its option's @package
    is model.deblur), M alone drops the backbone choice, D and the discriminator, and a key the test sets itself is
    not set twice."""
    full = tiny_overrides()
    assert {"backbone=unet", "model.deblur.net.width=8", "model.disc.net.n_layers=2"} <= set(full)
    nafnet = tiny_overrides("backbone=nafnet_w32")
    assert not [o for o in nafnet if o.startswith(("backbone=unet", "model.deblur."))]
    assert {"model.motion.net.width=8", "model.disc.net.width=8", "backbone=nafnet_w32"} <= set(nafnet)
    alone = tiny_overrides("variant=motion_pretrain")
    assert not [o for o in alone if o.startswith(("backbone=", "model.deblur.", "model.disc."))]
    assert {"model.motion.net.width=8", "data.paired.num_images=8", "logger=none"} <= set(alone)
    assert [o for o in tiny_overrides("iterations=9") if o.startswith("iterations=")] == ["iterations=9"]


def test_recipes_and_train_read_a_release_from_the_releases_variable(tmp_path, monkeypatch):
    """The paper's recipes and `model.deblur.pretrained=release:<name>` read `$NEURMAP_RELEASES/weights/<name>`; an
    unset variable is one line naming it; the mini recipe falls back to null without it."""
    from neurmap.errors import UsageError
    from neurmap.tasks.training import _check_config

    releases = tmp_path / "releases"
    (releases / "weights" / "dmphn_1_2_4").mkdir(parents=True)
    (releases / "weights" / "mprnet.pth").write_bytes(b"")
    monkeypatch.delenv("NEURMAP_RELEASES", raising=False)
    with pytest.raises(UsageError) as unset:
        _check_config(compose(["experiment=table1_dmphn"], tmp_path / "a"))
    assert str(unset.value) == (
        "model.deblur.pretrained: release:dmphn_1_2_4 needs NEURMAP_RELEASES=<folder> holding weights/dmphn_1_2_4 "
        "(a release folder or file; see README 'Released weights')"
    )
    assert compose(["experiment=mini_neurmap"], tmp_path / "b").model.deblur.pretrained is None
    monkeypatch.setenv("NEURMAP_RELEASES", str(releases))
    for recipe, name in (("table1_dmphn", "dmphn_1_2_4"), ("table2_mprnet", "mprnet.pth")):
        resolved = _check_config(compose([f"experiment={recipe}"], tmp_path / recipe))
        assert resolved["model"]["deblur"]["pretrained"] == str(releases / "weights" / name)
    cfg = compose(["model.deblur.pretrained=release:dmphn_1_2_4"], tmp_path / "c")
    resolved = _check_config(cfg)  # what the checkpoint records, and what D loads
    assert resolved["model"]["deblur"]["pretrained"] == cfg.model.deblur.pretrained
    assert cfg.model.deblur.pretrained == str(releases / "weights" / "dmphn_1_2_4")
    with pytest.raises(UsageError, match=r"release:nope: .*/weights/nope does not exist \(NEURMAP_RELEASES="):
        _check_config(compose(["model.deblur.pretrained=release:nope"], tmp_path / "d"))
