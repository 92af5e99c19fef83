"""Loss terms and the sharp-motion pool, against values worked out by hand."""

import pytest
import torch

from neurmap.losses import terms
from neurmap.losses.pool import MotionPool


def test_total_variation_of_constant_is_zero_and_of_ramp_is_slope():
    assert terms.total_variation(torch.full((2, 2, 5, 7), 3.0)).item() == 0.0
    ramp = torch.arange(7.0).view(1, 1, 1, 7).expand(1, 2, 5, 7) * 0.5  # slope 0.5 along width
    assert terms.total_variation(ramp).item() == pytest.approx(0.5)


def test_kernel_blurry_is_zero_at_target_magnitude_either_sign():
    motion = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4)
    assert terms.kernel_blurry(motion, target=1.0).item() == 0.0
    assert terms.kernel_blurry(torch.zeros(1, 2, 4, 4), target=1.0).item() == pytest.approx(1.0)


def test_kernel_sharp_and_deblurred():
    assert terms.kernel_sharp(torch.full((1, 2, 3, 3), -0.25)).item() == pytest.approx(0.25)
    blurry = torch.full((1, 2, 3, 3), 0.5, requires_grad=True)
    deblurred = torch.full((1, 2, 3, 3), 0.2, requires_grad=True)
    loss = terms.kernel_deblurred(deblurred, blurry)
    assert loss.item() == pytest.approx(0.3)
    loss.backward()
    assert blurry.grad is None  # the blurry motion is a detached target
    assert deblurred.grad is not None


def test_kernel_hinge_only_penalises_larger_deblurred_motion():
    blurry = torch.tensor([0.3, 0.4]).view(1, 2, 1, 1)  # |.| = 0.5
    assert terms.kernel_hinge(torch.tensor([0.0, 0.4]).view(1, 2, 1, 1), blurry).item() == 0.0
    assert terms.kernel_hinge(torch.tensor([0.6, 0.8]).view(1, 2, 1, 1), blurry).item() == pytest.approx(0.5)


def test_sharp_prior_targets_pool_expectation():
    expected = torch.tensor([0.1, 0.2])
    motion = torch.tensor([-0.1, 0.2]).view(1, 2, 1, 1).expand(2, 2, 3, 3)
    assert terms.sharp_prior(motion, expected, "l2").item() == pytest.approx(0.0)
    assert terms.sharp_prior(torch.zeros(1, 2, 1, 1), expected, "l1").item() == pytest.approx(0.15)
    assert terms.sharp_prior(torch.zeros(1, 2, 1, 1), expected, "l2").item() == pytest.approx((0.01 + 0.04) / 2)


def test_lsgan_sums_over_scales():
    logits = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    assert terms.lsgan(logits, 1.0).item() == pytest.approx(2.0)
    assert terms.lsgan(logits, 0.0).item() == 0.0
    assert terms.lsgan(torch.full((1, 1, 3, 3), 0.5), 1.0).item() == pytest.approx(0.25)


def test_reblur_loss_is_mse_and_rejects_small_msssim_crops():
    a, b = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.1)
    assert terms.reblur_loss(a, b).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="161"):
        terms.reblur_loss(a, b, msssim_ratio=0.1)


def test_reblur_loss_msssim_adds_zero_for_identical_images():
    x = torch.rand(1, 3, 176, 176)
    assert terms.reblur_loss(x, x, msssim_ratio=0.1).item() == pytest.approx(0.0, abs=1e-5)


def test_distance_rejects_unknown_norm():
    with pytest.raises(ValueError, match="norm"):
        terms.distance(torch.zeros(1), torch.zeros(1), "l3")


def test_pool_is_fifo_over_sample_means():
    pool = MotionPool(size=3, channels=2)
    with pytest.raises(RuntimeError, match="empty"):
        pool.expectation()
    for value in (1.0, 2.0, 3.0, 4.0):  # one sample each; the first is pushed out
        pool.push(torch.full((1, 2, 4, 4), -value))
    assert pool.expectation().tolist() == pytest.approx([3.0, 3.0])
    pool.push(torch.tensor([10.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4))
    assert pool.expectation().tolist() == pytest.approx([(3 + 4 + 10) / 3, (3 + 4 + 0) / 3])


def test_pool_state_round_trips_through_state_dict():
    pool = MotionPool(size=4)
    pool.push(torch.rand(3, 2, 5, 5))
    other = MotionPool(size=4)
    other.load_state_dict(pool.state_dict())
    assert torch.equal(other.expectation(), pool.expectation())
    assert int(other.count) == 3
