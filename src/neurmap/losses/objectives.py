"""NeurMAP's three phase objectives (paper eq. 10-12), their weights' schema and the batch split they read.

* :class:`LossWeights` is the structured-config schema of ``conf/loss`` (registered by :mod:`neurmap.config`
  as ``loss/schema``, which every preset extends): a typo or a missing key fails when the config is composed,
  naming the key. :class:`Variant` does the same for ``conf/variant``.
* :class:`BatchSplit` names the paired and unpaired rows of a combined batch once, so no step slices by
  position.
* :func:`motion_objective`, :func:`disc_objective` and :func:`deblur_objective` return the **weighted** terms
  of one step as a dict (their sum is the step's loss; they are logged as ``train/<net>/weighted/<term>``). A
  term whose weight is 0 is not computed and not logged: zero weights mean "off" everywhere.

To change one loss term: its function in :mod:`neurmap.losses.terms`, its weight here and in
``conf/loss/paper_literal.yaml``, and the line below that adds it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from neurmap.losses import terms

__all__ = [
    "BatchSplit",
    "LossWeights",
    "MotionPretrainWeights",
    "Variant",
    "content_loss",
    "deblur_objective",
    "disc_objective",
    "from_mapping",
    "motion_objective",
    "split_batch",
]

Tensor = torch.Tensor
Parts = dict[str, Tensor]


@dataclass
class LossWeights:
    """The weights of ``conf/loss`` (paper eq. 4-12). Values live in the yaml presets, never here."""

    name: str = MISSING
    lam: float = MISSING  # lambda: reconstruction terms (interpolated into the fields below)
    beta: float = MISSING  # beta: natural-image prior
    reblur_motion: float = MISSING  # L_reblur in M's objective (eq. 10)
    reblur_deblur: float = MISSING  # L_reblur in D's objective (eq. 11)
    reblur_msssim_ratio: float = MISSING  # extra ratio * (1 - MS-SSIM) inside L_reblur
    content: float = MISSING  # paired content loss
    content_norm: str = MISSING  # l1 | l2
    kernel_blurry: float = MISSING  # |M(B)| -> target (eq. 5)
    kernel_blurry_target: float = MISSING  # in motion units (1 unit = alpha px)
    kernel_sharp: float = MISSING  # M(S) -> 0 (eq. 5)
    kernel_deblurred: float = MISSING  # M(D*(B)) -> detach(M(B)) (eq. 5)
    kernel_hinge: float = MISSING  # authors' |M(S_hat)| <= |M(B)| hinge
    motion_tv: float = MISSING  # TV of the relative motion in M's objective (eq. 6)
    sharp_prior: float = MISSING  # |M*(D(B))| -> E[|M*(S)|] (eq. 7)
    sharp_prior_norm: str = MISSING  # l1 | l2
    natural: float = MISSING  # LSGAN natural-image prior on D (eq. 8)
    deblurred_motion_tv: float = MISSING  # TV of M(S_hat) in D's objective (eq. 9)
    image_tv: float = MISSING  # TV of the deblurred image
    map_on_paired: bool = MISSING  # MAP terms on the whole batch (true) or the unpaired rows only (false)


@dataclass
class Variant:
    """The switches of ``conf/variant`` (Table 3 ablations): which networks and data a run uses."""

    name: str = MISSING
    motion: bool = MISSING  # M and R
    discriminator: str = MISSING  # natural | sharp | none
    disc_fake_blurry: bool = MISSING  # blurry images count as fake too (Net1)
    paired: bool = MISSING  # content loss on the paired loader
    unpaired: bool = MISSING  # MAP terms on the unpaired loaders
    oracle_motion: bool = MISSING  # ablation: R gets the unpaired images' true motion in D's reblur term
    motion_learns: bool = True  # M has its own step (the paper); false = M stays as it started (frozen)


@dataclass
class MotionPretrainWeights:
    """The weights of ``conf/model/motion_pretrain.yaml`` (``model.weights``): M alone on paired data."""

    reblur: float = MISSING  # ||B - R(S, M(B))||^2
    sharp: float = MISSING  # |M(S)| -> 0
    tv: float = MISSING  # TV of M(B)
    flow: float = MISSING  # direct supervision by the ground-truth motion (0 = off)
    flow_norm: str = MISSING  # epe | mse


_DISCRIMINATORS = ("natural", "sharp", "none")
_NORMS = ("l1", "l2")


def from_mapping(schema: type, values: Mapping[str, Any], where: str) -> Any:
    """``schema(**values)`` for a plain mapping or a DictConfig, with one-line errors naming the key."""
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    fields = typing.get_type_hints(schema)  # real types, not the postponed annotation strings
    given = dict(values)
    optional = {f.name for f in dataclasses.fields(schema) if f.default is not MISSING}  # a key added later
    unknown = sorted(set(given) - set(fields))
    missing = sorted(set(fields) - set(given) - optional)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; expected {sorted(fields)}")
    for key, kind in fields.items():
        if key not in given:
            continue
        value = given[key]
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            given[key] = float(value)
        elif not (kind in (bool, str) and isinstance(value, kind)):
            raise ValueError(f"{where}.{key} must be a {kind.__name__}, got {value!r}")
    return schema(**given)


def check_weights(w: LossWeights) -> LossWeights:
    for key in ("content_norm", "sharp_prior_norm"):
        if getattr(w, key) not in _NORMS:
            raise ValueError(f"loss.{key} must be one of {_NORMS}, got {getattr(w, key)!r}")
    return w


def check_variant(v: Variant) -> Variant:
    if v.discriminator not in _DISCRIMINATORS:
        raise ValueError(f"variant.discriminator must be one of {_DISCRIMINATORS}, got {v.discriminator!r}")
    if not (v.paired or v.unpaired):
        raise ValueError("variant needs paired or unpaired data: both variant.paired and variant.unpaired are false")
    if (v.motion or v.discriminator != "none") and not v.unpaired:
        raise ValueError(f"variant {v.name!r} uses NeurMAP terms but variant.unpaired is false")
    if not v.motion_learns and not v.motion:
        raise ValueError(f"variant {v.name!r}: motion_learns=false freezes M, but variant.motion is false")
    if v.oracle_motion and not v.motion:
        raise ValueError(f"variant {v.name!r}: oracle_motion feeds R the true motion, but variant.motion is false")
    return v


# ---------------------------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class BatchSplit:
    """The blurry and sharp images of one training batch, paired rows first, and which rows are which.

    ``blur`` and ``sharp`` hold the paired images (when the variant uses them) followed by the unpaired ones;
    :meth:`paired`, :meth:`unpaired` and :meth:`map_rows` cut any tensor aligned with them (S_hat, M's maps).
    """

    blur: Tensor
    sharp: Tensor
    n_paired: int
    map_on_paired: bool  # the MAP terms see every row (authors' code) or the unpaired rows only (paper)
    unpaired_motion: Tensor | None = None  # ground-truth motion (px) of the unpaired blurry rows, where the data has it

    def paired(self, x: Tensor) -> Tensor:
        return x[: self.n_paired]

    def unpaired(self, x: Tensor) -> Tensor:
        return x[self.n_paired :]

    def map_rows(self, x: Tensor) -> Tensor:
        """The rows the MAP terms (M and N steps, D's priors) use."""
        return x if self.map_on_paired else self.unpaired(x)

    @property
    def has_unpaired(self) -> bool:
        return self.blur.shape[0] > self.n_paired


def split_batch(batch: Mapping[str, Any], variant: Variant, map_on_paired: bool) -> BatchSplit:
    """The named split of a combined batch ``{"paired": {...}, "blur": {...}, "sharp": {...}}``."""
    paired = batch.get("paired") if variant.paired else None
    blurs, sharps = [], []
    if paired is not None:
        blurs.append(paired["blur"])
        sharps.append(paired["sharp"])
    if variant.unpaired:
        for key in ("blur", "sharp"):
            if batch.get(key) is None:
                raise KeyError(f"training batch has no {key!r} loader, needed by variant {variant.name!r}")
        blurs.append(batch["blur"]["blur"])
        sharps.append(batch["sharp"]["sharp"])
    if not blurs:
        raise KeyError(f"training batch has no 'paired' loader, needed by variant {variant.name!r}")
    n_paired = 0 if paired is None else paired["blur"].shape[0]
    motion = batch["blur"].get("motion") if variant.unpaired else None
    return BatchSplit(torch.cat(blurs), torch.cat(sharps), n_paired, bool(map_on_paired), motion)


# ----------------------------------------------------------------------------------------- objectives


def _add(parts: Parts, name: str, weight: float, term: Callable[[], Tensor]) -> None:
    """``parts[name] = weight * term()``, skipping the computation when the weight is 0."""
    if weight != 0:
        parts[name] = weight * term()


def motion_objective(
    w: LossWeights,
    *,
    blur: Tensor,
    sharp: Tensor,
    deblurred: Tensor,
    motion: Callable[[Tensor], Tensor],
    relative: Callable[[Tensor, Tensor], Tensor],
    reblur: nn.Module,
) -> tuple[Parts, Tensor]:
    """Eq. 10: lambda * L_reblur + L_kernel + L_tv(M_rel) on the MAP rows ``blur``, ``sharp`` and ``deblurred``
    (S_hat, detached). ``motion`` is the canonical M, ``relative`` makes the motion R receives from M(B) and
    M(S_hat), ``reblur`` is R. Returns the weighted terms and M(S) (detached), which feeds the E[|M(S)|] pool."""
    nb, ns = blur.shape[0], sharp.shape[0]
    # M has no normalisation layers, so one batched forward equals three separate ones.
    m_all = motion(torch.cat([blur, sharp, deblurred]))
    m_blur, m_sharp, m_fake = m_all[:nb], m_all[nb : nb + ns], m_all[nb + ns :]
    m_rel = relative(m_blur, m_fake)
    parts: Parts = {}
    ratio = w.reblur_msssim_ratio
    _add(parts, "reblur", w.reblur_motion, lambda: terms.reblur_loss(reblur(deblurred, m_rel), blur, ratio))
    _add(parts, "kernel_blurry", w.kernel_blurry, lambda: terms.kernel_blurry(m_blur, w.kernel_blurry_target))
    _add(parts, "kernel_sharp", w.kernel_sharp, lambda: terms.kernel_sharp(m_sharp))
    _add(parts, "kernel_deblurred", w.kernel_deblurred, lambda: terms.kernel_deblurred(m_fake, m_blur))
    _add(parts, "tv", w.motion_tv, lambda: terms.total_variation(m_rel))
    _add(parts, "kernel_hinge", w.kernel_hinge, lambda: terms.kernel_hinge(m_fake, m_blur))
    return parts, m_sharp.detach()


def natural_real(split: BatchSplit, mode: str) -> Tensor:
    """N's "real" images: ``natural`` = half sharp, half blurry (the authors' mixed batch, as many images as
    the fake batch); ``sharp`` = the sharp images only."""
    sharp, blur = split.map_rows(split.sharp), split.map_rows(split.blur)
    return torch.cat([sharp[0::2], blur[1::2]]) if mode == "natural" else sharp


def disc_objective(*, real: Tensor, fake: Tensor, discriminator: nn.Module) -> Parts:
    """Eq. 8/12: LSGAN, ``real`` (:func:`natural_real`) -> 1 and ``fake`` (S_hat detached; Net1 adds the
    blurry images) -> 0."""
    return {"real": terms.lsgan(discriminator(real), 1.0), "fake": terms.lsgan(discriminator(fake), 0.0)}


def content_loss(stages: list[Tensor], sharp: Tensor, stage_weights: list[float], norm: str) -> Tensor:
    """Content loss over a backbone's supervised outputs (final last), targets area-resized to each output;
    ``stage_weights`` align with the LAST outputs."""
    if len(stage_weights) > len(stages):
        raise ValueError(
            f"model.deblur.stage_weights has {len(stage_weights)} weights but D returns {len(stages)} outputs"
        )
    total = sharp.new_zeros(())
    for weight, out in zip(stage_weights, stages[-len(stage_weights) :]):
        target = sharp if out.shape[-2:] == sharp.shape[-2:] else F.interpolate(sharp, out.shape[-2:], mode="area")
        total = total + weight * terms.distance(out, target, norm)
    return total


def deblur_objective(
    w: LossWeights,
    *,
    stages: list[Tensor],
    sharp: Tensor,
    stage_weights: list[float],
    blur: Tensor | None = None,
    deblurred: Tensor | None = None,
    deblurred_map: Tensor | None = None,
    motion: Callable[[Tensor], Tensor] | None = None,
    relative: Callable[[Tensor, Tensor], Tensor] | None = None,
    reblur: nn.Module | None = None,
    sharp_expectation: Callable[[], Tensor] | None = None,
    discriminator: nn.Module | None = None,
    reblur_motion: Tensor | None = None,
) -> Parts:
    """Eq. 11: the content loss of the paired rows' outputs ``stages`` against ``sharp``; on the unpaired rows
    ``blur`` -> ``deblurred`` the reblur term, the sharp-image prior, the TV of M(S_hat) and the natural-image
    prior. ``deblurred_map`` holds the rows the priors see (the unpaired rows, or the whole batch with
    ``map_on_paired``; the unpaired rows last). Without ``blur`` (the warm-up, or no unpaired rows) only the
    content loss is computed; without ``motion`` (no M) and ``discriminator`` (no N) their terms are off.
    M and N must have their parameters frozen (toggled off): gradients reach D only.

    ``reblur_motion`` (units of R) replaces M's motion in the reblur term: the oracle-motion ablation feeds the
    data's ground truth there."""
    parts: Parts = {}
    if sharp.shape[0]:
        _add(parts, "content", w.content, lambda: content_loss(stages, sharp, stage_weights, w.content_norm))
    if blur is None or deblurred is None or not blur.shape[0]:
        return parts
    rows = deblurred if deblurred_map is None else deblurred_map
    if motion is not None and (w.reblur_deblur or w.sharp_prior or w.deblurred_motion_tv):
        m_rows = motion(rows)
        m_fake = m_rows[-deblurred.shape[0] :]  # the unpaired rows' M(S_hat)
        if w.reblur_deblur:
            if reblur_motion is None:
                with torch.no_grad():
                    reblur_motion = relative(motion(blur), m_fake)
            reblurred = reblur(deblurred, reblur_motion.detach())
            parts["reblur"] = w.reblur_deblur * terms.reblur_loss(reblurred, blur, w.reblur_msssim_ratio)
        norm = w.sharp_prior_norm
        _add(parts, "sharp_prior", w.sharp_prior, lambda: terms.sharp_prior(m_rows, sharp_expectation(), norm))
        _add(parts, "motion_tv", w.deblurred_motion_tv, lambda: terms.total_variation(m_fake))
    if discriminator is not None:
        _add(parts, "natural", w.natural, lambda: terms.lsgan(discriminator(rows), 1.0))
    _add(parts, "image_tv", w.image_tv, lambda: terms.total_variation(deblurred))
    return parts
