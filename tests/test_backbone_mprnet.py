"""MPRNet backbone: any input size through DeblurNet with three outputs final last, the residual structure
of every stage, the published parameter count, the official checkpoint key layout, and its yaml."""

from __future__ import annotations

import hydra
import pytest
import torch

from neurmap.config import backbone_node
from neurmap.nets.backbones import DeblurNet
from neurmap.nets.backbones.mprnet import MPRNet
from tests.helpers import assert_checkpoint_round_trip

# Names and shapes read off swz30/MPRNet Deblurring/MPRNet.py with its defaults (n_feat 96,
# scale_unetfeats 48, scale_orsnetfeats 32, num_cab 8, kernel 3, reduction 4, bias False).
OFFICIAL = {
    "shallow_feat1.0.weight": (96, 3, 3, 3),
    "shallow_feat1.1.body.1.weight": (1,),  # the shared PReLU, stored under every CAB
    "shallow_feat3.1.CA.conv_du.2.weight": (96, 24, 1, 1),
    "stage1_encoder.encoder_level1.0.body.0.weight": (96, 96, 3, 3),
    "stage1_encoder.encoder_level1.0.body.2.weight": (96, 96, 3, 3),
    "stage1_encoder.encoder_level1.0.CA.conv_du.0.weight": (24, 96, 1, 1),
    "stage1_encoder.encoder_level3.1.CA.conv_du.2.weight": (192, 48, 1, 1),
    "stage1_encoder.down12.down.1.weight": (144, 96, 1, 1),
    "stage1_encoder.down23.down.1.weight": (192, 144, 1, 1),
    "stage2_encoder.csff_enc1.weight": (96, 96, 1, 1),
    "stage2_encoder.csff_dec3.weight": (192, 192, 1, 1),
    "stage1_decoder.skip_attn2.body.2.weight": (144, 144, 3, 3),
    "stage1_decoder.up21.up.1.weight": (96, 144, 1, 1),
    "stage2_decoder.up32.up.1.weight": (144, 192, 1, 1),
    "stage2_decoder.decoder_level3.1.body.0.weight": (192, 192, 3, 3),
    "stage3_orsnet.orb1.body.0.body.0.weight": (128, 128, 3, 3),
    "stage3_orsnet.orb2.body.7.CA.conv_du.0.weight": (32, 128, 1, 1),
    "stage3_orsnet.orb3.body.8.weight": (128, 128, 3, 3),
    "stage3_orsnet.up_enc1.up.1.weight": (96, 144, 1, 1),
    "stage3_orsnet.up_enc2.0.up.1.weight": (144, 192, 1, 1),
    "stage3_orsnet.up_dec2.1.up.1.weight": (96, 144, 1, 1),
    "stage3_orsnet.conv_enc1.weight": (128, 96, 1, 1),
    "stage3_orsnet.conv_dec3.weight": (128, 96, 1, 1),
    "sam12.conv1.weight": (96, 96, 1, 1),
    "sam12.conv2.weight": (3, 96, 1, 1),
    "sam23.conv3.weight": (96, 3, 1, 1),
    "concat12.weight": (96, 192, 3, 3),
    "concat23.weight": (128, 192, 3, 3),
    "tail.weight": (3, 128, 3, 3),
}
NOT_OFFICIAL = ("stage1_encoder.csff_enc1.weight", "tail.bias", "stage3_orsnet.orb1.body.8.bias", "concat12.bias")
# CABs: 3 shallow + 2 encoders x 6 + 2 decoders x (6 + 2 skip) + 3 ORBs x 8 = 55, 5 tensors each
# (conv, PReLU, conv, 2 attention convs); other convs: 3 shallow + 4 down + 6 csff + 4 up + 3 ORB tails
# + 6 ORSNet up + 6 ORSNet 1x1 + 6 SAM + concat12, concat23, tail = 41.
N_CABS = 55
OFFICIAL_KEYS = N_CABS * 5 + 41


def _tiny() -> MPRNet:
    """Width 8, one CAB per ORB; reduction 2 so each channel attention keeps 4 hidden ReLUs (with 2, all of
    them can start dead and the attention convs get no gradient)."""
    torch.manual_seed(0)
    return MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=2)


def test_forward_backward_through_deblurnet_at_an_odd_size():
    net = DeblurNet(_tiny(), pad_multiple=8)
    x = torch.rand(1, 3, 30, 42, requires_grad=True)
    stages = net.forward_stages(x)
    assert len(stages) == 3 and all(s.shape == x.shape and torch.isfinite(s).all() for s in stages)
    y = net(x)
    torch.testing.assert_close(y, stages[-1])
    sum(s.square().mean() for s in stages).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_outputs_are_stage1_stage2_final_residuals_on_the_input():
    net = _tiny().eval()
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        net.sam12.conv2.weight.zero_()  # stage 1's image becomes the input itself
        net.tail.weight.zero_()  # so does the final one
        s1, s2, final = net(x)
    assert torch.equal(s1, x) and torch.equal(final, x)
    assert not torch.allclose(s2, x)
    with torch.no_grad():
        net.sam23.conv2.weight.zero_()
        assert torch.equal(net(x)[1], x)


def test_bad_input_and_arguments_raise():
    net = _tiny()
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 3, 16, 20))
    with pytest.raises(ValueError, match="in_c must equal out_c"):
        MPRNet(in_c=3, out_c=1, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    with pytest.raises(ValueError, match="kernel_size"):
        MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, kernel_size=2)


def test_parameter_count_matches_the_published_one():
    with torch.device("meta"):  # count only
        net = MPRNet()
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 20.13


def test_official_key_layout_and_state_dict_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = MPRNet()
    state = net.state_dict()
    assert {k: tuple(state[k].shape) for k in OFFICIAL if k in state} == OFFICIAL
    assert not [k for k in NOT_OFFICIAL if k in state]
    assert len(state) == OFFICIAL_KEYS and not list(net.buffers())
    prelu = [k for k in state if k.endswith("body.1.weight") and state[k].shape == (1,)]
    assert len(prelu) == N_CABS and len({state[k].data_ptr() for k in prelu}) == 1  # one shared instance

    saved = {k: torch.randn_like(v) for k, v in state.items()}
    shared = torch.tensor([0.3])
    saved.update({k: shared.clone() for k in prelu})  # a real checkpoint repeats the shared value
    assert_checkpoint_round_trip(
        DeblurNet(MPRNet(), pad_multiple=8),
        saved,
        "state_dict",
        tmp_path / "model_deblurring.pth",
        drop="sam23.conv3.weight",
        prefix="module.",
    )


def test_backbone_config_builds_the_published_network_that_runs_any_size():
    """conf/backbone/mprnet builds the 20.13 M-parameter network of the MPRNet paper, and its padding
    multiple lets an unaligned image through every stage (tested at a reduced width)."""
    cfg = backbone_node("mprnet")
    with torch.device("meta"):
        net = hydra.utils.instantiate(cfg.net)
    assert isinstance(net, MPRNet) and round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 20.13
    small = hydra.utils.instantiate(cfg.net, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    out = DeblurNet(small, cfg.pad_multiple)(torch.rand(1, 3, 37, 53))
    assert out.shape == (1, 3, 37, 53)
