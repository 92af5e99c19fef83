"""NAFNet backbone: any input size through DeblurNet, the published GoPro parameter counts, a plain-ops
LayerNorm2d equal to channel-wise layer norm, the official checkpoint key layout, and tracing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurmap.config import backbone_node
from neurmap.nets.backbones import DeblurNet
from neurmap.nets.backbones.nafnet import LayerNorm2d, NAFNet
from tests.helpers import assert_checkpoint_round_trip

# Names and shapes of the official NAFNet-GoPro-width32 checkpoint (megvii-research/NAFNet,
# basicsr/models/archs/NAFNet_arch.py with width 32, enc [1, 1, 1, 28], middle 1, dec [1, 1, 1, 1]).
OFFICIAL_W32 = {
    "intro.weight": (32, 3, 3, 3),
    "intro.bias": (32,),
    "encoders.0.0.conv1.weight": (64, 32, 1, 1),
    "encoders.0.0.conv2.weight": (64, 1, 3, 3),
    "encoders.0.0.conv3.weight": (32, 32, 1, 1),
    "encoders.0.0.sca.1.weight": (32, 32, 1, 1),
    "encoders.0.0.conv4.weight": (64, 32, 1, 1),
    "encoders.0.0.conv5.weight": (32, 32, 1, 1),
    "encoders.0.0.norm1.weight": (32,),
    "encoders.0.0.norm2.bias": (32,),
    "encoders.0.0.beta": (1, 32, 1, 1),
    "encoders.0.0.gamma": (1, 32, 1, 1),
    "encoders.3.27.conv1.weight": (512, 256, 1, 1),
    "downs.0.weight": (64, 32, 2, 2),
    "downs.3.weight": (512, 256, 2, 2),
    "middle_blks.0.conv1.weight": (1024, 512, 1, 1),
    "middle_blks.0.beta": (1, 512, 1, 1),
    "ups.0.0.weight": (1024, 512, 1, 1),
    "ups.3.0.weight": (128, 64, 1, 1),
    "decoders.0.0.norm2.bias": (256,),
    "decoders.3.0.conv2.weight": (64, 1, 3, 3),
    "ending.weight": (3, 32, 3, 3),
    "ending.bias": (3,),
}
# 36 blocks x 18 tensors (conv1-5, sca.1 and norm1-2 weight + bias, beta, gamma)
# + intro 2 + ending 2 + downs 4 x 2 + ups 4 x 1 (bias-free)
OFFICIAL_W32_KEYS = 36 * 18 + 2 + 2 + 8 + 4


def _tiny() -> NAFNet:
    """Width 8, one block per level; beta/gamma made non-zero so every parameter gets a gradient."""
    torch.manual_seed(0)
    net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1, 1, 1), dec_blk_nums=(1, 1, 1, 1))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.uniform_(0.5, 1.0)
    return net


def test_forward_backward_through_deblurnet_at_an_odd_size():
    net = DeblurNet(_tiny(), pad_multiple=16)
    x = torch.rand(2, 3, 30, 42, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


def test_blocks_start_as_identity_and_bad_input_raises():
    net = NAFNet(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))
    block = net.encoders[0][0]
    x = torch.randn(1, 8, 8, 8)
    assert torch.equal(block(x), x)  # beta = gamma = 0 at init, as in the official code
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 3, 8, 10))
    with pytest.raises(ValueError, match="dec_blk_nums"):
        NAFNet(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1,))


@pytest.mark.parametrize(("width", "millions"), [(32, 17.11), (64, 67.89)])
def test_parameter_counts_match_the_published_ones(width, millions):
    with torch.device("meta"):  # count only: no memory, no init cost
        net = NAFNet(width=width, middle_blk_num=1, enc_blk_nums=(1, 1, 1, 28), dec_blk_nums=(1, 1, 1, 1))
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == millions


def test_layernorm2d_equals_channelwise_layer_norm():
    torch.manual_seed(1)
    norm = LayerNorm2d(5, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, 5, 4, 6) * 3 + 1).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = norm(x)
    ref = F.layer_norm(x_ref.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    (x_grad_ours, w_grad_ours) = (x.grad.clone(), norm.weight.grad.clone())
    norm.weight.grad = None
    ref.backward(g)
    torch.testing.assert_close(x_grad_ours, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w_grad_ours, norm.weight.grad, rtol=1e-4, atol=1e-5)


def test_official_key_layout_and_params_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    net = NAFNet(width=32)
    state = net.state_dict()
    assert {k: tuple(state[k].shape) for k in OFFICIAL_W32 if k in state} == OFFICIAL_W32
    assert len(state) == OFFICIAL_W32_KEYS and not list(net.buffers())
    assert "ups.0.0.bias" not in state
    saved = {k: torch.randn_like(v) for k, v in state.items()}
    assert_checkpoint_round_trip(
        DeblurNet(NAFNet(width=32), pad_multiple=16),
        saved,
        "params",
        tmp_path / "nafnet.pth",
        drop="middle_blks.0.beta",
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_jit_trace_has_no_python_ops_and_generalises_to_other_sizes():
    net = _tiny().eval()
    x = torch.rand(1, 3, 32, 48)
    traced = torch.jit.trace(net, x)
    assert not [n for n in traced.inlined_graph.nodes() if n.kind() == "prim::PythonOp"]
    other = torch.rand(2, 3, 48, 16)
    with torch.no_grad():
        torch.testing.assert_close(traced(other), net(other))


def test_torch_export_matches_eager():
    net = _tiny().eval()
    x = torch.rand(1, 3, 32, 48)
    exported = torch.export.export(net, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), net(x))


@pytest.mark.parametrize(("name", "width"), [("nafnet_w32", 32), ("nafnet_w64", 64)])
def test_yaml_configs(name, width):
    cfg = backbone_node(name)
    assert cfg.name == name and cfg.pretrained_key == "params" and cfg.optimizer.lr == 5.0e-5
    assert cfg.net.width == width and list(cfg.net.enc_blk_nums) == [1, 1, 1, 28]
    assert cfg.pad_multiple == 2 ** len(cfg.net.enc_blk_nums) and list(cfg.stage_weights) == [1.0]
    assert cfg.grad_clip is None
