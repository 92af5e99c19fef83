"""Tiled inference, checkpoint loading and the deblur command line."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from neurmap.config import backbone_node
from neurmap.data.io import read_image, write_image
from neurmap.deblur import main as deblur_main
from neurmap.errors import UsageError
from neurmap.tasks.inference import _starts, load_networks, n_tiles, tiled
from neurmap.tasks.training import train
from tests import fake_data
from tests.conftest import compose, tiny_overrides
from tests.helpers import checksums


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose(tiny_overrides("test=false"), run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    write_image(folder / "a.png", fake_data.image(rng, (50, 70)))
    write_image(folder / "trip" / "b.jpg", fake_data.image(rng, (45, 61)))
    return folder


@pytest.mark.parametrize(("size", "tile", "overlap", "align"), [(100, 48, 32, 1), (131, 40, 16, 8), (64, 64, 8, 4)])
def test_tile_starts_cover_the_image_aligned(size, tile, overlap, align):
    starts = _starts(size, tile, overlap, align)
    assert starts[0] == 0 and starts[-1] + tile == size or size <= tile
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert all(s % align == 0 for s in starts[:-1])
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tiled_equals_whole_image_when_the_receptive_field_fits_the_overlap():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    net.append(nn.Conv2d(8, 3, 3, padding=1))  # receptive radius 3 px, well inside overlap / 4
    image = torch.rand(1, 3, 100, 130)
    with torch.no_grad():
        whole = net(image)
    calls = []
    out = tiled(lambda x: calls.append(x.shape) or net(x), image, tile=48, overlap=32)
    assert len(calls) == n_tiles(100, 130, 48, 32) > 4
    assert (out - whole).abs().max() < 1e-4


def test_tiled_runs_once_when_the_image_fits_and_rejects_bad_tiles():
    image = torch.rand(1, 3, 20, 30)
    assert torch.equal(tiled(lambda x: x * 2, image, tile=64), image * 2)
    with pytest.raises(ValueError, match="overlap < tile"):
        tiled(lambda x: x, image, tile=10, overlap=10)
    with pytest.raises(ValueError, match="one image"):
        tiled(lambda x: x, torch.rand(2, 3, 8, 8), tile=4)


def test_load_networks_rebuilds_d_and_m_from_a_neurmap_checkpoint(ckpt):
    nets = load_networks(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in nets.deblur.state_dict().items():
        assert torch.equal(value, state[f"deblur_net.{key}"])
    assert nets.motion is not None and nets.backbone == "unet" and nets.alpha == 40.0
    assert not nets.deblur.training


def test_load_networks_reads_the_motion_r_received_and_refuses_a_config_without_it(ckpt, tmp_path):
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = obj["hyper_parameters"]["config"]["model"]
    model |= {"relative_motion": True, "motion_scale": 1.5}
    torch.save(obj, tmp_path / "set.ckpt")
    nets = load_networks(tmp_path / "set.ckpt")
    assert (nets.relative_motion, nets.motion_scale) == (True, 1.5)
    for key in ("relative_motion", "motion_scale"):
        saved = model.pop(key)
        torch.save(obj, tmp_path / "without.ckpt")
        with pytest.raises(UsageError, match=rf"without\.ckpt: the saved config has no model\.{key} "):
            load_networks(tmp_path / "without.ckpt")
        model[key] = saved


NETS = ("deblur", "motion", "disc")


def test_a_checkpoint_rebuilds_its_training_system_and_names_its_backbone(ckpt):
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved = obj["hyper_parameters"]["config"]
    nets = load_networks(ckpt)
    assert (nets.backbone, nets.pad_multiple, nets.motion is not None) == ("unet", 4, True)
    system = nets.system()  # the whole training system, with the run's loss, variant and optimizers
    assert system.opt_names == list(NETS) and system.weights.lam == saved["loss"]["lam"] == 100.0
    with pytest.raises(UsageError, match="trained with backbone=unet, not backbone=mprnet"):
        load_networks(ckpt, backbone_node("mprnet"))


def test_release_weights_load_by_backbone_name(photos, tmp_path, capsys):
    """`backbone=<name>` (at model.deblur) says which network a plain state dict is for."""
    torch.manual_seed(0)
    net = instantiate(backbone_node("unet").net)
    torch.save(net.state_dict(), tmp_path / "unet.pth")
    out = tmp_path / "out"
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={tmp_path / 'unet.pth'}", "backbone=unet"]) == 0
    assert read_image(out / "a.png").shape == (3, 50, 70)
    assert "(unet, cpu" in capsys.readouterr().out
    assert deblur_main([f"input={photos}", f"output={tmp_path / 'again'}", f"ckpt={tmp_path / 'unet.pth'}"]) == 2
    assert "pass backbone=<name>" in capsys.readouterr().err


def test_ckpt_release_reads_the_releases_folder_and_a_missing_one_is_one_line(photos, tmp_path, monkeypatch, capsys):
    """`ckpt=release:<name>` is `$NEURMAP_RELEASES/weights/<name>`: the same outputs as that path; an unset
    variable or a missing entry stops with one line naming the variable and the entry expected."""
    torch.manual_seed(0)
    releases = tmp_path / "releases"
    (releases / "weights").mkdir(parents=True)
    torch.save(instantiate(backbone_node("unet").net).state_dict(), releases / "weights" / "unet.pth")
    by_path, by_release = tmp_path / "by_path", tmp_path / "by_release"
    assert (
        deblur_main(
            [f"input={photos}", f"output={by_path}", f"ckpt={releases / 'weights' / 'unet.pth'}", "backbone=unet"]
        )
        == 0
    )
    monkeypatch.delenv("NEURMAP_RELEASES", raising=False)
    assert deblur_main([f"input={photos}", f"output={by_release}", "ckpt=release:unet.pth", "backbone=unet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "neurmap.deblur: error: release:unet.pth needs NEURMAP_RELEASES=<folder> holding weights/unet.pth "
        "(a release folder or file; see README 'Released weights')"
    )
    monkeypatch.setenv("NEURMAP_RELEASES", str(releases))
    assert deblur_main([f"input={photos}", f"output={by_release}", "ckpt=release:unet.pth", "backbone=unet"]) == 0
    assert torch.equal(read_image(by_release / "a.png"), read_image(by_path / "a.png"))
    capsys.readouterr()
    assert (
        deblur_main([f"input={photos}", f"output={tmp_path / 'none'}", "ckpt=release:unet_v2.pth", "backbone=unet"])
        == 2
    )
    assert capsys.readouterr().err.strip() == (
        f"neurmap.deblur: error: release:unet_v2.pth: {releases}/weights/unet_v2.pth does not exist "
        f"(NEURMAP_RELEASES={releases} must hold weights/unet_v2.pth, a release folder or file; see README "
        "'Released weights')"
    )
    assert (
        deblur_main([f"input={photos}", f"output={tmp_path / 'none'}", "ckpt=release:../unet.pth", "backbone=unet"])
        == 2
    )
    assert "expected the name of an entry of $NEURMAP_RELEASES/weights" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_checkpoint_errors_say_what_to_do(ckpt, tmp_path):
    mprnet = backbone_node("mprnet")
    with pytest.raises(UsageError, match="trained with backbone=unet, not backbone=mprnet"):
        load_networks(ckpt, mprnet)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="not a neurmap checkpoint .* pass backbone=<name>"):
        load_networks(tmp_path / "other.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="junk.ckpt: not a checkpoint torch can load safely"):
        load_networks(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="nothing.ckpt does not exist"):
        load_networks(tmp_path / "nothing.ckpt")


def test_deblur_folder_mirrors_the_tree_with_motion_and_comparison(ckpt, photos, tmp_path, capsys):
    out = tmp_path / "out"
    settings = [f"ckpt={ckpt}", "motion=true", "compare=true", "tile=32", "overlap=16"]
    assert deblur_main([f"input={photos}", f"output={out}", *settings]) == 0
    for stem, size in (("a", (50, 70)), ("trip/b", (45, 61))):
        image = read_image(out / f"{stem}.png")
        assert image.shape == (3, *size)
        assert read_image(out / f"{stem}_motion.png").shape == (3, *size)
        assert (out / f"{stem}_compare.jpg").is_file()
    assert "2 deblurred, 0 already there, 0 failed" in capsys.readouterr().out
    assert deblur_main([f"input={photos}", f"output={out}", *settings]) == 0  # resumes: nothing left to do
    assert "0 deblurred, 2 already there" in capsys.readouterr().out


def test_deblur_tiled_and_whole_agree_away_from_seams(ckpt, photos, tmp_path):
    """The tiny U-Net downsamples twice; with aligned tiles and a wide overlap the seams vanish."""
    nets = load_networks(ckpt)
    image = read_image(photos / "a.png")[None]
    with torch.no_grad():
        whole = nets.deblur(image)
        parts = tiled(nets.deblur, image, tile=48, overlap=40, align=nets.pad_multiple)
    assert (parts - whole).abs().max() < 0.05
    assert (parts - whole).abs().mean() < 2e-3


def test_unreadable_photo_is_reported_and_the_rest_completes(ckpt, photos, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={ckpt}"]) == 1
    assert (out / "a.png").is_file() and (out / "trip" / "b.png").is_file() and not (out / "broken.png").exists()
    captured = capsys.readouterr()
    assert "broken.png: not a readable image" in captured.err and "1 failed" in captured.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["input={photos}", "output={photos}/out", "ckpt={ckpt}"], "is inside input="),
        (["input={photos}", "output={tmp}/out"], "ckpt=... is required"),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "tiles=3"],
            "unknown key 'tiles'; the keys are: bits, ckpt",
        ),
        (["input={tmp}/none", "output={tmp}/out", "ckpt={ckpt}"], "input=.*none does not exist"),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "backbone=nope"],
            "backbone=nope: no such option; choose one of: dmphn",
        ),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "tile=32"],
            "overlap=64 must be >= 0 and smaller than tile=32",
        ),
        (["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "tile=0"], "tile=0 must be a positive number of px"),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "bits=16", "suffix=.jpg"],
            "bits=16 suffix=.jpg: .jpg stores 8 bits",
        ),
        (["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "on_error=maybe"], "on_error=maybe: expected fail"),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "tile=abc"],
            "tile: Value 'abc' .* could not be converted to Integer",
        ),
        (
            ["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "suffix=.xyz"],
            "suffix=.xyz: not an image format OpenCV can write",
        ),
        (["input={photos}", "output={tmp}/out", "ckpt={ckpt}", "precision=fp8"], "precision must be one of"),
        (
            ["input={photos}", "output={ckpt}", "ckpt={ckpt}"],
            "output=.*last.ckpt is a file; a folder input needs a folder output",
        ),
        (
            ["input={photos}/a.png", "output={photos}/a.png", "ckpt={ckpt}", "overwrite=true"],
            "is the input image itself",
        ),
        (["input={photos}/a.png", "output={photos}", "ckpt={ckpt}", "overwrite=true"], "is the input image itself"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(ckpt, photos, tmp_path, capsys, args, message):
    argv = [a.format(photos=photos, ckpt=ckpt, tmp=tmp_path) for a in args]
    before = (photos / "a.png").read_bytes()
    assert deblur_main(argv) == 2
    assert (photos / "a.png").read_bytes() == before
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("neurmap.deblur: error:")
    assert re.search(message, err), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in read-only folders")
def test_a_read_only_output_folder_is_one_line(ckpt, photos, tmp_path, capsys):
    (tmp_path / "readonly").mkdir(mode=0o555)
    assert deblur_main([f"input={photos}", f"output={tmp_path / 'readonly' / 'out'}", f"ckpt={ckpt}"]) == 2
    assert re.search("cannot write in .*readonly", capsys.readouterr().err)


def test_outputs_get_the_permissions_of_a_plain_write(ckpt, photos, tmp_path):
    """Atomic writes go through a 0600 temporary file; the result has 0666 less the umask, as open() gives."""
    old = os.umask(0o022)
    try:
        assert deblur_main([f"input={photos / 'a.png'}", f"output={tmp_path / 'a_sharp.png'}", f"ckpt={ckpt}"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a_sharp.png").stat().st_mode) == 0o644


def test_two_inputs_with_one_output_name_are_refused(ckpt, photos, tmp_path, capsys):
    write_image(photos / "a.jpg", torch.rand(3, 40, 40))
    out = tmp_path / "out"
    write_image(out / "keep.png", torch.rand(3, 8, 8))
    before = checksums(photos, out)
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={ckpt}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"error: input=.*a\.(png|jpg) and .*a\.(png|jpg) both map", err)
    assert checksums(photos, out) == before


def test_a_rerun_with_another_checkpoint_or_settings_is_refused(ckpt, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={ckpt}"]) == 0
    capsys.readouterr()
    before = checksums(out)
    other = tmp_path / "other.ckpt"
    other.write_bytes(ckpt.read_bytes())
    for setting in (f"ckpt={other}", "tile=256"):
        ckpt_arg = setting if setting.startswith("ckpt=") else f"ckpt={ckpt}"
        extra = [] if setting.startswith("ckpt=") else [setting]
        assert deblur_main([f"input={photos}", f"output={out}", ckpt_arg, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "were made by another run" in err and "overwrite=true" in err, err
        assert checksums(out) == before
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={ckpt}"]) == 0  # the same settings resume
    assert "0 deblurred, 2 already there" in capsys.readouterr().out
    assert deblur_main([f"input={photos}", f"output={out}", f"ckpt={other}", "overwrite=true"]) == 0
    assert "2 deblurred" in capsys.readouterr().out


def test_an_unreadable_photo_exits_1_unless_on_error_skip(ckpt, photos, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"garbage")
    assert deblur_main([f"input={photos}", f"output={tmp_path / 'out'}", f"ckpt={ckpt}"]) == 1
    assert "error: 1 image(s) could not be read" in capsys.readouterr().err.strip().splitlines()[-1]
    assert deblur_main([f"input={photos}", f"output={tmp_path / 'out2'}", f"ckpt={ckpt}", "on_error=skip"]) == 0


def test_ctrl_c_and_sigterm_stop_with_one_line_and_status_1(ckpt, photos, tmp_path, capsys, monkeypatch):
    import signal

    from neurmap.tasks import deblurring

    for how in ("ctrl+c", "sigterm"):

        def stop(*args, how=how, **kwargs):
            if how == "ctrl+c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(deblurring, "deblur_image", stop)
        assert deblur_main([f"input={photos}", f"output={tmp_path / how}", f"ckpt={ckpt}"]) == 1
        err = capsys.readouterr().err.strip()
        expected = "SIGTERM" if how == "sigterm" else "Ctrl+C"
        assert err.splitlines()[-1] == (
            f"neurmap.deblur: error: stopped by {expected}; run the same command again to resume "
            "(finished images are kept)"
        )
        assert "Traceback" not in err


def test_a_junk_checkpoint_gives_no_unsafe_advice(photos, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a pickle at all")
    before = checksums(photos)
    assert deblur_main([f"input={photos}", f"output={tmp_path / 'out'}", f"ckpt={junk}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"neurmap.deblur: error: {junk}: not a checkpoint")
    assert "not a file of plain tensors" in err and "False" not in err and "weights_only=False" not in err
    assert checksums(photos) == before and not (tmp_path / "out").exists()


def test_paths_may_start_with_the_home_folder(ckpt, photos, tmp_path, monkeypatch):
    """``input=~/...`` where the shell left the tilde (zsh, or a quoted argument) still means the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert deblur_main([f"input=~/{photos.name}", "output=~/out", f"ckpt={ckpt}"]) == 0
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "trip" / "b.png").is_file()
