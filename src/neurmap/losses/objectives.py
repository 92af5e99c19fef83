"""NeurMAP's three phase objectives (paper eq. 10-12), their weights' schema and the batch split they read.

* :class:`LossWeights` is the structured-config schema of ``conf/loss`` (registered by :mod:`neurmap.config`
  as ``loss/schema``, which every preset extends): a typo or a missing key fails when the config is composed,
  naming the key. As in eq. 10-11, ``lam`` scales the reconstruction terms and ``beta`` the natural-image
  prior; :meth:`LossWeights.effective` folds them into the weights they scale. :class:`Variant` does the same
  for ``conf/variant``.
* :class:`BatchSplit` names the paired and unpaired rows of a combined batch once, so no step slices by
  position.
* :func:`motion_objective`, :func:`disc_objective`, and :func:`content_objective` with :func:`deblur_objective`
  (D's supervised and unpaired terms) take the tensors of one step (the networks' outputs, computed by the
  system) and a weights object, and return the step's **weighted** terms as a dict (their sum is the step's
  loss; they are logged as ``train/<net>/weighted/<term>``). A term whose weight is 0 is not computed and not
  logged: zero weights mean "off" everywhere.

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

from neurmap.losses import terms

__all__ = [
    "BatchSplit",
    "LossWeights",
    "MotionPretrainWeights",
    "UnpairedOutputs",
    "Variant",
    "content_loss",
    "content_objective",
    "deblur_objective",
    "disc_objective",
    "from_mapping",
    "missing_oracle_motion",
    "motion_objective",
    "split_batch",
]

Tensor = torch.Tensor
Parts = dict[str, Tensor]


@dataclass
class LossWeights:
    """The weights of ``conf/loss`` (paper eq. 4-12). Values live in the yaml presets, never here.

    As in eq. 10-11, ``reblur_motion``, ``reblur_deblur`` and ``content`` are weights relative to ``lam``, and
    ``natural`` is relative to ``beta``: a term enters its objective with ``lam`` (or ``beta``) times its weight,
    so ``lam`` and ``beta`` mean what the paper's lambda and beta mean. Every other weight is the term's own.
    """

    name: str = MISSING
    lam: float = MISSING  # lambda: scales reblur_motion, reblur_deblur and content
    beta: float = MISSING  # beta: scales natural
    reblur_motion: float = MISSING  # L_reblur in M's objective (eq. 10), times lam
    reblur_deblur: float = MISSING  # L_reblur in D's objective (eq. 11), times lam
    reblur_msssim_ratio: float = MISSING  # extra ratio * (1 - MS-SSIM) inside L_reblur
    content: float = MISSING  # paired content loss, times lam
    content_norm: str = MISSING  # l1 | l2
    kernel_blurry: float = MISSING  # |M(B)| -> target (eq. 5)
    kernel_blurry_target: float = MISSING  # in motion units (1 unit = alpha px)
    kernel_sharp: float = MISSING  # M(S) -> 0 (eq. 5)
    kernel_deblurred: float = MISSING  # M(D*(B)) -> detach(M(B)) (eq. 5)
    kernel_hinge: float = MISSING  # authors' |M(S_hat)| <= |M(B)| hinge
    motion_tv: float = MISSING  # TV of the relative motion in M's objective (eq. 6)
    sharp_prior: float = MISSING  # |M*(D(B))| -> E[|M*(S)|] (eq. 7)
    sharp_prior_norm: str = MISSING  # l1 | l2
    natural: float = MISSING  # LSGAN natural-image prior on D (eq. 8), times beta
    deblurred_motion_tv: float = MISSING  # TV of M(S_hat) in D's objective (eq. 9)
    image_tv: float = MISSING  # TV of the deblurred image
    map_on_paired: bool = MISSING  # MAP terms on the whole batch (true) or the unpaired rows only (false)

    def effective(self) -> LossWeights:
        """The same objective with ``lam`` and ``beta`` folded into the weights they scale (both then 1): each
        weight is the factor its term enters the sum with."""
        lam, beta = self.lam, self.beta
        return dataclasses.replace(
            self,
            lam=1.0,
            beta=1.0,
            reblur_motion=lam * self.reblur_motion,
            reblur_deblur=lam * self.reblur_deblur,
            content=lam * self.content,
            natural=beta * self.natural,
        )


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


def missing_oracle_motion(variant: str) -> str:
    """The one-line error of the oracle-motion ablation run on data without the unpaired images' motion."""
    return (
        f"variant={variant} (the oracle-motion ablation) needs the ground-truth motion of the unpaired blurry images, "
        "but data.unpaired_blur gives none: use a layout with motion (kernel_synth, "
        "data.unpaired_blur.records.with_motion=true) or another variant"
    )


