"""Reblur module R: identity, box filter, the authors' sampling grid, gradients, no parameters."""

import pytest
import torch
import torch.nn.functional as F

from neurmap.nets.reblur import Reblur, canonicalize_motion, reblur


def _box_rows(image: torch.Tensor, length: int) -> torch.Tensor:
    """Independent reference: mean over `length` horizontal neighbours, edges clamped."""
    r = length // 2
    padded = F.pad(image, (r, r, 0, 0), mode="replicate")
    return F.avg_pool2d(padded, kernel_size=(1, length), stride=1)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_zero_motion_is_identity(padding_mode):
    image = torch.rand(2, 3, 17, 23)
    out = reblur(image, torch.zeros(2, 2, 17, 23), alpha=40.0, n_samples=15, padding_mode=padding_mode)
    assert torch.allclose(out, image, atol=1e-5)


@pytest.mark.parametrize("length", [3, 5, 9])
def test_constant_horizontal_motion_is_row_box_filter(length):
    alpha = 40.0
    image = torch.rand(1, 3, 12, 30)
    motion = torch.zeros(1, 2, 12, 30)
    motion[:, 1] = (length - 1) / alpha  # full length L-1 px with L samples -> integer offsets
    out = reblur(image, motion, alpha=alpha, n_samples=length, padding_mode="border")
    assert torch.allclose(out, _box_rows(image, length), atol=1e-5)


def test_constant_vertical_motion_is_column_box_filter():
    image = torch.rand(1, 1, 20, 9)
    motion = torch.zeros(1, 2, 20, 9)
    motion[:, 0] = 4 / 40.0
    out = reblur(image, motion, alpha=40.0, n_samples=5, padding_mode="border")
    expected = _box_rows(image.transpose(-1, -2), 5).transpose(-1, -2)
    assert torch.allclose(out, expected, atol=1e-5)


def test_matches_authors_sampling_grid():
    """alpha=40, N=15 equals the authors' 15 offsets 20k/7*m, k=-7..7, zero padding."""
    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 20)
    motion = 0.2 * torch.randn(2, 2, 16, 20)
    out = reblur(image, motion, alpha=40.0, n_samples=15, padding_mode="zeros")
    h, w = image.shape[-2:]
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    acc = torch.zeros_like(image)
    for k in range(-7, 8):
        y = ii + 20 * k / 7 * motion[:, 0]
        x = jj + 20 * k / 7 * motion[:, 1]
        grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)
        acc += F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    assert torch.allclose(out, acc / 15, atol=1e-5)


def test_sign_of_motion_does_not_matter():
    image = torch.rand(1, 3, 10, 10)
    motion = 0.1 * torch.randn(1, 2, 10, 10)
    assert torch.allclose(reblur(image, motion, 40.0), reblur(image, -motion, 40.0), atol=1e-5)


def test_gradients_reach_image_and_motion():
    image = torch.rand(1, 3, 12, 12, requires_grad=True)
    motion = (0.05 + 0.1 * torch.rand(1, 2, 12, 12)).requires_grad_()
    reblur(image, motion, alpha=40.0, n_samples=7).square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert motion.grad is not None and motion.grad.abs().sum() > 0


def test_gradcheck_float64():
    image = torch.rand(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    motion = (0.03 + 0.02 * torch.rand(1, 2, 6, 7, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: reblur(a, b, alpha=10.0, n_samples=3), (image, motion))


def test_module_has_no_parameters_or_buffers():
    module = Reblur(alpha=40.0, n_samples=15)
    assert list(module.parameters()) == []
    assert list(module.buffers()) == []
    assert module.state_dict() == {}


def test_runs_in_float32_under_autocast():
    image = torch.rand(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Reblur(alpha=40.0, n_samples=5)(image.bfloat16(), torch.full((1, 2, 8, 8), 0.05).bfloat16())
    assert out.dtype == torch.float32


def test_canonicalize_flips_negative_horizontal():
    motion = torch.tensor([[[[0.3]], [[-0.5]]], [[[-0.2]], [[0.4]]]])  # (2, 2, 1, 1)
    out = canonicalize_motion(motion)
    assert out[0, :, 0, 0].tolist() == pytest.approx([-0.3, 0.5])
    assert out[1, :, 0, 0].tolist() == pytest.approx([-0.2, 0.4])
    assert (out[:, 1] >= 0).all()


@pytest.mark.parametrize(
    ("image_shape", "motion_shape"),
    [((3, 8, 8), (1, 2, 8, 8)), ((1, 3, 8, 8), (1, 3, 8, 8)), ((1, 3, 8, 8), (1, 2, 8, 9))],
)
def test_bad_shapes_raise(image_shape, motion_shape):
    with pytest.raises(ValueError, match="must"):
        reblur(torch.rand(image_shape), torch.rand(motion_shape), alpha=40.0)


def test_bad_settings_raise_in_the_function_and_when_the_module_is_built():
    with pytest.raises(ValueError, match="padding_mode"):
        Reblur(padding_mode="wrap")
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        Reblur(n_samples=0)
    image, motion = torch.rand(1, 3, 4, 4), torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="padding_mode"):
        reblur(image, motion, alpha=40.0, padding_mode="wrap")
    with pytest.raises(ValueError, match="n_samples"):
        reblur(image, motion, alpha=40.0, n_samples=0)
