"""Backbones behind DeblurNet: any input size, published parameter counts, DMPHN's patch hierarchy,
weight loading in every accepted format, and the released DMPHN weights reproducing the authors'
published GoPro outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurmap.nets.backbones import DeblurNet, load_pretrained
from neurmap.nets.backbones.dmphn import DMPHN
from neurmap.nets.backbones.unet import UNet
from tests.conftest import released

BACKBONES = {
    "unet": (lambda: UNet(width=8, depth=3, identity_init=False), 4),
    "dmphn_1_2_4": (lambda: DMPHN(levels=3), 16),
    "dmphn_1_2_4_8": (lambda: DMPHN(levels=4), 16),
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_forward_backward_at_an_odd_size(name):
    make, multiple = BACKBONES[name]
    net = DeblurNet(make(), pad_multiple=multiple)
    x = torch.rand(1, 3, 37, 53, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


@pytest.mark.parametrize(("levels", "millions"), [(3, 5.42), (4, 7.23)])
def test_dmphn_parameter_counts_match_the_published_ones(levels, millions):
    net = DMPHN(levels=levels)
    assert round(_count(net) / 1e6, 2) == millions
    assert "input_shift" in net.state_dict() and "input_shift" not in dict(net.named_parameters())


def test_unet_has_no_buffers_and_starts_as_identity():
    # its speed is a benchmark figure (make bench-backbones), not a timed assertion
    net = UNet()
    assert not list(net.buffers())
    assert not any("Norm" in type(m).__name__ for m in net.modules())
    x = torch.rand(8, 3, 64, 64)
    assert torch.equal(net(x), x)
    opt = torch.optim.Adam(net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    net(x).abs().mean().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # it trains


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(depth=3)(torch.rand(1, 3, 10, 12))


def test_deblurnet_rejects_bad_input_and_settings():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 1, 8, 8\)"):
        DeblurNet(UNet(width=8), 4)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        DeblurNet(UNet(width=8), 4)(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="pad_mode"):
        DeblurNet(UNet(width=8), 4, pad_mode="mirror")
    with pytest.raises(ValueError, match="pad_multiple"):
        DeblurNet(UNet(width=8), 0)


class _Recorder(nn.Module):
    """Returns [half-resolution copy, full copy] of its (padded) input and remembers that input."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen = x
        return [x[..., ::2, ::2], x * 1.0]


def test_deblurnet_pads_reflect_and_crops_every_output():
    net = DeblurNet(_Recorder(), pad_multiple=16)
    x = torch.rand(2, 3, 37, 53)
    half, full = net.forward_stages(x)
    assert net.net.seen.shape[-2:] == (48, 64)
    assert torch.equal(net.net.seen, F.pad(x, (0, 11, 0, 11), mode="reflect"))
    assert torch.equal(full, x) and torch.equal(net(x), x)
    assert half.shape[-2:] == (19, 27)  # ceil(37 * 24 / 48), ceil(53 * 32 / 64)
    assert torch.equal(half, x[..., ::2, ::2])


def test_deblurnet_falls_back_to_replicate_on_tiny_images():
    net = DeblurNet(_Recorder(), pad_multiple=8)
    x = torch.rand(1, 3, 3, 5)
    assert torch.equal(net(x), x)
    assert torch.equal(net.net.seen, F.pad(x, (0, 3, 0, 5), mode="replicate"))


