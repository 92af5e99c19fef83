"""The unpaired-signal diagnostic (gradient cosines), the oracle-motion ablation and the on-the-fly blur with
its motion (M's pretraining data)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from neurmap.config import compose, instantiate_system
from neurmap.losses.objectives import BatchSplit, split_batch
from neurmap.losses.terms import flow_supervision
from neurmap.metrics.motion import motion_epe
from neurmap.metrics.signal import gradient_cosines
from neurmap.nets.motion import MotionNet
from neurmap.nets.reblur import canonicalize_motion
from neurmap.synth.line_blur import line_blur
from neurmap.synth.random_blur import RandomBlur, smooth_field


def test_gradient_cosine_of_linear_losses_is_the_angle_between_their_coefficients():
    w = torch.zeros(3, requires_grad=True)
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([-2.0, 0.0, 0.0])
    cos = gradient_cosines((w * a).sum(), {"half": (w * b).sum(), "opposite": (w * c).sum()}, [w])
    assert cos["half"].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # 45 degrees
    assert cos["opposite"].item() == pytest.approx(-1.0, abs=1e-6)
    assert w.grad is None  # nothing accumulated


def test_unpaired_signal_is_the_cosine_of_the_weighted_sum():
    """Two terms with known gradients (3, 0) and (0, 1) against a reference of gradient (1, 1): the sum's
    gradient is (3, 1), whose cosine with (1, 1) is 4 / (sqrt(10) sqrt(2)); neither term alone gives it."""
    w = torch.zeros(2, requires_grad=True)
    reference = w.sum()
    parts = {"reblur": 3 * w[0], "natural": w[1]}
    cos = gradient_cosines(reference, parts, [w], combined="unpaired")
    assert cos["unpaired"].item() == pytest.approx(4 / (math.sqrt(10) * math.sqrt(2)), abs=1e-6)
    assert cos["reblur"].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert cos["natural"].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    opposed = gradient_cosines(reference, {"a": 3 * w[0], "b": -5 * w[0]}, [w], combined="unpaired")
    assert opposed["unpaired"].item() == pytest.approx(-1 / math.sqrt(2), abs=1e-6)  # (-2, 0): the larger term wins


class _ZeroMotion(torch.nn.Module):
    """An M that sees no blur anywhere."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])


@pytest.fixture(scope="module")
def blurry_batch():
    """Camera-motion blur of procedural images with its true motion (built-in val images)."""
    from neurmap.synth.builtin import BuiltinTest

    leaves = {"r_min": 2.0, "r_max": 30.0, "radius_exponent": 3.0, "coverage": 4.0}
    camera = {"tx_max": 8.0, "ty_max": 8.0}
    data = BuiltinTest(num_images=4, image_size=48, seed=3, split="val", camera=camera, leaves=leaves)
    items = [data[i] for i in range(4)]
    return {k: torch.stack([it[k] for it in items]) for k in ("blur", "sharp", "motion")}


def _system(tiny_cfg, variant="net2", *extra):
    torch.manual_seed(0)
    overrides = (f"variant={variant}", "loss.sharp_prior=0", "loss.deblurred_motion_tv=0", "loss.natural=0", *extra)
    return instantiate_system(tiny_cfg(*overrides))


def test_true_motion_points_d_to_the_sharp_image_and_zero_motion_no_better(tiny_cfg, blurry_batch):
    system = _system(tiny_cfg)
    system.motion_net = _ZeroMotion()
    with torch.inference_mode():  # as in Lightning's validation: the diagnostic re-enables gradients itself
        cos = system.signal(blurry_batch)
    true, zero = cos["signal_cos/reblur_true_motion"], cos["signal_cos/reblur"]
    assert true.shape == zero.shape == (4,)
    assert true.mean() > 0, true
    assert zero.mean() <= true.mean(), (zero, true)
    assert torch.allclose(cos["signal_cos/unpaired"], zero)  # the reblur term is D's only unpaired term here
    assert all(p.grad is None for p in system.deblur_net.parameters())


