"""neurmap.losses.objectives: the batch split, which rows each objective reads, zero weights, lambda and beta,
the schemas.

The objectives take the networks' outputs; here those come from stubs that return known motion maps, so every
expectation is computed here from terms.py, independently of the objective under test.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from neurmap.losses import terms
from neurmap.losses.objectives import (
    LossWeights,
    UnpairedOutputs,
    Variant,
    content_objective,
    deblur_objective,
    disc_objective,
    from_mapping,
    motion_objective,
    natural_real,
    split_batch,
)
from neurmap.nets.reblur import Reblur


def _images(n: int, start: float) -> torch.Tensor:
    """n constant 3x8x8 images with distinct values start, start + 0.01, ... (rows are recognisable)."""
    return torch.stack([torch.full((3, 8, 8), start + 0.01 * i) for i in range(n)])


def _batch(n_paired: int = 2, n_unpaired: int = 3) -> dict:
    return {
        "paired": {"blur": _images(n_paired, 0.1), "sharp": _images(n_paired, 0.2)},
        "blur": {"blur": _images(n_unpaired, 0.5)},
        "sharp": {"sharp": _images(n_unpaired, 0.7)},
    }


def _variant(**changes) -> Variant:
    base = Variant(
        name="neurmap", motion=True, discriminator="natural", disc_fake_blurry=False, paired=True, unpaired=True
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def weights(tiny_cfg) -> LossWeights:
    """The default preset, as the system receives it."""
    return from_mapping(LossWeights, OmegaConf.to_container(tiny_cfg().loss, resolve=True), "loss")


def _motion(images: torch.Tensor) -> torch.Tensor:
    """M stub: a motion map that is 0.1 x the image's mean value."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return 0.1 * mean.expand(-1, 2, *images.shape[-2:])


def test_split_names_the_paired_and_unpaired_rows():
    split = split_batch(_batch(), _variant(), map_on_paired=False)
    assert split.n_paired == 2 and split.blur.shape[0] == 5
    assert torch.equal(split.paired(split.blur), _images(2, 0.1))
    assert torch.equal(split.unpaired(split.blur), _images(3, 0.5))
    assert torch.equal(split.unpaired(split.sharp), _images(3, 0.7))
    assert torch.equal(split.unsupervised_rows(split.blur), _images(3, 0.5))  # the paper: MAP terms on unpaired rows
    whole = split_batch(_batch(), _variant(), map_on_paired=True)
    assert torch.equal(whole.unsupervised_rows(whole.blur), whole.blur)  # the authors' code: every row


def test_split_follows_the_variant_switches():
    unsupervised = split_batch(_batch(), _variant(paired=False), map_on_paired=False)
    assert unsupervised.n_paired == 0 and torch.equal(unsupervised.blur, _images(3, 0.5))  # paired loader unused
    supervised = split_batch({"paired": _batch()["paired"]}, _variant(motion=False, unpaired=False), False)
    assert supervised.n_paired == 2 and not supervised.has_unpaired
    with pytest.raises(KeyError, match="'sharp' loader"):
        split_batch({k: v for k, v in _batch().items() if k != "sharp"}, _variant(), False)


def _motion_parts(w, blur, sharp, deblurred, relative):
    """M's objective on the given rows, with the stub M and the motion R receives made by ``relative``."""
    m_blur, m_sharp, m_fake = _motion(blur), _motion(sharp), _motion(deblurred)
    m_reblur = relative(m_blur, m_fake)
    maps = {"motion_blurry": m_blur, "motion_sharp": m_sharp, "motion_deblurred": m_fake, "motion_reblur": m_reblur}
    return motion_objective(w, blur=blur, reblurred=Reblur(alpha=4.0)(deblurred, m_reblur), **maps)


def _unpaired(blur, deblurred):
    """D's unpaired outputs, every field given (a discriminator that averages colours, a zero E[|M(S)|])."""
    motion = _motion(deblurred)
    reblurred = Reblur(alpha=4.0)(deblurred, (_motion(blur) - motion).detach())
    return UnpairedOutputs(blur, deblurred, reblurred, motion, torch.zeros(2), [deblurred.mean(dim=1, keepdim=True)])


@pytest.mark.parametrize("relative", [True, False])
def test_motion_objective_weighs_each_term_of_the_maps_it_is_given(weights, relative):
    blur, sharp = _images(3, 0.5), _images(3, 0.7)
    deblurred = blur + 0.05
    fn = (lambda b, d: b - d) if relative else (lambda b, d: b)
    parts = _motion_parts(weights, blur, sharp, deblurred, fn)
    m_rel = fn(_motion(blur), _motion(deblurred))
    expected = 100.0 * terms.reblur_loss(Reblur(alpha=4.0)(deblurred, m_rel), blur, 0.0)  # lambda x 1
    assert torch.allclose(parts["reblur"], expected)
    assert torch.allclose(parts["tv"], terms.total_variation(m_rel))
    assert torch.allclose(parts["kernel_sharp"], terms.kernel_sharp(_motion(sharp)))
    assert set(parts) == {"reblur", "kernel_blurry", "kernel_sharp", "kernel_deblurred", "tv"}  # hinge weight 0


