"""Individual NeurMAP loss terms as plain functions (paper eq. 4-9 and the content loss).

Every function returns a scalar with mean reduction. Weights never appear here: they are applied
by :mod:`neurmap.losses.objectives` from ``conf/loss``. Motion maps are (B, 2, H, W) in the
normalised units of :mod:`neurmap.nets.reblur` (1 unit = ``alpha`` pixels of full blur length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

__all__ = [
    "distance",
    "flow_supervision",
    "kernel_blurry",
    "kernel_deblurred",
    "kernel_hinge",
    "kernel_sharp",
    "lsgan",
    "reblur_loss",
    "sharp_prior",
    "total_variation",
]

_NORMS = ("l1", "l2")


def distance(pred: torch.Tensor, target: torch.Tensor, norm: str) -> torch.Tensor:
    """Mean L1 (``l1``) or mean squared (``l2``) distance."""
    if norm == "l1":
        return F.l1_loss(pred, target)
    if norm == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV with mean reduction (paper eq. 6 and 9): mean |dx| + mean |dy|.

    Args:
        x: (B, C, H, W) map.
    """
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dh + dw


def reblur_loss(reblurred: torch.Tensor, blurry: torch.Tensor, msssim_ratio: float = 0.0) -> torch.Tensor:
    """Data term L_reblur (paper eq. 4): MSE between the reblurred estimate and the blurry input.

    ``msssim_ratio > 0`` adds ``ratio * (1 - MS-SSIM)`` as the authors' code does (0.1 there). We use
    torchmetrics' standard MS-SSIM, not the authors' non-standard variant; it needs
    images of at least 161 px per side.
    """
    loss = F.mse_loss(reblurred, blurry)
    if msssim_ratio > 0:
        side = min(blurry.shape[-2:])
        if side < 161:
            raise ValueError(
                f"loss.reblur_msssim_ratio={msssim_ratio} needs crops >= 161 px for 5-scale MS-SSIM, got {side}"
            )
        msssim = multiscale_structural_similarity_index_measure(
            reblurred.clamp(0, 1), blurry.clamp(0, 1), data_range=1.0
        )
        loss = loss + msssim_ratio * (1.0 - msssim)
    return loss


def kernel_blurry(motion_blurry: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """Kernel prior, blurry part (eq. 5): each component's magnitude of M(B) is pulled to ``target``.

    The paper writes M(B) -> (alpha, alpha). In normalised units that is |m_c| -> 1 per component
    (the authors' code: ``L1(|mB|, 1)``); taking magnitudes respects the sign canonicalisation.
    """
    return (motion_blurry.abs() - target).abs().mean()


def kernel_sharp(motion_sharp: torch.Tensor) -> torch.Tensor:
    """Kernel prior, sharp part (eq. 5): M(S) -> (0, 0) with an L1 penalty."""
    return motion_sharp.abs().mean()


def kernel_deblurred(motion_deblurred: torch.Tensor, motion_blurry: torch.Tensor) -> torch.Tensor:
    """Kernel prior, deblurred part (eq. 5): M(D*(B)) -> detach(M(B)) with an L1 penalty."""
    return F.l1_loss(motion_deblurred, motion_blurry.detach())


def kernel_hinge(motion_deblurred: torch.Tensor, motion_blurry: torch.Tensor) -> torch.Tensor:
    """Authors' extra hinge: per-pixel ``relu(|M(D(B))|_2 - |M(B)|_2)`` (not in the paper)."""
    return F.relu(motion_deblurred.norm(dim=1) - motion_blurry.norm(dim=1)).mean()


def sharp_prior(motion_deblurred: torch.Tensor, expected_sharp: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Sharp-image prior L_sharp (eq. 7): |M*(D(B))| -> E[|M*(S)|].

    Args:
        motion_deblurred: (B, 2, H, W) canonical motion of the deblurred images (grad flows to D).
        expected_sharp: (2,) per-channel mean magnitude of recent sharp-image motion (the pool).
        norm: ``l2`` as the authors' code (the paper's norm is unspecified), or ``l1``.
    """
    target = expected_sharp.view(1, -1, 1, 1).to(motion_deblurred).expand_as(motion_deblurred)
    return distance(motion_deblurred.abs(), target, norm)


def lsgan(logits: list[torch.Tensor] | torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN loss (eq. 8): mean squared distance of every scale's logits to ``target``, summed over scales."""
    if isinstance(logits, torch.Tensor):
        logits = [logits]
    return sum(F.mse_loss(x, torch.full_like(x, target)) for x in logits)


_FLOW_NORMS = ("epe", "mse", "polar")


def flow_supervision(motion: torch.Tensor, target: torch.Tensor, norm: str = "epe", eps: float = 1e-6) -> torch.Tensor:
    """Direct supervision of M against ground-truth motion, sign-invariant (a line blur along v equals one
    along -v): per pixel the smaller of the errors to ``target`` and to ``-target``.

    Args:
        motion: (B, 2, H, W) M's motion in normalised units.
        target: (B, 2, H, W) ground truth in the same units (full blur in px / alpha).
        norm: ``epe`` (mean end-point error, sqrt(|e|^2 + eps)), ``mse`` (mean squared error over the
            two components) or ``polar``: the length error ``| |m| - |g| |`` plus the distance of ``g`` from
            the line of ``m`` (``|m x g| / |m|``, i.e. |g| |sin| of the angle between the lines). Under an
            ambiguous direction ``epe`` and ``mse`` are lowest for a *shorter* vector (the mean of +-g is 0),
            which makes R's reblur term pull D back towards blur; ``polar`` scores the length on its own, so
            an unsure direction does not shrink it.
    """
    if norm not in _FLOW_NORMS:
        raise ValueError(f"flow norm must be one of {_FLOW_NORMS}, got {norm!r}")
    if motion.shape != target.shape:
        raise ValueError(f"motion {tuple(motion.shape)} and its target {tuple(target.shape)} differ in shape")
    if norm == "polar":
        length = motion.pow(2).sum(dim=1).add(eps).sqrt()
        cross = motion[:, 0] * target[:, 1] - motion[:, 1] * target[:, 0]
        return (length - target.pow(2).sum(dim=1).add(eps).sqrt()).abs().mean() + (cross.abs() / length).mean()
    plus = (motion - target).pow(2).sum(dim=1)
    minus = (motion + target).pow(2).sum(dim=1)
    error = torch.minimum(plus, minus)
    return (error + eps).sqrt().mean() if norm == "epe" else error.mean() / 2