def test_oracle_motion_feeds_r_the_data_motion(tiny_cfg, blurry_batch):
    system = _system(tiny_cfg, "oracle_motion")
    system.motion_net = _ZeroMotion()  # M says "no blur"; the oracle ablation must not listen
    with torch.inference_mode():
        cos = system.signal(blurry_batch)
    torch.testing.assert_close(cos["signal_cos/reblur"], cos["signal_cos/reblur_true_motion"])


def test_oracle_motion_without_data_motion_stops_with_one_line(tiny_cfg, blurry_batch):
    system = _system(tiny_cfg, "oracle_motion")
    variant = system.variant
    batch = {
        "paired": {"blur": blurry_batch["blur"][:2], "sharp": blurry_batch["sharp"][:2]},
        "blur": {"blur": blurry_batch["blur"][2:]},
        "sharp": {"sharp": blurry_batch["sharp"][2:]},
    }
    split = split_batch(batch, variant, False)
    with pytest.raises(ValueError, match=r"variant=oracle_motion .*with_motion=true") as err:
        system._oracle_motion(split)
    assert "\n" not in str(err.value)
    batch["blur"]["motion"] = blurry_batch["motion"][2:]
    motion = system._oracle_motion(split_batch(batch, variant, False))
    torch.testing.assert_close(motion, blurry_batch["motion"][2:] / system.reblur.alpha)


def test_oracle_motion_needs_r(tiny_cfg):
    with pytest.raises(Exception, match="oracle_motion feeds R"):
        instantiate_system(tiny_cfg("variant=baseline", "variant.oracle_motion=true"))


def test_batch_split_carries_the_unpaired_motion_only_when_the_data_has_it():
    split = BatchSplit(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), 1, False)
    assert split.unpaired_motion is None


def test_polar_flow_loss_scores_length_and_direction_apart():
    g = torch.tensor([0.0, 0.5]).view(1, 2, 1, 1)  # horizontal, 20 px at alpha 40
    half = flow_supervision(0.5 * g, g, "polar", eps=0.0)
    turned = flow_supervision(torch.tensor([0.5, 0.0]).view(1, 2, 1, 1), g, "polar", eps=0.0)
    assert half.item() == pytest.approx(0.25)  # length error only
    assert turned.item() == pytest.approx(0.5)  # right length, perpendicular: |g| away from the line
    assert flow_supervision(-g, g, "polar", eps=0.0).item() == pytest.approx(0.0, abs=1e-7)
    # direction unknown (uniform over the half circle): the EPE is lowest for a vector ~3/4 as long, the polar
    # loss for the true length
    theta = torch.arange(12) * math.pi / 12
    targets = 0.5 * torch.stack([theta.sin(), theta.cos()], 1).view(12, 2, 1, 1)

    def score(scale, norm):
        return flow_supervision((scale * g).expand(12, -1, -1, -1), targets, norm, eps=0.0).item()

    assert score(1.0, "polar") < score(0.75, "polar")
    assert score(0.75, "epe") < score(1.0, "epe")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from neurmap.data.io import write_image
    from neurmap.synth.procedural import dead_leaves

    root = tmp_path_factory.mktemp("photos")
    for i in range(2):
        rng = __import__("numpy").random.default_rng(i)
        write_image(root / f"p{i}.png", dead_leaves((80, 90), rng, r_min=2.0, r_max=20.0))
    return root


def _random_blur(root, **kw):
    args = {"samples": 8, "crop_size": 32, "length": (2.0, 12.0), "families": {"linear": 1, "smooth": 1}}
    return RandomBlur(root, **(args | kw))


def test_random_blur_is_reproducible_and_blurs_along_its_motion(photos):
    data = _random_blur(photos, deterministic=True, seed=5)
    a, b = data[3], data[3]
    assert all(torch.equal(a[k], b[k]) for k in ("blur", "sharp", "motion"))
    assert not torch.equal(data[3]["motion"], data[4]["motion"])
    assert a["blur"].shape == a["sharp"].shape == (3, 32, 32) and a["motion"].shape == (2, 32, 32)
    assert (a["motion"][1] >= 0).all()  # canonical
    lengths = a["motion"].norm(dim=0)
    assert lengths.min() >= 2.0 - 1e-4 and lengths.max() <= 12.0 + 1e-4
    # the blurry crop is the line blur of its sharp crop along its motion (away from the crop's border)
    again = line_blur(a["sharp"], a["motion"])
    torch.testing.assert_close(again[:, 8:-8, 8:-8], a["blur"][:, 8:-8, 8:-8], atol=1e-5, rtol=0)
    zero = _random_blur(photos, deterministic=True, length=(0.0, 0.0))[0]
    torch.testing.assert_close(zero["blur"], zero["sharp"])


