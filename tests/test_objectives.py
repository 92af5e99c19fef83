"""neurmap.losses.objectives: the batch split, which rows each objective reads, zero weights, the schemas.

The objectives are called with stub networks that record their inputs and return known motion maps, so
every expectation is computed here from terms.py, independently of the objective under test.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from neurmap.losses import terms
from neurmap.losses.objectives import (
    LossWeights,
    Variant,
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


class _RecordingMotion:
    """M stub: remembers every input batch and returns a motion map that is 0.1 x the image's mean value."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images.detach().clone())
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return 0.1 * mean.expand(-1, 2, *images.shape[-2:])


def test_split_names_the_paired_and_unpaired_rows():
    split = split_batch(_batch(), _variant(), map_on_paired=False)
    assert split.n_paired == 2 and split.blur.shape[0] == 5
    assert torch.equal(split.paired(split.blur), _images(2, 0.1))
    assert torch.equal(split.unpaired(split.blur), _images(3, 0.5))
    assert torch.equal(split.unpaired(split.sharp), _images(3, 0.7))
    assert torch.equal(split.map_rows(split.blur), _images(3, 0.5))  # the paper: MAP terms on unpaired rows
    whole = split_batch(_batch(), _variant(), map_on_paired=True)
    assert torch.equal(whole.map_rows(whole.blur), whole.blur)  # the authors' code: every row


def test_split_follows_the_variant_switches():
    unsupervised = split_batch(_batch(), _variant(paired=False), map_on_paired=False)
    assert unsupervised.n_paired == 0 and torch.equal(unsupervised.blur, _images(3, 0.5))  # paired loader unused
    supervised = split_batch({"paired": _batch()["paired"]}, _variant(motion=False, unpaired=False), False)
    assert supervised.n_paired == 2 and not supervised.has_unpaired
    with pytest.raises(KeyError, match="'sharp' loader"):
        split_batch({k: v for k, v in _batch().items() if k != "sharp"}, _variant(), False)


def _motion_parts(w, split, deblurred, motion, relative, reblur):
    """M's objective on the MAP rows of ``split``, as the system calls it."""
    rows = {k: split.map_rows(v) for k, v in (("blur", split.blur), ("sharp", split.sharp))}
    return motion_objective(
        w, **rows, deblurred=split.map_rows(deblurred), motion=motion, relative=relative, reblur=reblur
    )


def _deblur_inputs(split, deblurred, map_terms=True):
    """D's objective inputs, as the system builds them (one stage; a discriminator that averages colours)."""
    inputs = {"stages": [split.paired(deblurred)], "sharp": split.paired(split.sharp), "stage_weights": [1.0]}
    if map_terms:
        inputs |= {
            "blur": split.unpaired(split.blur),
            "deblurred": split.unpaired(deblurred),
            "deblurred_map": split.map_rows(deblurred),
            "motion": _RecordingMotion(),
            "relative": lambda b, d: b - d,
            "reblur": Reblur(),
            "sharp_expectation": lambda: torch.zeros(2),
            "discriminator": lambda x: [x],
        }
    return inputs


@pytest.mark.parametrize("map_on_paired", [False, True])
def test_motion_objective_reads_the_map_rows_only(weights, map_on_paired):
    w = dataclasses.replace(weights, map_on_paired=map_on_paired)
    split = split_batch(_batch(), _variant(), w.map_on_paired)
    deblurred = split.blur + 0.05
    motion = _RecordingMotion()
    parts, m_sharp = _motion_parts(w, split, deblurred, motion, lambda b, d: b - d, Reblur(alpha=4.0))
    (seen,) = motion.inputs  # one batched forward of blurry, sharp and S_hat rows
    rows = slice(0, None) if map_on_paired else slice(2, None)
    expected = torch.cat([split.blur[rows], split.sharp[rows], deblurred[rows]])
    assert torch.equal(seen, expected)
    assert m_sharp.shape[0] == (5 if map_on_paired else 3) and not m_sharp.requires_grad
    assert torch.allclose(m_sharp, motion(split.sharp[rows]))