def _unrolled_dmphn_1_2_4_8(net: DMPHN, x: torch.Tensor) -> torch.Tensor:
    """DMPHN(1-2-4-8) written out patch by patch, the way the authors' DMPHN_1_2_4_8.py spells it."""
    e = [None, net.encoder_lv1, net.encoder_lv2, net.encoder_lv3, net.encoder_lv4]
    d = [None, net.decoder_lv1, net.decoder_lv2, net.decoder_lv3, net.decoder_lv4]
    h, w = x.shape[-2:]
    top, bot = x[..., : h // 2, :], x[..., h // 2 :, :]
    quarters = [top[..., : w // 2], top[..., w // 2 :], bot[..., : w // 2], bot[..., w // 2 :]]
    f4 = [torch.cat([e[4](q[..., : h // 4, :]), e[4](q[..., h // 4 :, :])], 2) for q in quarters]
    f4_top, f4_bot = torch.cat(f4[:2], 3), torch.cat(f4[2:], 3)
    f3 = [e[3](q + d[4](f)) for q, f in zip(quarters, f4, strict=True)]
    f3_top, f3_bot = torch.cat(f3[:2], 3) + f4_top, torch.cat(f3[2:], 3) + f4_bot
    f2 = torch.cat([e[2](top + d[3](f3_top)), e[2](bot + d[3](f3_bot))], 2) + torch.cat([f3_top, f3_bot], 2)
    return d[1](e[1](x + d[2](f2)) + f2)


def test_dmphn_follows_the_authors_patch_hierarchy():
    torch.manual_seed(0)
    net = DMPHN(levels=4, input_shift=0.25).eval()
    x = torch.rand(1, 3, 32, 16)
    with torch.no_grad():
        expected = _unrolled_dmphn_1_2_4_8(net, x - 0.25) + 0.25
        assert torch.allclose(net(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"H % 16 == 0 and W % 8 == 0"):
        net(torch.rand(1, 3, 24, 16))


ENCODER_SHAPES = {"layer1": (32, 3, 3, 3), "layer5": (64, 32, 3, 3), "layer9": (128, 64, 3, 3)}
DECODER_SHAPES = {"layer16": (128, 64, 4, 4), "layer20": (64, 32, 4, 4), "layer24": (3, 32, 3, 3)}
for _shapes, _blocks in (
    (ENCODER_SHAPES, {"layer2": 32, "layer3": 32, "layer6": 64, "layer7": 64, "layer10": 128, "layer11": 128}),
    (DECODER_SHAPES, {"layer13": 128, "layer14": 128, "layer17": 64, "layer18": 64, "layer21": 32, "layer22": 32}),
):
    for _name, _c in _blocks.items():
        _shapes[f"{_name}.0"] = _shapes[f"{_name}.2"] = (_c, _c, 3, 3)  # Sequential(conv, ReLU, conv)
TRANSPOSED = {"layer16", "layer20"}  # ConvTranspose2d weights are (in, out, k, k): bias size is shape[1]


def _official_layout(folder: Path, levels: int) -> dict[str, dict[str, torch.Tensor]]:
    """Write random tensors under the authors' per-level file and key names into ``folder``."""
    torch.manual_seed(0)
    written = {}
    for i in range(1, levels + 1):
        for kind, shapes in (("encoder", ENCODER_SHAPES), ("decoder", DECODER_SHAPES)):
            state = {}
            for name, shape in shapes.items():
                state[f"{name}.weight"] = torch.randn(shape)
                state[f"{name}.bias"] = torch.randn(shape[1] if name in TRANSPOSED else shape[0])
            torch.save(state, folder / f"{kind}_lv{i}.pkl")
            written[f"{kind}_lv{i}"] = state
    return written


@pytest.mark.parametrize("levels", [3, 4])
def test_official_dmphn_layout_loads_strictly_and_sets_the_shift(tmp_path, caplog, levels):
    written = _official_layout(tmp_path, levels)
    net = DeblurNet(DMPHN(levels=levels), 16)
    with caplog.at_level(logging.INFO, logger="neurmap.nets.backbones.dmphn"):
        load_pretrained(net, tmp_path)
    assert net.net.input_shift.item() == 0.5
    assert any("input_shift" in r.getMessage() and "0.5" in r.getMessage() for r in caplog.records)
    assert len(written) == 2 * levels
    for module_name, state in written.items():
        own = getattr(net.net, module_name).state_dict()
        assert own.keys() == state.keys()
        assert all(torch.equal(own[k], v) for k, v in state.items())
    # our own checkpoint of it remembers the shift
    torch.save({"state_dict": {f"deblur_net.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ours.ckpt")
    again = DeblurNet(DMPHN(levels=levels), 16)
    load_pretrained(again, tmp_path / "ours.ckpt")
    assert again.net.input_shift.item() == 0.5


def test_release_folder_errors_name_the_files_and_levels(tmp_path):
    _official_layout(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match=r"missing encoder_lv4\.pkl, decoder_lv4\.pkl"):
        load_pretrained(DeblurNet(DMPHN(levels=4), 16), tmp_path)
    with pytest.raises(ValueError, match="3 levels but the model has 2"):
        load_pretrained(DeblurNet(DMPHN(levels=2), 16), tmp_path)
    with pytest.raises(ValueError, match="UNet has no release-folder format"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path)


def test_neurmap_authors_whole_module_dmphn_state_dict_loads(tmp_path):
    """NeurMAP's ``DMPHN_deblur`` state dict (encoder_lv1..., maybe DataParallel-prefixed, no shift)."""
    source = DMPHN(levels=4)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if k != "input_shift"}
    assert "module.encoder_lv4.layer11.2.bias" in state
    torch.save(state, tmp_path / "G_net_latest.pth")
    target = DeblurNet(DMPHN(levels=4), 16)
    load_pretrained(target, tmp_path / "G_net_latest.pth")
    assert target.net.input_shift.item() == 0.0
    assert all(torch.equal(target.net.state_dict()[k], v) for k, v in source.state_dict().items())


def test_lightning_and_nested_state_dicts_load(tmp_path):
    source = UNet(width=8, identity_init=False)
    ref = source.state_dict()
    other = {"motion_net.conv.weight": torch.zeros(2), "discriminator.x": torch.zeros(1)}
    ckpt = {"state_dict": {**{f"deblur_net.net.{k}": v for k, v in ref.items()}, **other}, "epoch": 3}
    torch.save(ckpt, tmp_path / "lightning.ckpt")
    torch.save({"params": {f"module.{k}": v for k, v in ref.items()}, "iter": 5}, tmp_path / "wrapped.pth")
    torch.save({"weights": {f"net.{k}": v for k, v in ref.items()}}, tmp_path / "custom.pth")
    cases = [
        ("lightning.ckpt", None),
        ("lightning.ckpt", "state_dict"),
        ("wrapped.pth", None),
        ("custom.pth", "weights"),
    ]
    for file, key in cases:
        target = DeblurNet(UNet(width=8), 4)
        load_pretrained(target, tmp_path / file, key=key)
        assert all(torch.equal(target.net.state_dict()[k], v) for k, v in ref.items()), (file, key)


def test_wrong_checkpoints_raise_one_readable_error(tmp_path):
    torch.save(UNet(width=8).state_dict(), tmp_path / "unet.pth")
    with pytest.raises(
        ValueError,
        match=r"'.*unet\.pth' does not fit DMPHN: missing keys \(\d+\): decoder_lv1\.layer13.*, \.\.\.; "
        r"unexpected keys \(\d+\): down\.0",
    ):
        load_pretrained(DeblurNet(DMPHN(levels=3), 16), tmp_path / "unet.pth")
    full = UNet(width=8).state_dict()
    torch.save({k: v for k, v in full.items() if k != "head.bias"}, tmp_path / "truncated.pth")
    with pytest.raises(ValueError, match=r"missing keys \(1\): head\.bias$"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "truncated.pth")
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\): down\.0\.0\.bias ckpt\(16,\) vs model\(32,\)"):
        load_pretrained(DeblurNet(UNet(width=16), 4), tmp_path / "unet.pth")
    with pytest.raises(ValueError, match="has no key 'model'"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "unet.pth", key="model")
    torch.save({"epoch": 1, "note": "no weights"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="pretrained_key"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "empty.pth")
    torch.save(UNet(width=8), tmp_path / "pickled_module.pth")  # not loadable with weights_only=True
    with pytest.raises(ValueError, match="cannot be read as weights"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "pickled_module.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(DeblurNet(UNet(width=8), 4), tmp_path / "nope.pth")


def _read_rgb(path: Path) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return np.ascontiguousarray(image[:, :, ::-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("folder", "levels", "frame", "max_diff", "min_exact"),
    [("dmphn_1_2_4", 3, 0, 1, 0.999), ("dmphn_1_2_4_8", 4, 1, 6, 0.8)],
)
def test_released_dmphn_reproduces_published_gopro_outputs(folder, levels, frame, max_diff, min_exact):
    """The authors' GPU outputs, saved as 8-bit PNG, from ``$NEURMAP_RELEASES/fixtures``.

    The published PNGs were written by a torchvision whose ``save_image`` truncated
    (``mul(255).clamp(0, 255).byte()``; the ``add_(0.5)`` rounding came later): with truncation
    DMPHN(1-2-4) matches > 99.99 % of values exactly (rounding leaves half of them one level off),
    DMPHN(1-2-4-8) about 87 % (GPU vs CPU arithmetic). About 9 s (1-2-4) and 11 s (1-2-4-8) per
    1280x720 frame on 2 idle CPU cores: each network is checked on one of the two published frames.
    """
    weights, fixtures = released("weights", folder), released("fixtures", "dmphn_gopro", f"official_{folder}")
    if weights is None or fixtures is None:
        pytest.skip("released weights or published outputs not found (set NEURMAP_RELEASES)")
    fixtures = fixtures.parent
    net = DeblurNet(DMPHN(levels=levels), 16).eval()
    load_pretrained(net, weights)
    frames = sorted(p.name for p in (fixtures / "input").glob("*.png"))
    assert len(frames) > frame, f"expected {frame + 1} input frames in {fixtures / 'input'}, found {len(frames)}"
    name = frames[frame]
    blurry = _read_rgb(fixtures / "input" / name)
    published = _read_rgb(fixtures / f"official_{folder}" / name).astype(np.int16)
    x = torch.from_numpy(blurry).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = net(x)[0]
    ours = y.mul(255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().astype(np.int16)
    diff = np.abs(ours - published)
    assert diff.max() <= max_diff, (name, int(diff.max()))
    assert (diff <= 1).mean() > 0.99, (name, float((diff <= 1).mean()))
    assert (diff == 0).mean() >= min_exact, (name, float((diff == 0).mean()))


def test_dmphn_stack4_parameter_count_and_stage_outputs():
    from neurmap.nets.backbones.dmphn import DMPHNStack

    net = DMPHNStack(stacks=4)
    assert round(_count(net) / 1e6, 2) == 21.70  # 4 x DMPHN(1-2-4)
    outputs = DeblurNet(DMPHNStack(stacks=2), 8).forward_stages(torch.rand(1, 3, 20, 28))
    assert len(outputs) == 2 and all(o.shape == (1, 3, 20, 28) for o in outputs)


def test_dmphn_stack_of_one_is_dmphn_1_2_4():
    """Stage 1 of the stack is exactly DMPHN(1-2-4): same weights, same output."""
    from neurmap.nets.backbones.dmphn import DMPHNStack

    torch.manual_seed(0)
    single, stack = DMPHN(levels=3, input_shift=0.5), DMPHNStack(stacks=1, input_shift=0.5)
    for lv in (1, 2, 3):
        getattr(stack, f"encoder_s1_lv{lv}").load_state_dict(getattr(single, f"encoder_lv{lv}").state_dict())
        getattr(stack, f"decoder_s1_lv{lv}").load_state_dict(getattr(single, f"decoder_lv{lv}").state_dict())
    x = torch.rand(1, 3, 16, 24)
    assert torch.allclose(stack(x)[-1], single(x), atol=1e-6)


def test_dmphn_stack_release_folder_loads(tmp_path):
    from neurmap.nets.backbones.dmphn import DMPHNStack

    source = DMPHNStack(stacks=2)
    for name, module in source.named_children():
        torch.save(module.state_dict(), tmp_path / f"{name}.pkl")
    target = DeblurNet(DMPHNStack(stacks=2), 8)
    load_pretrained(target, tmp_path)
    assert target.net.input_shift.item() == 0.5
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.net.parameters()))
    (tmp_path / "decoder_s2_lv3.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="decoder_s2_lv3.pkl"):
        load_pretrained(DeblurNet(DMPHNStack(stacks=2), 8), tmp_path)


def test_neurmap_checkpoint_loads_even_when_the_yaml_names_an_official_key(tmp_path):
    """backbone yamls set pretrained_key to the official release's key (e.g. `params`); a neurmap
    checkpoint from our own training must still load with it."""
    source = UNet(width=8)
    torch.save({"state_dict": {f"deblur_net.net.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "a.ckpt")
    target = DeblurNet(UNet(width=8), 4)
    load_pretrained(target, tmp_path / "a.ckpt", key="params")
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.net.parameters()))
