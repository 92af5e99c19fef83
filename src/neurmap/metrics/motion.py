"""Motion-map error against Gong et al.'s ground-truth ``mfmap`` (the paper's Fig. 8a).

A linear blur along ``v`` equals one along ``-v``, so every comparison is sign-invariant. Motions are
(B, 2, H, W) full blur vectors in pixels, channel 0 vertical and channel 1 horizontal (neurmap's layout;
:func:`neurmap.data.io.read_mfmap` converts Gong's (u, v)).

Two scales of M's output, both reported and labelled by :func:`motion_errors`:

* ``authors``: the authors' ``eval_mmap_mse.py`` protocol: the difference M(B) - M(S_hat) (their script
  differences M's raw outputs; here it is the motion R receives in training, each map canonicalised first,
  :func:`neurmap.nets.motion.reblur_motion`), multiplied by **20** (``authors_scale``), canonicalised (horizontal >= 0),
  then the MSE over both components against the ground truth and against its negation, the smaller of the two per image.
  Twenty is half of R's full length (40 |m| px), while Gong's (u, v) is the full length, so this scale
  halves the prediction.
* ``full``: the same MSE with M's output in full-length pixels (x alpha = 40), the consistent scale.

Plus the end-point error ``epe``: the mean over pixels of min(|p - g|, |p + g|), full scale, which
allows a per-pixel sign and so does not depend on how canonicalisation splits near-vertical vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurmap.nets.reblur import canonicalize_motion

__all__ = ["length_ratio", "motion_epe", "motion_errors", "motion_mse"]


def _check(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.ndim != 4 or pred.shape[1] != 2 or target.ndim != 4 or target.shape[1] != 2:
        raise ValueError(f"motion maps must be (B, 2, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[-2:] != target.shape[-2:]:  # the authors upsample M's map to the ground truth (nearest)
        pred = F.interpolate(pred, size=target.shape[-2:], mode="nearest")
    return pred


def motion_mse(pred_px: torch.Tensor, target_px: torch.Tensor) -> torch.Tensor:
    """Per-image min(MSE(canon(pred), gt), MSE(canon(pred), -gt)) over both components, (B,)."""
    pred = canonicalize_motion(_check(pred_px, target_px).double())
    target = target_px.double()
    plus = (pred - target).pow(2).mean(dim=(1, 2, 3))
    minus = (pred + target).pow(2).mean(dim=(1, 2, 3))
    return torch.minimum(plus, minus)


def motion_epe(pred_px: torch.Tensor, target_px: torch.Tensor) -> torch.Tensor:
    """Per-image mean over pixels of min(|p - g|, |p + g|) (Euclidean, px), (B,)."""
    pred = _check(pred_px, target_px).double()
    target = target_px.double()
    plus = (pred - target).norm(dim=1)
    minus = (pred + target).norm(dim=1)
    return torch.minimum(plus, minus).mean(dim=(1, 2))


def motion_errors(
    motion: torch.Tensor, target_px: torch.Tensor, alpha: float, authors_scale: float
) -> dict[str, torch.Tensor]:
    """Labelled errors of the motion R receives (units of R) against the ground truth.

    Args:
        motion: (B, 2, H, W) the motion R receives (:func:`neurmap.nets.motion.reblur_motion`).
        target_px: (B, 2, H, W) ground-truth full blur vectors in px.
        alpha: R's pixels of full blur length per motion unit (``model.reblur.alpha``).
        authors_scale: the factor of the authors' script (20, conf/evaluate.yaml).

    Returns:
        ``motion_mse_authors`` (x authors_scale), ``motion_mse_full`` (x alpha), ``motion_epe`` (x alpha, px)
        and ``motion_length_ratio`` (:func:`length_ratio`, x alpha), each (B,).
    """
    return {
        "motion_mse_authors": motion_mse(motion * authors_scale, target_px),
        "motion_mse_full": motion_mse(motion * alpha, target_px),
        "motion_epe": motion_epe(motion * alpha, target_px),
        "motion_length_ratio": length_ratio(motion * alpha, target_px),
    }


def length_ratio(pred_px: torch.Tensor, target_px: torch.Tensor) -> torch.Tensor:
    """Per-image mean predicted blur length over mean true length, (B,): 1 = M's lengths are right on average,
    below 1 = M underestimates the blur (R then reblurs too little); NaN where the true motion is zero."""
    pred = _check(pred_px, target_px).double()
    truth = target_px.double().norm(dim=1).mean(dim=(1, 2))
    return pred.norm(dim=1).mean(dim=(1, 2)) / truth.where(truth > 0, torch.nan)
