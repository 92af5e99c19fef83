"""NIQE, the no-reference Natural Image Quality Evaluator, following the MATLAB reference code.

NIQE (Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013; MATLAB
release ``niqe_release.zip`` from LIVE, UT Austin) fits a multivariate Gaussian to natural-scene statistics of an
image's patches and reports its distance to a Gaussian fitted once on pristine photographs. Lower is better.

This is a numpy re-implementation that follows the MATLAB release, as the BasicSR and pyiqa ports do:

* Colour: the image is quantised to 8 bits and converted to grey with MATLAB's ``rgb2gray`` weights
  (0.298936021293775, 0.587043074451121, 0.114020904255103), rounded to integers as ``rgb2gray`` does on uint8.
  ``channel="y"`` uses the BT.601 YCbCr luma instead (MATLAB ``rgb2ycbcr``, 16-235), the BasicSR default; it is a
  different number (3.8 % off the reference on one of the calibration images), so label results that use it.
* The image is cropped to whole 96x96 blocks (top-left corner kept).
* Two scales: the image itself and a half-size copy made with MATLAB's ``imresize(.., 0.5)`` (bicubic, a = -0.5,
  antialiasing kernel widened by 1/scale, symmetric borders), implemented here as dense resampling matrices.
* MSCN coefficients ``(I - mu) / (sigma + 1)`` with the 7x7 Gaussian window shipped with the parameters and
  replicate borders. Coefficients with ``|x| < 1e-10`` are set to 0: flat regions otherwise leave floating-point
  residue of about 1e-14 whose signs flip between implementations and move the AGGD fits.
* Per block (96x96 at scale 1, 48x48 at scale 2) 18 features: an AGGD fit (shape, mean of the left/right scales)
  of the MSCN coefficients, and for each of four neighbour products (horizontal, vertical, two diagonals, circular
  within the block) an AGGD fit (shape, mean, left scale, right scale). AGGD shapes come from a grid search over
  0.2:0.001:10 as in the MATLAB code. 36 features per block in all.
* The blocks' features give a mean (ignoring NaN per feature) and a covariance (over blocks without any NaN,
  normalised by N - 1, MATLAB ``nancov``); the score is
  ``sqrt((mu_p - mu_d) pinv((cov_p + cov_d) / 2) (mu_p - mu_d)^T)``.

On the five Kodak calibration pairs shipped with pyiqa this reproduces the reference MATLAB values within 0.6 %.
NIQE needs many blocks to be stable: below roughly 400x400 pixels it has few blocks and its absolute values are
high and noisy, so only compare methods on the same images.

The pristine-model parameters (``niqe_pris_params.npz``: ``mu_pris_param`` (1, 36), ``cov_pris_param`` (36, 36),
``gaussian_window`` (7, 7)) are the MATLAB release's, as redistributed in BasicSR (``basicsr/metrics``) and the
``iqa-torch`` wheel (``iqa/niqe``). They are never downloaded: see :func:`load_niqe_params` for where they are
looked up.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from neurmap.metrics._assets import MetricUnavailable, candidate_from_env, installed_package_file

__all__ = [
    "NIQEParams",
    "NIQE_PARAMS_ENV",
    "load_niqe_params",
    "find_niqe_params",
    "niqe_score",
    "niqe_from_grey",
    "niqe_batch",
    "matlab_imresize",
    "to_grey_255",
]

NIQE_PARAMS_ENV = "NEURMAP_NIQE_PARAMS"
_NPZ_NAME = "niqe_pris_params.npz"
_HINT = (
    f"NIQE parameters not found: run `pip install --no-deps iqa-torch==1.2.1` (ships {_NPZ_NAME}) or set "
    f"{NIQE_PARAMS_ENV}=/path/to/{_NPZ_NAME} (also in BasicSR's basicsr/metrics/)"
)
_BLOCK = 96
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB rgb2gray
_RGB2Y = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr luma row, for RGB in [0, 1]; plus 16


@dataclass(frozen=True)
class NIQEParams:
    """The pristine multivariate Gaussian and the MSCN window.

    Attributes:
        mu: Pristine feature mean, shape (36,).
        cov: Pristine feature covariance, shape (36, 36).
        window: 7x7 Gaussian window for the local mean and deviation (sums to 1).
    """

    mu: np.ndarray
    cov: np.ndarray
    window: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# Parameters


def find_niqe_params(path: str | Path | None = None) -> Path:
    """Locate ``niqe_pris_params.npz``; see :func:`load_niqe_params` for the search order.

    Raises:
        MetricUnavailable: If it is not found.
    """
    explicit = [Path(path).expanduser()] if path is not None else []
    env = candidate_from_env(NIQE_PARAMS_ENV, _NPZ_NAME)
    for candidate in [*explicit, *([env] if env is not None else [])]:
        candidate = candidate / _NPZ_NAME if candidate.is_dir() else candidate
        if candidate.is_file():
            return candidate
        raise MetricUnavailable(f"{candidate} does not exist. {_HINT}")
    installed = installed_package_file(
        [
            ("iqa-torch", "iqa", f"niqe/{_NPZ_NAME}"),
            ("basicsr", "basicsr", f"metrics/{_NPZ_NAME}"),
        ]
    )
    if installed is None:
        raise MetricUnavailable(_HINT)
    return installed


@functools.lru_cache(maxsize=4)
def _load_npz(path: Path) -> NIQEParams:
    with np.load(path, allow_pickle=False) as data:
        mu = np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
        window = np.asarray(data["gaussian_window"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36) or window.shape != (7, 7):
        raise ValueError(f"{path}: unexpected NIQE parameter shapes {mu.shape}, {cov.shape}, {window.shape}")
    return NIQEParams(mu=mu, cov=cov, window=window)


def load_niqe_params(path: str | Path | None = None) -> NIQEParams:
    """Load the pristine NIQE parameters (cached per file).

    Search order: ``path`` (the npz or a folder holding it); the environment variable ``NEURMAP_NIQE_PARAMS`` (same
    forms); the installed ``iqa-torch`` distribution (``iqa/niqe/niqe_pris_params.npz``); an installed ``basicsr``
    (``basicsr/metrics/niqe_pris_params.npz``). Installed packages are located through their file lists and never
    imported. The npz is read with ``allow_pickle=False``.

    Args:
        path: Optional explicit file or folder; if given (or the environment variable is set) and missing, the
            search stops there.

    Returns:
        The parameters.

    Raises:
        MetricUnavailable: If the file is not found; the message says how to get it.
    """
    return _load_npz(find_niqe_params(path).resolve())


# ----------------------------------------------------------------------------------------------------------------
# MATLAB-compatible image operations


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as in MATLAB ``imresize``."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=32)
def _resize_matrix(in_len: int, scale: float, antialias: bool) -> np.ndarray:
    """Dense (out_len, in_len) matrix that resamples one axis as MATLAB ``imresize`` (bicubic) does."""
    out_len = math.ceil(in_len * scale)
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates, as in MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)  # matching input coordinate
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric border
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), idx0.ravel()), weights.ravel())
    return matrix


def matlab_imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize a 2-D float image like MATLAB ``imresize(img, scale)`` (bicubic) on a double image.

    Args:
        img: Array (H, W).
        scale: Resize factor; the output is ``ceil(H * scale) x ceil(W * scale)``.
        antialias: Widen the kernel when shrinking (MATLAB's default).

    Returns:
        The resized float64 array.
    """
    rows = _resize_matrix(img.shape[0], float(scale), antialias)
    cols = _resize_matrix(img.shape[1], float(scale), antialias)
    return rows @ np.asarray(img, dtype=np.float64) @ cols.T