@pytest.mark.parametrize("relative", [True, False])
def test_motion_objective_reblurs_along_the_motion_it_is_given(weights, relative):
    split = split_batch(_batch(), _variant(), False)
    deblurred = split.blur + 0.05
    motion, reblur = _RecordingMotion(), Reblur(alpha=4.0)
    fn = (lambda b, d: b - d) if relative else (lambda b, d: b)
    parts, _ = _motion_parts(weights, split, deblurred, motion, fn, reblur)
    blur, fake = split.unpaired(split.blur), split.unpaired(deblurred)
    m_rel = motion(blur) - motion(fake) if relative else motion(blur)
    expected = weights.reblur_motion * terms.reblur_loss(reblur(fake, m_rel), blur, weights.reblur_msssim_ratio)
    assert torch.allclose(parts["reblur"], expected)
    expected_tv = weights.motion_tv * terms.total_variation(m_rel)
    assert torch.allclose(parts["tv"], expected_tv)


def test_zero_weights_switch_terms_off(weights):
    w = dataclasses.replace(weights, kernel_sharp=0.0, kernel_hinge=0.0, motion_tv=0.0)
    split = split_batch(_batch(), _variant(), False)
    parts, _ = _motion_parts(w, split, split.blur + 0.05, _RecordingMotion(), lambda b, d: b - d, Reblur())
    assert set(parts) == {"reblur", "kernel_blurry", "kernel_deblurred"}
    w = dataclasses.replace(weights, sharp_prior=0.0, natural=0.0)
    parts = deblur_objective(w, **_deblur_inputs(split, split.blur + 0.05))
    assert set(parts) == {"content", "reblur", "motion_tv"}


def test_natural_real_batch_is_half_sharp_half_blurry():
    split = split_batch(_batch(n_unpaired=4), _variant(), False)
    real = natural_real(split, "natural")
    sharp, blur = _images(4, 0.7), _images(4, 0.5)
    assert torch.equal(real, torch.stack([sharp[0], sharp[2], blur[1], blur[3]]))  # as many as the fake batch
    assert torch.equal(natural_real(split, "sharp"), sharp)


def test_disc_objective_real_and_fake_batches():
    seen = []

    def disc(x):
        seen.append(x.detach().clone())
        return [x.mean(dim=1, keepdim=True)]

    split = split_batch(_batch(), _variant(discriminator="sharp", disc_fake_blurry=True), False)
    deblurred = split.blur + 0.05
    fake_rows = torch.cat([split.map_rows(deblurred), split.map_rows(split.blur)])  # Net1's fake batch
    parts = disc_objective(real=natural_real(split, "sharp"), fake=fake_rows, discriminator=disc)
    real, fake = seen
    assert torch.equal(real, _images(3, 0.7))
    assert torch.equal(fake, torch.cat([deblurred[2:], _images(3, 0.5)]))  # Net1: blurry images are fake too
    assert torch.allclose(parts["fake"], terms.lsgan([fake.mean(dim=1, keepdim=True)], 0.0))


def test_deblur_objective_content_on_paired_rows_and_warm_up(weights):
    split = split_batch(_batch(), _variant(), False)
    deblurred = split.blur + 0.05
    warm = deblur_objective(weights, **_deblur_inputs(split, deblurred, map_terms=False))
    expected = weights.content * terms.distance(deblurred[:2], _images(2, 0.2), weights.content_norm)
    assert set(warm) == {"content"} and torch.allclose(warm["content"], expected)
    full = deblur_objective(weights, **_deblur_inputs(split, deblurred))
    assert set(full) == {"content", "reblur", "sharp_prior", "motion_tv", "natural"}


def test_mappings_are_checked_against_the_schema(weights):
    values = dataclasses.asdict(weights)
    with pytest.raises(ValueError, match=r"loss: unknown keys \['kernel_blury'\]"):
        from_mapping(LossWeights, {**values, "kernel_blury": 1.0}, "loss")
    with pytest.raises(ValueError, match=r"missing keys \['content'\]"):
        from_mapping(LossWeights, {k: v for k, v in values.items() if k != "content"}, "loss")
    with pytest.raises(ValueError, match="loss.map_on_paired must be a bool"):
        from_mapping(LossWeights, {**values, "map_on_paired": "yes"}, "loss")
    assert from_mapping(LossWeights, {**values, "content": 3}, "loss").content == 3.0  # ints are weights too
