"""Full-reference fidelity metrics (PSNR, SSIM) and the RealBlur alignment protocol.

Conventions (they change the numbers, so every reported value should name its convention):

* **PSNR** on RGB with data range 1, per image: ``10 log10(1 / MSE)`` over all pixels and channels (torchmetrics).
  This is what MATLAB ``psnr`` gives on uint8 RGB images and what deblurring papers report for GoPro/HIDE.
* **SSIM, ``convention="torchmetrics"``**: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1,
  computed per RGB channel and averaged over channels and the valid part of the map. It equals
  ``torchmetrics.functional.structural_similarity_index_measure(gaussian_kernel=True)`` and, up to border handling,
  skimage/BasicSR per-channel SSIM. It is the convenient default for training-time validation.
* **SSIM, ``convention="matlab"``**: Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error Visibility
  to Structural Similarity" (IEEE TIP 2004) as in the authors' later ``ssim.m``: the BT.601 luma (MATLAB
  ``rgb2ycbcr`` Y, 16-235, rounded as for a uint8 image), box-filtered and subsampled by
  ``f = max(1, round(min(H, W) / 256))``, then an 11x11 Gaussian (sigma 1.5) with 'valid' filtering, L = 255. This
  is the Y-channel SSIM of the restoration literature (BasicSR-style tables, which use the same luma).
* **SSIM, ``convention="matlab_gray"``**: the authors' original ``ssim_index.m`` (no downsampling) on MATLAB
  ``rgb2gray``, otherwise as above. It reproduces the reference SSIM column of pyiqa's calibration table (the five
  Kodak pairs, 0.6993 / 0.9978 / 0.9989 / 0.9669 / 0.6519) to four decimals; see ``tests/test_metrics.py``.
* How far apart they are: per-channel RGB and Y-channel SSIM typically differ by about 0.02 on natural images, and
  the downsampling moves values by a few hundredths more. On the pyiqa calibration pairs (synthetic distortions,
  some of them chromatic) ``torchmetrics`` vs ``matlab`` differ by -0.07 to +0.15, so never mix conventions in one
  table. None of the three equals MATLAB's built-in ``ssim`` on an RGB array, which runs a 3-D Gaussian across the
  channels and is what the GoPro/HIDE tables of MPRNet, Restormer and NAFNet use (``evaluate_GOPRO_HIDE.m``);
  per-channel SSIM comes out roughly 0.02 lower there (0.9479 vs 0.9668 for the same NAFNet weights). NeurMAP's own
  ``metrics_psnr.py`` uses yet another one (skimage, 7x7 uniform window, no explicit data range).
* **RealBlur** (Rim, Lee, Won, Cho, "Real-World Blur Dataset for Learning and Benchmarking Deblurring Algorithms",
  ECCV 2020; script ``evaluation_RealBlur_ecc.py`` of ``rimchang/RealBlur``, reused by MPRNet, Restormer, MIMO-UNet,
  Stripformer, FFTformer and NeurMAP): the prediction is intensity-matched to the ground truth, registered to it with
  an ECC homography (Köhler et al.'s protocol) and both are masked to the valid warped area; PSNR and SSIM are then
  taken over the mask (:func:`align_realblur`, :func:`psnr_masked`, :func:`ssim_masked`). The official script pins
  scikit-image 0.17.2 and OpenCV 4.2.0; this port needs neither scikit-image nor a specific OpenCV.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = [
    "psnr",
    "ssim",
    "luminance_255",
    "align_realblur",
    "psnr_masked",
    "ssim_masked",
    "ecc_homography",
]

SSIMConvention = Literal["torchmetrics", "matlab", "matlab_gray"]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image over all channels and pixels, ``10 log10(data_range^2 / MSE)``, computed in float64.

    Args:
        x: Images (B, C, H, W).
        y: Reference images of the same shape.
        data_range: Value range of the images (1 for [0, 1]).

    Returns:
        PSNR in dB, shape (B,), float64 (``inf`` for identical images).
    """
    _check_pair(x, y)
    return peak_signal_noise_ratio(
        x.double(), y.double(), data_range=data_range, reduction="none", dim=(1, 2, 3)
    ).reshape(x.shape[0])


