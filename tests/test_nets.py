"""Motion network M, discriminator N, Xavier init, flow colours and image grids."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurmap.nets.discriminator import MultiscaleDiscriminator, PatchDiscriminator
from neurmap.nets.init import xavier_init_
from neurmap.nets.motion import MotionNet, reblur_motion, space_to_depth
from neurmap.utils.flow_vis import flow_to_color, make_grid

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


# ---------------------------------------------------------------------------------------------- M


def test_motion_net_parameter_count_follows_the_documented_architecture():
    """The authors' OffsetNet with nf = 16; each (transposed) conv counts cin * cout * k * k weights + cout biases."""
    enc1 = (12 * 16 * 25 + 16) + 6 * (16 * 16 * 25 + 16)  # 12 -> 16 5x5, then 3 res blocks of two 5x5
    enc2 = (16 * 32 * 25 + 32) + 6 * (32 * 32 * 25 + 32)
    enc3 = (32 * 64 * 25 + 64) + 6 * (64 * 64 * 25 + 64)
    bottleneck1 = (64 * 128 * 1 + 128) + (128 * 64 * 9 + 64)  # 1x1 to 2c, 3x3 back
    up1 = 64 * 32 * 16 + 32  # ConvT 4x4 64 -> 32
    bottleneck2 = (64 * 128 * 1 + 128) + (128 * 64 * 9 + 64)
    up2 = 64 * 16 * 16 + 16  # ConvT 64 -> 16
    bottleneck3 = (32 * 64 * 1 + 64) + (64 * 32 * 9 + 32)
    up3 = 32 * 32 * 16 + 32  # ConvT 32 -> 32
    head = 32 * 2 * 25 + 2  # 5x5 32 -> 2
    expected = enc1 + enc2 + enc3 + bottleneck1 + up1 + bottleneck2 + up2 + bottleneck3 + up3 + head
    assert expected == 1_128_002
    assert sum(p.numel() for p in MotionNet(width=16).parameters()) == expected


@pytest.mark.parametrize("size", [(32, 48), (16, 16), (37, 53), (5, 9)])
def test_motion_net_output_is_at_input_resolution_and_gradients_flow(size):
    net = MotionNet(width=4)
    x = torch.rand(2, 3, *size, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 2, *size)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_motion_net_pads_by_replication_and_crops():
    net = MotionNet(width=4).eval()
    x = torch.rand(1, 3, 37, 53)
    padded = F.pad(x, (0, 56 - 53, 0, 40 - 37), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :37, :53])


