"""MIMO-UNet / MIMO-UNet+ backbone: any input size through DeblurNet with 1/4, 1/2 and full outputs, the
per-scale residual structure, the published parameter counts, the official key layout, and the yamls."""

from __future__ import annotations

import hydra
import pytest
import torch

from neurmap.config import backbone_node
from neurmap.nets.backbones import DeblurNet
from neurmap.nets.backbones.mimo_unet import MIMOUNet
from tests.helpers import assert_checkpoint_round_trip

# Names and shapes read off chosj95/MIMO-UNet models/MIMOUNet.py + models/layers.py (base_channel 32, num_res 8):
# BasicConv keeps its conv in `.main.0`, ResBlock its two BasicConvs in `.main`, EBlock/DBlock in `.layers`.
OFFICIAL = {
    "Encoder.0.layers.0.main.0.main.0.weight": (32, 32, 3, 3),
    "Encoder.1.layers.7.main.1.main.0.weight": (64, 64, 3, 3),
    "Encoder.2.layers.3.main.0.main.0.bias": (128,),
    "Decoder.0.layers.0.main.1.main.0.weight": (128, 128, 3, 3),
    "Decoder.2.layers.7.main.1.main.0.bias": (32,),
    "feat_extract.0.main.0.weight": (32, 3, 3, 3),
    "feat_extract.1.main.0.weight": (64, 32, 3, 3),
    "feat_extract.2.main.0.weight": (128, 64, 3, 3),
    "feat_extract.3.main.0.weight": (128, 64, 4, 4),  # ConvTranspose2d: (in, out, k, k)
    "feat_extract.4.main.0.weight": (64, 32, 4, 4),
    "feat_extract.5.main.0.weight": (3, 32, 3, 3),
    "Convs.0.main.0.weight": (64, 128, 1, 1),
    "Convs.1.main.0.weight": (32, 64, 1, 1),
    "ConvsOut.0.main.0.weight": (3, 128, 3, 3),
    "ConvsOut.1.main.0.bias": (3,),
    "AFFs.0.conv.0.main.0.weight": (32, 224, 1, 1),
    "AFFs.1.conv.1.main.0.weight": (64, 64, 3, 3),
    "FAM1.merge.main.0.weight": (128, 128, 3, 3),
    "FAM2.merge.main.0.bias": (64,),
    "SCM1.main.0.main.0.weight": (32, 3, 3, 3),
    "SCM1.main.3.main.0.weight": (125, 64, 1, 1),
    "SCM2.main.1.main.0.weight": (32, 16, 1, 1),
    "SCM2.main.3.main.0.weight": (61, 32, 1, 1),
    "SCM2.conv.main.0.weight": (64, 64, 1, 1),
}
# Convs (weight + bias each): 2 x 3 scales x num_res x 2 in the residual stacks, plus 6 feat_extract,
# 2 Convs, 2 ConvsOut, 2 x 2 AFF, 2 FAM, 2 x 5 SCM = 26.
N_KEYS = {8: 2 * (12 * 8 + 26), 20: 2 * (12 * 20 + 26)}


def _count(net: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in net.parameters()) / 1e6, 2)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["mimo_unet", "mimo_unet_plus"])
def test_forward_backward_through_deblurnet_at_an_odd_size(dropout):
    torch.manual_seed(0)
    net = DeblurNet(MIMOUNet(num_res=1, dropout=dropout), pad_multiple=4).train()
    x = torch.rand(1, 3, 30, 42, requires_grad=True)
    stages = net.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [(1, 3, 8, 11), (1, 3, 15, 21), (1, 3, 30, 42)]
    assert all(torch.isfinite(s).all() for s in stages)
    sum(s.square().mean() for s in stages).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_stages(x)[-1])


def test_outputs_are_residuals_on_the_nearest_downsampled_input():
    torch.manual_seed(0)
    net = MIMOUNet(num_res=1, base_channel=8).eval()
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        for conv in (net.ConvsOut[0], net.ConvsOut[1], net.feat_extract[5]):
            conv.main[0].weight.zero_()
            conv.main[0].bias.zero_()
        out_4, out_2, out = net(x)
    assert torch.equal(out_4, x[..., ::4, ::4]) and torch.equal(out_2, x[..., ::2, ::2]) and torch.equal(out, x)


def test_dropout_acts_only_in_training():
    torch.manual_seed(0)
    net = MIMOUNet(num_res=1, base_channel=8, dropout=0.5)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(net.train()(x)[-1], net(x)[-1])
        assert torch.equal(net.eval()(x)[-1], net(x)[-1])


def test_bad_input_and_arguments_raise():
    net = MIMOUNet(num_res=1, base_channel=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 3, 16, 18))
    with pytest.raises(ValueError, match="num_res"):
        MIMOUNet(num_res=0)
    with pytest.raises(ValueError, match="base_channel"):
        MIMOUNet(base_channel=6)
    with pytest.raises(ValueError, match="dropout"):
        MIMOUNet(dropout=1.0)


def test_parameter_counts_match_the_published_ones():
    with torch.device("meta"):  # count only
        assert _count(MIMOUNet(num_res=8)) == 6.81
        assert _count(MIMOUNet(num_res=20, dropout=0.1)) == 16.11


@pytest.mark.parametrize("num_res", [8, 20])
def test_official_key_layout(num_res):
    with torch.device("meta"):
        state = MIMOUNet(num_res=num_res).state_dict()
    assert {k: tuple(state[k].shape) for k in OFFICIAL if k in state} == OFFICIAL
    assert len(state) == N_KEYS[num_res]
    assert f"Encoder.2.layers.{num_res - 1}.main.1.main.0.weight" in state
    assert f"Encoder.2.layers.{num_res}.main.0.main.0.weight" not in state
    assert not [k for k in state if k.startswith("drop")]


def test_official_style_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    saved = {k: torch.randn_like(v) for k, v in MIMOUNet().state_dict().items()}
    assert_checkpoint_round_trip(
        DeblurNet(MIMOUNet(), pad_multiple=4),
        saved,
        "model",
        tmp_path / "MIMO-UNet.pkl",
        drop="SCM2.conv.main.0.weight",
        prefix="module.",
    )


@pytest.mark.parametrize(
    ("name", "num_res", "dropout", "params"), [("mimo_unet", 8, 0.0, 6.81), ("mimo_unet_plus", 20, 0.1, 16.11)]
)
def test_backbone_config_builds_the_published_network_that_runs_any_size(name, num_res, dropout, params):
    """conf/backbone/<name> builds the network of the MIMO-UNet paper's size (6.81 M / 16.11 M parameters),
    and its padding multiple lets an unaligned image through all three scales (tested at a reduced width)."""
    cfg = backbone_node(name)
    with torch.device("meta"):
        net = hydra.utils.instantiate(cfg.net)
    assert isinstance(net, MIMOUNet) and _count(net) == params
    small = hydra.utils.instantiate(cfg.net, num_res=1, base_channel=8).eval()
    out = DeblurNet(small, cfg.pad_multiple)(torch.rand(1, 3, 37, 53))
    assert out.shape == (1, 3, 37, 53)