def _filter_replicate(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """2-D correlation with an odd window, same size, replicate borders (MATLAB ``imfilter(.., 'replicate')``)."""
    kh, kw = window.shape
    padded = np.pad(img, ((kh // 2, kh // 2), (kw // 2, kw // 2)), mode="edge")
    h, w = img.shape
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += window[i, j] * padded[i : i + h, j : j + w]
    return out


def to_grey_255(img: torch.Tensor | np.ndarray, channel: Literal["gray", "y"] = "gray") -> np.ndarray:
    """One 8-bit-valued luminance plane, as MATLAB gets from a uint8 image.

    Args:
        img: One image: a tensor (3, H, W) / (1, H, W) / (H, W), or an array (H, W, 3) / (H, W). Float inputs are in
            [0, 1]; uint8 inputs in [0, 255]. Floats are quantised to 8 bits first (the saved PNG that MATLAB reads).
        channel: ``"gray"`` for MATLAB ``rgb2gray`` (the NIQE reference), ``"y"`` for BT.601 YCbCr luma.

    Returns:
        Float64 array (H, W) of integers in [0, 255].
    """
    if isinstance(img, torch.Tensor):
        arr = img.detach().cpu()
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        arr = arr.numpy()
        if arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
    else:
        arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"expected one grey or RGB image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        rgb = arr.astype(np.float64)
    else:
        rgb = np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0)
    if rgb.ndim == 2:
        return rgb
    if channel == "gray":
        grey = rgb @ np.asarray(_RGB2GRAY)
    elif channel == "y":
        grey = 16.0 + (rgb / 255.0) @ np.asarray(_RGB2Y)
    else:
        raise ValueError(f"channel must be 'gray' or 'y', got {channel!r}")
    return np.round(grey)


# ----------------------------------------------------------------------------------------------------------------
# Features


@functools.lru_cache(maxsize=1)
def _aggd_grid() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid 0.2:0.001:10 and its ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    shapes = 0.2 + 0.001 * np.arange(9801)
    lg = np.vectorize(math.lgamma)
    ratio = np.exp(2 * lg(2 / shapes) - lg(1 / shapes) - lg(3 / shapes))
    return shapes, ratio


def _aggd_fit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit per row (MATLAB ``estimateaggdparam``), vectorised over blocks.

    Args:
        values: (N, n) samples, one row per block.

    Returns:
        Shape alpha, left std and right std, each (N,). Rows with no negative or no positive sample give NaN stds.
    """
    shapes, ratio = _aggd_grid()
    neg, pos = values < 0, values > 0
    sq = values**2
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(values).mean(axis=1) ** 2 / sq.mean(axis=1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
        # grid search; a NaN r_norm (block without negative or positive samples) picks the first grid point, as
        # MATLAB's min does on an all-NaN vector
        pick = np.argmin((ratio[None, :] - r_norm[:, None]) ** 2, axis=1)
    return shapes[pick], left_std, right_std


def _block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """18 NIQE features for each non-overlapping ``block`` x ``block`` tile of an MSCN map."""
    h, w = mscn.shape
    nh, nw = h // block, w // block
    tiles = mscn[: nh * block, : nw * block].reshape(nh, block, nw, block).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(nh * nw, block, block)
    lg = np.vectorize(math.lgamma)
    feats = []
    alpha, left, right = _aggd_fit(tiles.reshape(len(tiles), -1))
    const = np.sqrt(np.exp(lg(1 / alpha) - lg(3 / alpha)))
    feats += [alpha, (left + right) / 2 * const]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pairs = tiles * np.roll(tiles, shift, axis=(1, 2))
        alpha, left, right = _aggd_fit(pairs.reshape(len(tiles), -1))
        const = np.sqrt(np.exp(lg(1 / alpha) - lg(3 / alpha)))
        mean = (right - left) * np.exp(lg(2 / alpha) - lg(1 / alpha)) * const
        feats += [alpha, mean, left * const, right * const]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients, with near-zero values snapped to 0."""
    mu = _filter_replicate(img, window)
    sigma = np.sqrt(np.abs(_filter_replicate(img * img, window) - mu * mu))
    out = (img - mu) / (sigma + 1)
    out[np.abs(out) < 1e-10] = 0.0
    return out


def niqe_from_grey(grey: np.ndarray, params: NIQEParams) -> float:
    """NIQE of one luminance plane with values in [0, 255] (no colour conversion or quantisation).

    Args:
        grey: Array (H, W); at least 96x96, and ideally several hundred pixels per side.
        params: Pristine parameters.

    Returns:
        The NIQE score (lower is better).
    """
    h, w = grey.shape
    nh, nw = h // _BLOCK, w // _BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs an image of at least {_BLOCK}x{_BLOCK} pixels, got {h}x{w}")
    img = np.asarray(grey, dtype=np.float64)[: nh * _BLOCK, : nw * _BLOCK]
    feats = [_block_features(_mscn(img, params.window), _BLOCK)]
    half = matlab_imresize(img / 255.0, 0.5) * 255.0
    feats.append(_block_features(_mscn(half, params.window), _BLOCK // 2))
    dist = np.concatenate(feats, axis=1)  # (blocks, 36)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu_d = np.nanmean(dist, axis=0)
    complete = dist[~np.isnan(dist).any(axis=1)]
    if len(complete) < 2:
        raise ValueError("NIQE: fewer than two blocks with finite features (image too small or flat)")
    cov_d = np.cov(complete, rowvar=False)
    diff = params.mu - mu_d
    value = diff @ np.linalg.pinv((params.cov + cov_d) / 2) @ diff
    return float(np.sqrt(value))


def niqe_score(
    img: torch.Tensor | np.ndarray,
    params: NIQEParams | None = None,
    channel: Literal["gray", "y"] = "gray",
    crop_border: int = 0,
) -> float:
    """NIQE of one image, MATLAB-reference style (lower is better).

    Args:
        img: One image, a tensor (3, H, W) / (1, 3, H, W) / (1, H, W) or an array (H, W, 3) / (H, W); floats in
            [0, 1], uint8 in [0, 255]. Floats are quantised to 8 bits first.
        params: Pristine parameters; loaded with :func:`load_niqe_params` if omitted.
        channel: ``"gray"`` (MATLAB ``rgb2gray``, reproduces the reference) or ``"y"`` (YCbCr luma, BasicSR's default;
            a different number, label it).
        crop_border: Pixels removed from each side before the block crop (0 in the reference).

    Returns:
        The score.

    Raises:
        MetricUnavailable: If ``params`` is omitted and the parameter file is not found.
    """
    params = load_niqe_params() if params is None else params
    grey = to_grey_255(img, channel)
    if crop_border > 0:
        grey = grey[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_from_grey(grey, params)


def niqe_batch(
    imgs: torch.Tensor, params: NIQEParams | None = None, channel: Literal["gray", "y"] = "gray"
) -> torch.Tensor:
    """NIQE of each image in a batch (B, C, H, W) in [0, 1]; returns a float64 tensor (B,). See :func:`niqe_score`."""
    params = load_niqe_params() if params is None else params
    return torch.tensor([niqe_score(x, params, channel) for x in imgs], dtype=torch.float64)
