"""Motion network M, discriminator N, Xavier init and flow colours."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neurmap.nets.discriminator import MultiscaleDiscriminator, PatchDiscriminator
from neurmap.nets.init import xavier_init_
from neurmap.nets.motion import MotionNet, space_to_depth
from neurmap.utils.flow_vis import flow_to_color, make_grid


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def test_motion_net_parameter_count_follows_the_documented_architecture():
    """Notes §1.2 with nf = 16: three 5x5 stages with 3 residual blocks each, bottlenecks, up-convs, head."""
    nf = 16

    def stage(cin, cout):
        return _conv(cin, cout, 5) + 3 * 2 * _conv(cout, cout, 5)

    def bottleneck(c):
        return _conv(c, 2 * c, 1) + _conv(2 * c, c, 3)

    expected = (
        stage(12, nf)
        + stage(nf, 2 * nf)
        + stage(2 * nf, 4 * nf)
        + bottleneck(4 * nf)
        + _conv(4 * nf, 2 * nf, 4)
        + bottleneck(4 * nf)
        + _conv(4 * nf, nf, 4)
        + bottleneck(2 * nf)
        + _conv(2 * nf, 2 * nf, 4)
        + _conv(2 * nf, 2, 5)
    )
    assert sum(p.numel() for p in MotionNet(width=nf).parameters()) == expected


@pytest.mark.parametrize("size", [(32, 48), (37, 53)])
def test_motion_net_output_is_at_input_resolution(size):
    net = MotionNet(width=4)
    x = torch.rand(2, 3, *size, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 2, *size)
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_motion_net_has_no_normalisation():
    norms = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in MotionNet().modules())


def test_space_to_depth_channel_order_is_dy_dx_c():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = space_to_depth(x)
    assert y.shape == (1, 8, 2, 2)
    # channel index = dy * 4 + dx * 2 + c: channel 3 is (dy 0, dx 1, c 1) -> x[0, 1, 0, 1] at block (0, 0)
    assert y[0, 3, 0, 0] == x[0, 1, 0, 1]
    assert y[0, 4, 0, 0] == x[0, 0, 1, 0]


def test_patch_discriminator_map_size_matches_pix2pixhd():
    assert PatchDiscriminator(width=8)(torch.rand(1, 3, 256, 256)).shape == (1, 1, 35, 35)


def test_multiscale_discriminator_returns_one_map_per_scale():
    maps = MultiscaleDiscriminator(width=8, num_scales=3)(torch.rand(2, 3, 64, 64))
    assert len(maps) == 3
    assert maps[0].shape[-1] > maps[1].shape[-1] > maps[2].shape[-1]
    disc = MultiscaleDiscriminator(width=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    assert all(not m.affine for m in disc.modules() if isinstance(m, nn.InstanceNorm2d))


def test_xavier_init_zero_bias_and_xavier_std():
    conv = xavier_init_(nn.Conv2d(64, 128, 5), gain=1.0)
    assert torch.count_nonzero(conv.bias) == 0
    fan_in, fan_out = 64 * 25, 128 * 25
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.05)


def test_flow_to_color():
    zero = flow_to_color(torch.zeros(1, 2, 4, 4))
    assert torch.allclose(zero, torch.ones_like(zero))  # no motion is white
    right = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    left = -right
    a, b = flow_to_color(right), flow_to_color(left)
    assert a.shape == (1, 3, 2, 2) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)  # opposite directions get different hues
    half = flow_to_color(right * 0.5, max_magnitude=1.0)
    assert not torch.allclose(half, a, atol=1e-3)  # saturation follows magnitude
    with pytest.raises(ValueError, match="motion"):
        flow_to_color(torch.zeros(1, 3, 2, 2))


def test_make_grid_layout():
    images = [torch.full((3, 4, 5), float(i)) for i in range(5)]
    grid = make_grid(images, nrow=2, padding=1, pad_value=-1.0)
    assert grid.shape == (3, 3 * (4 + 1) + 1, 2 * (5 + 1) + 1)
    assert grid[0, 1, 1] == 0.0 and grid[0, 1, 7] == 1.0 and grid[0, 11, 1] == 4.0
    assert grid[0, 0, 0] == -1.0