def test_random_blur_training_stream_follows_torch_seed(photos):
    data = _random_blur(photos)
    torch.manual_seed(7)
    first = data[0]
    torch.manual_seed(7)
    assert torch.equal(first["blur"], data[0]["blur"])


def test_smooth_field_varies_smoothly_within_its_length_range():
    field = smooth_field((40, 50), __import__("numpy").random.default_rng(0), (5.0, 20.0), grid=(3, 3))
    assert field.shape == (2, 40, 50)
    step = torch.from_numpy(field).diff(dim=-1).abs().max()
    assert step < 2.0  # px per px: no jumps
    assert torch.from_numpy(field).norm(dim=0).std() > 0  # spatially varying


def test_a_short_pretraining_on_random_blur_lowers_epe(photos):
    torch.manual_seed(0)
    data = _random_blur(photos, deterministic=True, samples=8, length=(4.0, 12.0), families={"linear": 1})
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("blur", "motion")}
    net = MotionNet(width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def epe():
        with torch.no_grad():
            return motion_epe(canonicalize_motion(net(batch["blur"])) * 40, batch["motion"]).mean().item()

    before = epe()
    for _ in range(60):
        loss = flow_supervision(canonicalize_motion(net(batch["blur"])), batch["motion"] / 40, "polar")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert epe() < 0.85 * before, (before, epe())


def test_oracle_ablation_trains_on_data_with_motion_and_stops_without(fake_data_root, tiny_cfg, monkeypatch):
    from neurmap.errors import UsageError
    from neurmap.tasks.training import train
    from tests.conftest import compose, tiny_overrides

    monkeypatch.setenv("NEURMAP_DATA", str(fake_data_root))
    disk = ["data.num_workers=0", "data.paired.transform.crop_size=32", "data.batch_size_paired=2"]
    disk += ["data.batch_size_unpaired=2", "++trainer.fast_dev_run=true"]
    cfg = tiny_cfg("variant=oracle_motion", "data=kernel_synth", *disk)
    assert cfg.data.unpaired_blur.records.with_motion is True  # the variant makes the layout read it
    train(cfg)
    with pytest.raises(UsageError, match="needs the ground-truth motion") as err:
        train(compose(tiny_overrides("variant=oracle_motion"), tiny_cfg.tmp_path / "other"))  # no motion in builtin
    assert "\n" not in str(err.value)


def test_motion_pretraining_runs_on_random_blur_of_a_photo_folder(photos, tiny_cfg):
    from neurmap.tasks.training import train

    cfg = tiny_cfg(
        "variant=motion_pretrain",
        "data=random_blur",
        f"paths.photos={photos}",
        "data.paired.crop_size=32",
        "data.paired.length=[2.0,12.0]",
        "data.batch_size_paired=2",
        "data.val.random_blur.samples=2",
        "model.weights.flow=1.0",
        "model.weights.flow_norm=polar",
        "++trainer.fast_dev_run=true",
    )
    train(cfg)


def test_curves_read_lengths_and_val_errors_from_run_records(tmp_path):
    """The length curve reads variant and iterations from each evaluated run's config, the motion curve the val
    EPEs from a run's CSV log (iteration = logged step + 1)."""
    import json

    from lab import curves

    sweep = tmp_path / "evaluate"
    for job, (variant, iterations, psnr) in enumerate([("neurmap", 200, 27.1), ("baseline", 100, 26.9)]):
        run = tmp_path / "runs" / f"{variant}_{iterations}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"variant:\n  name: {variant}\niterations: {iterations}\n")
        record = {
            "ckpt": str(run / "checkpoints" / "last.ckpt"),
            "metrics": {"test/k/psnr": psnr, "test/k/input_psnr": 1.0},
        }
        (sweep / str(job)).mkdir(parents=True)
        (sweep / str(job) / "final_metrics.json").write_text(json.dumps(record))
    rows = curves.length_rows([sweep])
    assert [(r["variant"], r["iterations"], r["psnr"]) for r in rows] == [
        ("baseline", 100, 26.9),
        ("neurmap", 200, 27.1),
    ]
    assert all(math.isnan(r["lpips"]) for r in rows)
    log = tmp_path / "motion" / "csv" / "version_0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text(
        "step,val/a/motion_epe,val/a/motion_epe_zero,train/x\n249,3.5,9.0,\n260,,,1.0\n499,2.5,9.0,\n"
    )
    assert curves._val_epe(tmp_path / "motion") == {250: {"a": 3.5, "a_zero": 9.0}, 500: {"a": 2.5, "a_zero": 9.0}}