def luminance_255(x: torch.Tensor, channel: Literal["y", "gray"] = "y", quantize: bool = True) -> torch.Tensor:
    """One luminance plane of RGB images in [0, 1], on MATLAB's 0-255 scale.

    Args:
        x: Images (B, 3, H, W) in [0, 1].
        channel: ``"y"``: BT.601 luma as MATLAB ``rgb2ycbcr`` (16 + 65.481 R + 128.553 G + 24.966 B, 16-235).
            ``"gray"``: MATLAB ``rgb2gray`` (0.298936 R + 0.587043 G + 0.114021 B, 0-255).
        quantize: Quantise RGB to 8 bits and round the result, as MATLAB does on a uint8 image.

    Returns:
        Luminance (B, 1, H, W), float64.
    """
    rgb = x.double()
    if quantize:
        rgb = torch.round(rgb.clamp(0, 1) * 255) / 255
    if channel == "y":
        weights, offset = (65.481, 128.553, 24.966), 16.0
    elif channel == "gray":
        weights, offset = (0.298936021293775 * 255, 0.587043074451121 * 255, 0.114020904255103 * 255), 0.0
    else:
        raise ValueError(f"channel must be 'y' or 'gray', got {channel!r}")
    w = torch.tensor(weights, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    lum = offset + (rgb * w).sum(dim=1, keepdim=True)
    return torch.round(lum) if quantize else lum


def _gaussian_1d_matlab(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB ``fspecial('gaussian', size, sigma)``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'valid' 2-D filtering of (B, 1, H, W) with the separable window ``g g^T``."""
    k = g.to(img)
    return F.conv2d(F.conv2d(img, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))


def _box_downsample(img: torch.Tensor, f: int) -> torch.Tensor:
    """Wang's ``ssim.m`` downsampling: ``imfilter(img, ones(f)/f^2, 'symmetric', 'same')`` then every f-th pixel."""
    before = (f - 1) // 2  # MATLAB's kernel origin is floor((f + 1) / 2), 1-based
    after = f - 1 - before
    padded = img
    if before or after:
        # 'symmetric' repeats the edge sample (reflect without excluding the border)
        padded = torch.cat([img[..., :, :before].flip(-1), img, img[..., :, img.shape[-1] - after :].flip(-1)], dim=-1)
        padded = torch.cat(
            [padded[..., :before, :].flip(-2), padded, padded[..., padded.shape[-2] - after :, :].flip(-2)], dim=-2
        )
    box = F.avg_pool2d(padded, kernel_size=f, stride=1)
    return box[..., ::f, ::f]


def _ssim_matlab(x: torch.Tensor, y: torch.Tensor, channel: Literal["y", "gray"], downsample: bool) -> torch.Tensor:
    """SSIM per image in Wang et al.'s MATLAB style on one luminance plane (see the module docstring)."""
    a, b = luminance_255(x, channel), luminance_255(y, channel)
    f = max(1, round(min(a.shape[-2:]) / 256))
    if downsample and f > 1:
        a, b = _box_downsample(a, f), _box_downsample(b, f)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"MATLAB-style SSIM needs at least 11x11 pixels (after downsampling), got {tuple(a.shape)}")
    g = _gaussian_1d_matlab()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a**2
    sbb = _filter_valid(b * b, g) - mu_b**2
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def ssim(x: torch.Tensor, y: torch.Tensor, convention: SSIMConvention = "torchmetrics") -> torch.Tensor:
    """SSIM per image, in one of three named conventions (report the name with the number).

    Args:
        x: Images (B, 3, H, W) in [0, 1] (``"torchmetrics"`` also accepts any channel count).
        y: Reference images of the same shape.
        convention: ``"torchmetrics"``: Gaussian 11x11 (sigma 1.5) SSIM per RGB channel, data range 1, averaged over
            channels (the common Python number; computed in float32). ``"matlab"``: Wang et al.'s ``ssim.m`` on the
            rounded BT.601 Y channel with the authors' automatic box-filter downsampling (BasicSR-style Y-channel
            tables). ``"matlab_gray"``: Wang et al.'s original ``ssim_index.m`` (no downsampling) on MATLAB
            ``rgb2gray``; this reproduces the reference column of pyiqa's calibration table to 4 decimals. They
            typically differ by a few hundredths; see the module docstring.

    Returns:
        SSIM, shape (B,), float64.
    """
    _check_pair(x, y)
    if convention == "torchmetrics":
        # float32: 10x faster than float64 on CPU and within 1e-6 of it
        return (
            structural_similarity_index_measure(
                x.float(),
                y.float(),
                gaussian_kernel=True,
                sigma=1.5,
                kernel_size=11,
                data_range=1.0,
                k1=0.01,
                k2=0.03,
                reduction="none",
            )
            .reshape(x.shape[0])
            .double()
        )
    if convention in ("matlab", "matlab_gray"):
        if x.shape[1] != 3:
            raise ValueError(f"the {convention} SSIM convention expects RGB images (B, 3, H, W)")
        if convention == "matlab":
            return _ssim_matlab(x, y, channel="y", downsample=True)
        return _ssim_matlab(x, y, channel="gray", downsample=False)
    raise ValueError(f"unknown SSIM convention {convention!r}; use 'torchmetrics', 'matlab' or 'matlab_gray'")


# ----------------------------------------------------------------------------------------------------------------
# RealBlur protocol


def _to_hwc(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image as float32 (H, W, C) numpy; tensors are (C, H, W) or (1, C, H, W)."""
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"expected a (C, H, W) tensor, got {tuple(t.shape)}")
        arr = t.permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(img)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.shape[-1] == 3 else img[..., 0]


def ecc_homography(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, iterations: int = 100, eps: float = 0.0
) -> np.ndarray:
    """Homography that registers ``pred`` to ``gt`` with OpenCV's ECC (the RealBlur settings).

    ``cv2.findTransformECC`` runs on the grey images (``COLOR_RGB2GRAY``) with ``MOTION_HOMOGRAPHY``, the given
    iteration count and epsilon and ``gaussFiltSize=5``, from the identity. The result ``W`` maps ground-truth pixel
    coordinates into the prediction: ``pred(W x) ~ gt(x)``, so ``cv2.warpPerspective(pred, W, ..,
    flags=WARP_INVERSE_MAP)`` aligns the prediction.

    Args:
        pred: Image, (H, W, C) array or (C, H, W) tensor in [0, 1].
        gt: Reference image of the same size.
        iterations: Maximum ECC iterations.
        eps: Convergence threshold on the correlation increment (0: always run all iterations).

    Returns:
        The 3x3 float32 homography.

    Raises:
        RuntimeError: If ECC does not converge (for example on flat images).
    """
    import cv2

    a, b = _to_hwc(pred), _to_hwc(gt)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    warp = np.eye(3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(_grey(b), _grey(a), warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
    except cv2.error as err:
        raise RuntimeError(f"ECC alignment failed: {err}") from err
    return warp


@overload
def align_realblur(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, return_warp: Literal[False] = ...
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
@overload
def align_realblur(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, return_warp: Literal[True]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
def align_realblur(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, return_warp: bool = False
) -> tuple[np.ndarray, ...]:
    """Align a prediction to its ground truth as the RealBlur evaluation does.

    Steps: global intensity matching ``zs = (sum(x z) / sum(z^2)) z`` (z the prediction, x the ground truth);
    :func:`ecc_homography` on the grey images; warp of ``zs`` with ``INTER_CUBIC | WARP_INVERSE_MAP`` and
    ``BORDER_REFLECT``; a validity mask from warping an all-ones image with ``INTER_NEAREST`` and a constant 0 border;
    both images multiplied by the mask.

    Args:
        pred: Deblurred image, (H, W, 3) array (float in [0, 1] or uint8) or (3, H, W) / (1, 3, H, W) tensor in [0, 1].
        gt: Ground truth in the same form.
        return_warp: Also return the 3x3 homography.

    Returns:
        ``(pred_aligned, gt_masked, mask)``, each float32 (H, W, C), plus the homography if ``return_warp``.
    """
    import cv2

    z, x = _to_hwc(pred), _to_hwc(gt)
    if z.shape != x.shape:
        raise ValueError(f"prediction {z.shape} and ground truth {x.shape} differ in shape")
    zs = (np.sum(x * z) / np.sum(z * z)) * z
    warp = ecc_homography(zs, x)
    size = (x.shape[1], x.shape[0])
    aligned = cv2.warpPerspective(
        zs, warp, size, flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    mask = cv2.warpPerspective(
        np.ones_like(zs),
        warp,
        size,
        flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    aligned, mask = aligned.reshape(x.shape), mask.reshape(x.shape)  # cv2 drops a trailing single channel
    out = (aligned * mask, x * mask, mask)
    return (*out, warp) if return_warp else out


def psnr_masked(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None
) -> float:
    """RealBlur PSNR: ``10 log10(1 / (sum((gt - pred)^2) / sum(mask)))`` with data range 1.

    The mask is per channel, so the denominator counts valid channel-samples. With an all-ones mask this is the
    ordinary PSNR. Inputs are expected to be already masked (as :func:`align_realblur` returns them).

    Args:
        pred: Aligned prediction (H, W, C) or tensor (C, H, W).
        gt: Masked ground truth, same form.
        mask: Validity mask of the same shape; ``None`` means all valid.

    Returns:
        PSNR in dB.
    """
    a, b = _to_hwc(pred).astype(np.float64), _to_hwc(gt).astype(np.float64)
    m = np.ones_like(a) if mask is None else np.broadcast_to(_to_hwc(mask).astype(np.float64), a.shape)
    err = np.sum((b - a) ** 2) / np.sum(m)
    return float(10 * np.log10(1.0 / err)) if err > 0 else math.inf


def _gaussian_1d(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _filter_reflect(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable same-size filtering of a 2-D array with symmetric ('reflect' in scipy.ndimage) borders."""
    r = len(kernel) // 2
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, wk in enumerate(kernel):
            acc += wk * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
        out = acc
    return out


def _ssim_map_skimage(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Full SSIM map of one channel as skimage's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)`` computes it."""
    kernel = _gaussian_1d(sigma)
    ux, uy = _filter_reflect(a, kernel), _filter_reflect(b, kernel)
    vx = _filter_reflect(a * a, kernel) - ux * ux
    vy = _filter_reflect(b * b, kernel) - uy * uy
    vxy = _filter_reflect(a * b, kernel) - ux * uy
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def ssim_masked(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None
) -> float:
    """RealBlur SSIM: skimage-style Gaussian SSIM map per channel, masked, border-cropped, averaged over the mask.

    Per channel: the full SSIM map (11x11 Gaussian, sigma 1.5, truncate 3.5, population covariances, data range 1,
    symmetric borders) is multiplied by the mask, a border of ``r = int(3.5 * 1.5 + 0.5) = 5`` pixels is cropped, and
    ``sum(ssim * mask) / sum(mask)`` is taken over the rest; the channel values are averaged.

    Args:
        pred: Aligned prediction (H, W, C) or tensor (C, H, W).
        gt: Masked ground truth, same form.
        mask: Validity mask of the same shape; ``None`` means all valid.

    Returns:
        SSIM.
    """
    a, b = _to_hwc(pred).astype(np.float64), _to_hwc(gt).astype(np.float64)
    m = np.ones_like(a) if mask is None else np.broadcast_to(_to_hwc(mask).astype(np.float64), a.shape)
    r = int(3.5 * 1.5 + 0.5)
    values: list[float] = []
    for c in range(a.shape[-1]):
        smap = _ssim_map_skimage(a[..., c], b[..., c]) * m[..., c]
        crop_m = m[r:-r, r:-r, c]
        values.append(float(smap[r:-r, r:-r].sum() / crop_m.sum()))
    return float(np.mean(values))
