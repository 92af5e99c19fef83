"""Image-quality metrics for evaluation: PSNR, SSIM (named conventions), LPIPS-alex, NIQE, and the RealBlur protocol.

Every metric works offline. LPIPS weights and NIQE parameters are third-party files that are found on disk (see
:func:`load_lpips_weights`, :func:`load_niqe_params`); when they are missing, :class:`MetricUnavailable` says how to
get them. Conventions and sources are documented in each submodule.
"""

from neurmap.metrics._assets import MetricUnavailable
from neurmap.metrics.fidelity import align_realblur, ecc_homography, luminance_255, psnr, psnr_masked, ssim, ssim_masked
from neurmap.metrics.lpips import LPIPS, find_lpips_weights, load_lpips_weights
from neurmap.metrics.niqe import NIQEParams, find_niqe_params, load_niqe_params, niqe_batch, niqe_score

__all__ = [
    "LPIPS",
    "MetricUnavailable",
    "NIQEParams",
    "align_realblur",
    "ecc_homography",
    "find_lpips_weights",
    "find_niqe_params",
    "load_lpips_weights",
    "load_niqe_params",
    "luminance_255",
    "niqe_batch",
    "niqe_score",
    "psnr",
    "psnr_masked",
    "ssim",
    "ssim_masked",
]