@pytest.mark.parametrize(("relative", "expected"), [(True, [-1.5, 0.25]), (False, [-1.0, 0.5])])
def test_reblur_motion_canonicalises_each_map_before_the_difference_then_scales(relative, expected):
    """M(B) = (0.5, -0.25) flips to (-0.5, 0.25); M(S_hat) = (0.25, 0.125) stays. Differencing the raw maps first
    would give (0.25, -0.375), canonically (-0.25, 0.375): not what training feeds R."""
    seen = []

    def m(x):
        seen.append(x)
        return x[:, :2]

    blurry = torch.tensor([0.5, -0.25, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    deblurred = torch.tensor([0.25, 0.125, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    motion = reblur_motion(m, blurry, deblurred, relative=relative, scale=2.0)
    assert motion.shape == (2, 2, 4, 5)
    assert torch.equal(motion, torch.tensor(expected).view(1, 2, 1, 1).expand(2, 2, 4, 5))
    assert len(seen) == (2 if relative else 1)  # the absolute motion does not run M on S_hat


def test_motion_net_has_no_normalisation_biased_convs_and_a_linear_signed_output():
    net = xavier_init_(MotionNet(width=8))
    assert not any(isinstance(m, NORMS) for m in net.modules())
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(m.bias is not None for m in convs)
    with torch.no_grad():
        y = net(torch.rand(2, 3, 16, 24))
    assert y.min() < 0 < y.max()  # nothing rectifies or squashes the output


def test_motion_net_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        MotionNet(width=4)(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="width"):
        MotionNet(width=0)


def test_space_to_depth_channel_order_is_dy_dx_c():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = space_to_depth(x)
    assert y.shape == (1, 8, 2, 2)
    # channel = (dy * 2 + dx) * C + c
    assert y[0, 3, 0, 0] == x[0, 1, 0, 1]  # dy 0, dx 1, c 1
    assert y[0, 4, 0, 0] == x[0, 0, 1, 0]  # dy 1, dx 0, c 0
    assert y[0, 7, 1, 1] == x[0, 1, 3, 3]  # dy 1, dx 1, c 1 of block (1, 1)
    with pytest.raises(ValueError, match="divisible"):
        space_to_depth(torch.rand(1, 1, 3, 4))


# ---------------------------------------------------------------------------------------------- N


def test_patch_discriminator_layers_and_map_size_match_pix2pixhd():
    disc = PatchDiscriminator(width=64, n_layers=3)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert [m.stride[0] for m in convs] == [2, 2, 2, 1, 1]
    assert all(m.kernel_size == (4, 4) and m.padding == (2, 2) and m.bias is not None for m in convs)
    assert not isinstance(disc.model[-1], (nn.Sigmoid, nn.Tanh))
    # 256 -> 129 -> 65 -> 33 (stride 2: n // 2 + 1) -> 34 -> 35 (stride 1: n + 1)
    assert disc(torch.rand(1, 3, 256, 256)).shape == (1, 1, 35, 35)


def test_patch_discriminator_width_is_capped_at_eight_times():
    convs = [m for m in PatchDiscriminator(width=4, n_layers=5).modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [4, 8, 16, 32, 32, 32, 1]


def test_multiscale_discriminator_scales_see_an_average_pooled_pyramid():
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(width=8, n_layers=2, num_scales=3)
    x = torch.rand(2, 3, 40, 40)
    maps = disc(x)
    assert len(maps) == 3
    assert maps[0].shape[-1] > maps[1].shape[-1] > maps[2].shape[-1]
    half = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(maps[1], disc.scales[1](half))
    torch.testing.assert_close(maps[2], disc.scales[2](F.avg_pool2d(half, 3, 2, 1, count_include_pad=False)))


def test_discriminator_has_no_batchnorm_and_stateless_instance_norm():
    disc = MultiscaleDiscriminator(width=8)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) for m in disc.modules())
    norms = [m for m in disc.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 2 * 3
    assert all(not m.affine and not m.track_running_stats for m in norms)
    assert sum(1 for _ in disc.buffers()) == 0


def test_discriminator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_layers"):
        PatchDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="num_scales"):
        MultiscaleDiscriminator(num_scales=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PatchDiscriminator(width=4)(torch.rand(1, 2, 32, 32))


# ------------------------------------------------------------------------------------------ init


def test_xavier_init_zero_bias_and_xavier_std():
    conv = xavier_init_(nn.Conv2d(64, 128, 5), gain=1.0)
    assert torch.count_nonzero(conv.bias) == 0
    fan_in, fan_out = 64 * 25, 128 * 25
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.02)
    conv = xavier_init_(nn.Conv2d(64, 128, 5), gain=2.0)
    assert conv.weight.std().item() == pytest.approx(2 * math.sqrt(2.0 / (fan_in + fan_out)), rel=0.02)


def test_xavier_init_covers_every_layer_of_m_and_returns_the_module():
    net = MotionNet(width=8)
    assert xavier_init_(net) is net
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    up = net.up3[0]  # ConvTranspose2d(16, 16, 4): fans 16 * 16 both ways
    assert up.weight.std().item() == pytest.approx(math.sqrt(2.0 / (2 * 16 * 16)), rel=0.05)


# ---------------------------------------------------------------------------------------- colours


def _uniform(dy: float, dx: float, size: int = 2) -> torch.Tensor:
    return torch.tensor([dy, dx]).view(1, 2, 1, 1).expand(1, 2, size, size).clone()


def test_flow_to_color_zero_field_is_white_without_nans():
    zero = flow_to_color(torch.zeros(2, 2, 4, 4))
    assert zero.shape == (2, 3, 4, 4)
    assert torch.isfinite(zero).all() and torch.equal(zero, torch.ones_like(zero))


@pytest.mark.parametrize(
    ("dy", "dx", "rgb"),
    [
        (0.0, 1.0, (1.0, 0.0, 0.0)),  # right: hue 0 deg, red
        (-1.0, 0.0, (0.5, 1.0, 0.0)),  # up (screen): hue 90 deg
        (0.0, -1.0, (0.0, 1.0, 1.0)),  # left: hue 180 deg, cyan
        (1.0, 0.0, (0.5, 0.0, 1.0)),  # down: hue 270 deg
    ],
)
def test_flow_to_color_hue_turns_counter_clockwise_on_screen(dy, dx, rgb):
    colour = flow_to_color(_uniform(dy, dx))
    expected = torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(colour, expected, atol=1e-5, rtol=0)


def test_flow_to_color_saturation_follows_magnitude():
    half = flow_to_color(_uniform(0.0, 0.5), max_magnitude=1.0)
    torch.testing.assert_close(half[0, :, 0, 0], torch.tensor([1.0, 0.5, 0.5]))
    clipped = flow_to_color(_uniform(0.0, 3.0), max_magnitude=1.0)
    torch.testing.assert_close(clipped[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    # default: normalised per image, so each image's largest vector is fully saturated
    field = torch.zeros(2, 2, 1, 2)
    field[0, 1], field[1, 1] = torch.tensor([1.0, 0.5]), torch.tensor([10.0, 5.0])
    colour = flow_to_color(field)
    assert colour.min() >= 0 and colour.max() <= 1
    torch.testing.assert_close(colour[0], colour[1])
    torch.testing.assert_close(colour[0, :, 0, 1], torch.tensor([1.0, 0.5, 0.5]))


def test_flow_to_color_rejects_bad_input():
    with pytest.raises(ValueError, match="motion"):
        flow_to_color(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="max_magnitude"):
        flow_to_color(torch.zeros(1, 2, 2, 2), max_magnitude=0.0)


def test_make_grid_layout():
    images = [torch.full((3, 4, 5), float(i)) for i in range(5)]
    grid = make_grid(images, nrow=2, padding=1, pad_value=-1.0)
    assert grid.shape == (3, 3 * (4 + 1) + 1, 2 * (5 + 1) + 1)
    assert grid[0, 1, 1] == 0.0 and grid[0, 1, 7] == 1.0 and grid[0, 6, 1] == 2.0 and grid[0, 11, 1] == 4.0
    assert grid[0, 0, 0] == -1.0 and grid[0, 11, 7] == -1.0  # frame and the empty sixth cell


def test_make_grid_accepts_a_batch_and_rejects_mixed_shapes():
    grid = make_grid(torch.rand(3, 3, 8, 6), nrow=4)
    assert grid.shape == (3, 8 + 2 * 2, 3 * (6 + 2) + 2)
    with pytest.raises(ValueError, match="one shape"):
        make_grid([torch.rand(3, 4, 4), torch.rand(3, 5, 4)], nrow=2)
    with pytest.raises(ValueError, match="at least one"):
        make_grid([], nrow=2)