# ---------------------------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class BatchSplit:
    """The blurry and sharp images of one training batch, paired rows first, and which rows are which.

    ``blur`` and ``sharp`` hold the paired images (when the variant uses them) followed by the unpaired ones;
    :meth:`paired`, :meth:`unpaired` and :meth:`unsupervised_rows` cut any tensor aligned with them (S_hat, M's
    maps).
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

    def unsupervised_rows(self, x: Tensor) -> Tensor:
        """The rows the unsupervised (MAP) terms use (M and N steps, D's priors): the unpaired rows, or every
        row with ``map_on_paired``."""
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
    reblurred: Tensor | None,
    motion_blurry: Tensor,
    motion_sharp: Tensor,
    motion_deblurred: Tensor,
    motion_reblur: Tensor,
) -> Parts:
    """Eq. 10: lambda * L_reblur + L_kernel + L_tv on the unsupervised rows. ``motion_blurry``, ``motion_sharp``
    and ``motion_deblurred`` are M's canonical maps of B, S and S_hat (S_hat detached); ``motion_reblur`` is the
    motion R received and ``reblurred`` its output R(S_hat, motion_reblur) (None when the reblur weight is 0)."""
    w = w.effective()
    parts: Parts = {}
    ratio = w.reblur_msssim_ratio
    _add(parts, "reblur", w.reblur_motion, lambda: terms.reblur_loss(reblurred, blur, ratio))
    _add(parts, "kernel_blurry", w.kernel_blurry, lambda: terms.kernel_blurry(motion_blurry, w.kernel_blurry_target))
    _add(parts, "kernel_sharp", w.kernel_sharp, lambda: terms.kernel_sharp(motion_sharp))
    _add(parts, "kernel_deblurred", w.kernel_deblurred, lambda: terms.kernel_deblurred(motion_deblurred, motion_blurry))
    _add(parts, "tv", w.motion_tv, lambda: terms.total_variation(motion_reblur))
    _add(parts, "kernel_hinge", w.kernel_hinge, lambda: terms.kernel_hinge(motion_deblurred, motion_blurry))
    return parts


def natural_real(split: BatchSplit, mode: str) -> Tensor:
    """N's "real" images: ``natural`` = half sharp, half blurry (the authors' mixed batch, as many images as
    the fake batch); ``sharp`` = the sharp images only."""
    sharp, blur = split.unsupervised_rows(split.sharp), split.unsupervised_rows(split.blur)
    return torch.cat([sharp[0::2], blur[1::2]]) if mode == "natural" else sharp


def disc_objective(*, real_scores: list[Tensor], fake_scores: list[Tensor]) -> Parts:
    """Eq. 8/12: LSGAN on N's per-scale scores of the "real" images (:func:`natural_real`) -> 1 and of the fake
    ones (S_hat detached; Net1 adds the blurry images) -> 0."""
    return {"real": terms.lsgan(real_scores, 1.0), "fake": terms.lsgan(fake_scores, 0.0)}


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


@dataclass(frozen=True)
class UnpairedOutputs:
    """What D's unpaired terms read, computed by the system through M, R and N (frozen). A None field turns
    its terms off (the variant has no such network, or their weights are 0)."""

    blur: Tensor  # the unpaired blurry rows B
    deblurred: Tensor  # their S_hat = D(B)
    reblurred: Tensor | None = None  # R(S_hat, motion), the motion detached
    motion: Tensor | None = None  # M(S_hat) of the unsupervised rows, the unpaired rows last
    sharp_expectation: Tensor | None = None  # E[|M(S)|], the pool's
    disc_scores: list[Tensor] | None = None  # N's scores of the unsupervised rows' S_hat


def content_objective(w: LossWeights, *, stages: list[Tensor], sharp: Tensor, stage_weights: list[float]) -> Parts:
    """Eq. 11's supervised term: lambda * the content loss of the paired rows' outputs ``stages`` against
    ``sharp`` (nothing without paired rows)."""
    w = w.effective()
    parts: Parts = {}
    if sharp.shape[0]:
        _add(parts, "content", w.content, lambda: content_loss(stages, sharp, stage_weights, w.content_norm))
    return parts


def deblur_objective(w: LossWeights, unpaired: UnpairedOutputs) -> Parts:
    """Eq. 11's unpaired terms: lambda * the reblur term, the sharp-image prior, the TV of M(S_hat), beta * the
    natural-image prior and the image TV (D's whole objective adds :func:`content_objective`)."""
    w = w.effective()
    parts: Parts = {}
    u = unpaired
    if not u.blur.shape[0]:
        return parts
    if u.reblurred is not None:
        _add(parts, "reblur", w.reblur_deblur, lambda: terms.reblur_loss(u.reblurred, u.blur, w.reblur_msssim_ratio))
    if u.motion is not None:
        norm = w.sharp_prior_norm
        _add(parts, "sharp_prior", w.sharp_prior, lambda: terms.sharp_prior(u.motion, u.sharp_expectation, norm))
        unpaired_motion = u.motion[-u.deblurred.shape[0] :]  # the unpaired rows' M(S_hat)
        _add(parts, "motion_tv", w.deblurred_motion_tv, lambda: terms.total_variation(unpaired_motion))
    if u.disc_scores is not None:
        _add(parts, "natural", w.natural, lambda: terms.lsgan(u.disc_scores, 1.0))
    _add(parts, "image_tv", w.image_tv, lambda: terms.total_variation(u.deblurred))
    return parts
