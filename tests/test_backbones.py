"""Backbones behind DeblurNet: any input size, published parameter counts, weight loading, and the
released DMPHN weights reproducing the authors' published GoPro outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neurmap.nets.backbones import DeblurNet, load_pretrained
from neurmap.nets.backbones.dmphn import DMPHN
from neurmap.nets.backbones.unet import UNet
from tests.conftest import SHARED

BACKBONES = {
    "unet": (lambda: UNet(width=8, depth=3), 4),
    "dmphn_1_2_4": (lambda: DMPHN(levels=3), 8),
    "dmphn_1_2_4_8": (lambda: DMPHN(levels=4), 16),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_forward_backward_at_an_odd_size(name):
    make, multiple = BACKBONES[name]
    net = DeblurNet(make(), pad_multiple=multiple)
    x = torch.rand(1, 3, 37, 53, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(("levels", "millions"), [(3, 5.42), (4, 7.23)])
def test_dmphn_parameter_counts_match_the_published_ones(levels, millions):
    assert round(_count(DMPHN(levels=levels)) / 1e6, 2) == millions


def test_unet_starts_as_identity():
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(UNet(width=8)(x), x)


def test_deblurnet_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        DeblurNet(UNet(width=8), 4)(torch.rand(1, 1, 8, 8))


def _official_layout(folder: Path, levels: int) -> dict[str, dict[str, torch.Tensor]]:
    """Write random tensors under the authors' per-level names (encoder_lv{i}.pkl ...)."""
    torch.manual_seed(0)
    enc = {"layer1": (32, 3, 3, 3), "layer5": (64, 32, 3, 3), "layer9": (128, 64, 3, 3)}
    for layer, c in (
        ("layer2", 32),
        ("layer3", 32),
        ("layer6", 64),
        ("layer7", 64),
        ("layer10", 128),
        ("layer11", 128),
    ):
        enc[f"{layer}.0"] = enc[f"{layer}.2"] = (c, c, 3, 3)
    dec = {"layer16": (128, 64, 4, 4), "layer20": (64, 32, 4, 4), "layer24": (3, 32, 3, 3)}
    for layer, c in (
        ("layer13", 128),
        ("layer14", 128),
        ("layer17", 64),
        ("layer18", 64),
        ("layer21", 32),
        ("layer22", 32),
    ):
        dec[f"{layer}.0"] = dec[f"{layer}.2"] = (c, c, 3, 3)
    bias = {"layer16": 64, "layer20": 32, "layer24": 3}
    written = {}
    for i in range(1, levels + 1):
        for kind, shapes in (("encoder", enc), ("decoder", dec)):
            state = {}
            for name, shape in shapes.items():
                state[f"{name}.weight"] = torch.randn(shape)
                state[f"{name}.bias"] = torch.randn(bias.get(name, shape[0]))
            torch.save(state, folder / f"{kind}_lv{i}.pkl")
            written[f"{kind}_lv{i}"] = state
    return written


@pytest.mark.parametrize("levels", [3, 4])
def test_official_dmphn_layout_loads_strictly(tmp_path, levels):
    written = _official_layout(tmp_path, levels)
    net = DeblurNet(DMPHN(levels=levels), 16)
    load_pretrained(net, tmp_path)
    assert net.net.input_shift.item() == 0.5
    for i in range(levels):
        for kind, modules in (("encoder", net.net.encoders), ("decoder", net.net.decoders)):
            for key, value in written[f"{kind}_lv{i + 1}"].items():
                assert torch.equal(modules[i].state_dict()[key], value)


def test_release_folder_with_missing_files_names_them(tmp_path):
    _official_layout(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="encoder_lv4.pkl"):
        load_pretrained(DeblurNet(DMPHN(levels=4), 16), tmp_path)


def test_wrapped_state_dicts_load(tmp_path):
    source = UNet(width=8)
    torch.save(
        {"state_dict": {f"deblur_net.net.{k}": v for k, v in source.state_dict().items()}, "optimizer_states": []},
        tmp_path / "lightning.ckpt",
    )
    torch.save({"params": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "wrapped.pth")
    for file in ("lightning.ckpt", "wrapped.pth"):
        target = DeblurNet(UNet(width=8), 4)
        load_pretrained(target, tmp_path / file)
        for k, v in source.state_dict().items():
            assert torch.equal(target.net.state_dict()[k], v)


def test_wrong_checkpoint_names_the_missing_keys(tmp_path):
    torch.save(UNet(width=8).state_dict(), tmp_path / "unet.pth")
    with pytest.raises(
        ValueError,
        match=r"does not fit DMPHN: missing keys \(\d+\): decoders\.0\.layer13.*unexpected keys \(\d+\): down\.0",
    ):
        load_pretrained(DeblurNet(DMPHN(levels=3), 8), tmp_path / "unet.pth")
    truncated = dict(list(UNet(width=8).state_dict().items())[:-2])
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "truncated.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "nope.pth")


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "max_diff", "within_one"), [("dmphn_1_2_4", 1, 1.0), ("dmphn_1_2_4_8", 6, 0.99)])
def test_released_dmphn_reproduces_published_gopro_outputs(folder, max_diff, within_one):
    """Tolerances from shared/fixtures/README.md (the authors' GPU outputs, saved as 8-bit PNG)."""
    cv2 = pytest.importorskip("cv2")
    weights, fixtures = SHARED / "weights" / folder, SHARED / "fixtures" / "dmphn_gopro"
    if not weights.is_dir() or not fixtures.is_dir():
        pytest.skip(f"released weights or fixtures not found under {SHARED} (set NEURMAP_SHARED)")
    net = DeblurNet(DMPHN(levels=3 if folder == "dmphn_1_2_4" else 4), 16).eval()
    load_pretrained(net, weights)
    frame = "000003.png"  # one 1280x720 frame per model keeps this test near 15 s
    blurry = cv2.imread(str(fixtures / "input" / frame))[:, :, ::-1]
    published = cv2.imread(str(fixtures / f"official_{folder}" / frame))[:, :, ::-1].astype(np.int16)
    x = torch.from_numpy(blurry.copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = net(x)[0]
    ours = (y.clamp(0, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().astype(np.int16)
    diff = np.abs(ours - published)
    assert diff.max() <= max_diff
    assert (diff <= 1).mean() >= within_one