def test_lambda_and_beta_scale_the_reconstruction_and_natural_terms(weights):
    blur, deblurred, sharp = _images(3, 0.5), _images(3, 0.55), _images(2, 0.2)
    halved = dataclasses.replace(weights, lam=50.0, beta=0.05)
    for w in (weights, halved):
        assert (w.reblur_motion, w.reblur_deblur, w.content, w.natural) == (1.0, 1.0, 1.0, 1.0)  # relative
    full = _motion_parts(weights, blur, sharp, deblurred, lambda b, d: b - d)
    half = _motion_parts(halved, blur, sharp, deblurred, lambda b, d: b - d)
    torch.testing.assert_close(half["reblur"], full["reblur"] / 2)
    torch.testing.assert_close(half["kernel_blurry"], full["kernel_blurry"])  # not a lambda term
    content = {"stages": [deblurred[:2]], "sharp": sharp, "stage_weights": [1.0]}
    torch.testing.assert_close(
        content_objective(halved, **content)["content"], content_objective(weights, **content)["content"] / 2
    )
    full, half = (deblur_objective(w, _unpaired(blur, deblurred)) for w in (weights, halved))
    for name in ("reblur", "natural"):
        torch.testing.assert_close(half[name], full[name] / 2)
    torch.testing.assert_close(half["sharp_prior"], full["sharp_prior"])  # its own weight, not beta's


def test_zero_weights_switch_terms_off(weights):
    w = dataclasses.replace(weights, kernel_sharp=0.0, kernel_hinge=0.0, motion_tv=0.0)
    blur = _images(3, 0.5)
    parts = _motion_parts(w, blur, _images(3, 0.7), blur + 0.05, lambda b, d: b - d)
    assert set(parts) == {"reblur", "kernel_blurry", "kernel_deblurred"}
    w = dataclasses.replace(weights, sharp_prior=0.0, natural=0.0)
    assert set(deblur_objective(w, _unpaired(blur, blur + 0.05))) == {"reblur", "motion_tv"}
    assert set(deblur_objective(weights.effective(), _unpaired(blur, blur + 0.05))) == {
        "reblur",
        "sharp_prior",
        "motion_tv",
        "natural",
    }


def test_outputs_left_out_switch_their_terms_off(weights):
    blur = _images(3, 0.5)
    given = _unpaired(blur, blur + 0.05)
    no_m = dataclasses.replace(given, reblurred=None, motion=None, sharp_expectation=None)
    assert set(deblur_objective(weights, no_m)) == {"natural"}  # Net1: N without M
    assert set(deblur_objective(weights, dataclasses.replace(given, disc_scores=None))) == {
        "reblur",
        "sharp_prior",
        "motion_tv",
    }


def test_effective_weights_fold_lambda_and_beta_in_once(weights):
    w = dataclasses.replace(weights, lam=50.0, beta=0.5, content=2.0, kernel_sharp=3.0)
    effective = w.effective()
    assert (effective.lam, effective.beta) == (1.0, 1.0)
    assert (effective.content, effective.reblur_deblur, effective.natural, effective.kernel_sharp) == (
        100.0,
        50.0,
        0.5,
        3.0,
    )
    assert effective.effective() == effective  # folding again changes nothing


def test_natural_real_batch_is_half_sharp_half_blurry():
    split = split_batch(_batch(n_unpaired=4), _variant(), False)
    real = natural_real(split, "natural")
    sharp, blur = _images(4, 0.7), _images(4, 0.5)
    assert torch.equal(real, torch.stack([sharp[0], sharp[2], blur[1], blur[3]]))  # as many as the fake batch
    assert torch.equal(natural_real(split, "sharp"), sharp)


def test_disc_objective_real_and_fake_batches():
    real, fake = [torch.full((2, 1, 4, 4), 0.75)], [torch.full((3, 1, 4, 4), 0.5), torch.full((3, 1, 2, 2), 0.25)]
    parts = disc_objective(real_scores=real, fake_scores=fake)
    assert parts["real"].item() == pytest.approx(0.25**2)  # (0.75 - 1)^2
    assert parts["fake"].item() == pytest.approx(0.5**2 + 0.25**2)  # summed over the scales


def test_deblur_objective_content_on_paired_rows(weights):
    split = split_batch(_batch(), _variant(), False)
    deblurred = split.blur + 0.05
    inputs = {"stages": [split.paired(deblurred)], "sharp": split.paired(split.sharp), "stage_weights": [1.0]}
    parts = content_objective(weights, **inputs)
    expected = 100.0 * terms.distance(deblurred[:2], _images(2, 0.2), "l2")  # lambda x 1
    assert set(parts) == {"content"} and torch.allclose(parts["content"], expected)
    assert content_objective(weights, stages=[deblurred[:0]], sharp=split.sharp[:0], stage_weights=[1.0]) == {}


def test_mappings_are_checked_against_the_schema(weights):
    values = dataclasses.asdict(weights)
    with pytest.raises(ValueError, match=r"loss: unknown keys \['kernel_blury'\]"):
        from_mapping(LossWeights, {**values, "kernel_blury": 1.0}, "loss")
    with pytest.raises(ValueError, match=r"missing keys \['content'\]"):
        from_mapping(LossWeights, {k: v for k, v in values.items() if k != "content"}, "loss")
    with pytest.raises(ValueError, match="loss.map_on_paired must be a bool"):
        from_mapping(LossWeights, {**values, "map_on_paired": "yes"}, "loss")
    assert from_mapping(LossWeights, {**values, "content": 3}, "loss").content == 3.0  # ints are weights too