def test_weight_candidates_read_their_weights_and_val_metrics_and_pick_the_best_psnr_per_variant(tmp_path):
    import json

    from lab import curves

    sweep = tmp_path / "evaluate"
    content_led = OmegaConf.to_container(compose(["loss=content_led"], tmp_path / "compose").loss, resolve=True)
    candidates = [("oracle_r10", "oracle_motion", 10, 25.0), ("oracle_r100", "oracle_motion", 100, 25.4)]
    candidates += [("neurmap_r1", "neurmap", 1, 24.9), ("neurmap_r10", "neurmap", 10, 24.8)]
    for job, (name, variant, reblur, psnr) in enumerate(candidates):
        run = tmp_path / "weights" / name
        (run / ".hydra").mkdir(parents=True)
        loss = {**content_led, "reblur_deblur": reblur / 100}  # lambda = 100
        OmegaConf.save({"variant": {"name": variant}, "loss": loss}, run / ".hydra" / "config.yaml")
        metrics = {"val/k/psnr": psnr, "val/k/input_psnr": 1.0, "val/k/lpips": 0.2, "val/k/signal_cos/unpaired": 0.1}
        (sweep / str(job)).mkdir(parents=True)
        record = {"ckpt": str(run / "checkpoints" / "last.ckpt"), "metrics": metrics}
        (sweep / str(job) / "final_metrics.json").write_text(json.dumps(record))
    rows = {r["candidate"]: r for r in curves.weight_rows(sweep)}
    assert rows["oracle_r100"]["reblur_deblur"] == 100.0 and rows["oracle_r100"]["psnr"] == 25.4
    assert rows["neurmap_r1"]["signal_unpaired"] == 0.1 and math.isnan(rows["neurmap_r1"]["motion_epe"])
    assert [name for name, r in rows.items() if r["pick"]] == ["neurmap_r1", "oracle_r100"]


def test_val_curve_reads_every_validation_of_each_run(tmp_path):
    """`lab.curves val`: one row per logged validation (iteration = step + 1), the run's variant, PSNR, M's error
    and the unpaired signal, skipping the input's PSNR and the training rows; the folder names the run."""
    from lab import curves

    run = tmp_path / "0_neurmap"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("variant:\n  name: neurmap\n")
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text(
        "step,train/loss,val/mini_val/input_psnr,val/mini_val/psnr,val/mini_val/motion_epe,"
        "val/mini_val/signal_cos/unpaired\n"
        "9,0.5,,,,\n"
        "249,,23.6,24.5,13.8,-0.4\n"
        "499,,23.6,24.7,12.0,0.1\n"
    )
    rows = curves.val_rows([run])
    assert rows == [
        {
            "run": "0_neurmap",
            "variant": "neurmap",
            "iteration": 250,
            "psnr": 24.5,
            "motion_epe": 13.8,
            "signal_unpaired": -0.4,
        },
        {
            "run": "0_neurmap",
            "variant": "neurmap",
            "iteration": 500,
            "psnr": 24.7,
            "motion_epe": 12.0,
            "signal_unpaired": 0.1,
        },
    ]
