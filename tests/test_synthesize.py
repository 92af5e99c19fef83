"""The line-kernel blur and the pair generator ``python -m neurmap.synthesize`` (kernel and gopro modes)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from neurmap.data.io import read_image, read_mfmap, write_image
from neurmap.errors import UsageError
from neurmap.synth.flows import camera_flow, canonicalize_flow
from neurmap.synth.line_blur import line_blur
from neurmap.synth.synthesis import RECORD, load_config, synthesize
from neurmap.synthesize import main
from tests.conftest import REPO
from tests.helpers import checksums

#: Flow ranges that suit 24 x 32 test images (Gong's defaults would crop them away).
SMALL_FLOW = {"tx_max": 3.0, "ty_max": 3.0, "acc_max": 0.3, "rot_max": 0.02, "center_shift_max": 2.0, "tz_max": 0.001}
SMALL_OVERRIDES = [f"kernel.flow.{k}={v}" for k, v in SMALL_FLOW.items()]
QUANT = 0.5 / 255 + 1e-5  # 8-bit rounding of a written image


def _small(**kernel) -> dict:
    return {"kernel": {"flow": SMALL_FLOW, **kernel}}


def _random_image(rng: np.random.Generator, h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth-ish random RGB image (H, W, 3) in [0, 1]."""
    coarse = rng.random((h // 4 + 1, w // 4 + 1, 3))
    return np.clip(np.kron(coarse, np.ones((4, 4, 1)))[:h, :w] + 0.1 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


def _box_reference(image: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Continuous box of ``length`` px along ``axis`` of a (C, H, W) array, edge-clamped (numpy, no torch)."""
    half = length / 2
    taps = dict.fromkeys(range(-math.ceil(half) + 1, math.ceil(half)), 1.0)
    if length % 2 == 0:  # even: the box ends on pixel centres, which get half weight
        taps.update({-int(half): 0.5, int(half): 0.5})
    r = max(abs(d) for d in taps)
    pad = [(0, 0)] * image.ndim
    pad[axis] = (r, r)
    padded = np.pad(image, pad, mode="edge")
    n = image.shape[axis]
    return sum(w * np.take(padded, np.arange(r + d, r + d + n), axis=axis) for d, w in taps.items()) / length


def _line_blur_reference(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The documented kernel, evaluated pixel by pixel (slow, float64)."""
    c, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            vy, vx = flow[:, y, x]
            mag = math.hypot(vy, vx)
            dy, dx = (vy / mag, vx / mag) if mag > 0 else (0.0, 1.0)
            half = max(mag, 1.0) / 2
            reach = int(half) + 3
            acc, total = np.zeros(c), 0.0
            for oy in range(-reach, reach + 1):
                for ox in range(-reach, reach + 1):
                    along, perp = oy * dy + ox * dx, ox * dy - oy * dx
                    weight = max(0.0, 1 - abs(perp)) * max(0.0, min(along + 0.5, half) - max(along - 0.5, -half))
                    if weight > 0:
                        acc += weight * image[:, min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)]
                        total += weight
            out[:, y, x] = acc / total
    return out


def _uniform(vector: tuple[float, float], h: int, w: int) -> torch.Tensor:
    return torch.tensor(vector, dtype=torch.float32)[:, None, None].expand(2, h, w).contiguous()


# ------------------------------------------------------------------------------------------- line_blur


def test_zero_flow_is_identity():
    image = torch.rand(2, 3, 20, 70)
    assert torch.equal(line_blur(image, torch.zeros(2, 2, 20, 70)), image)


@pytest.mark.parametrize("length", [5, 4])
def test_axis_flows_are_clamped_boxes(length):
    image = torch.rand(3, 18, 26, dtype=torch.float64)
    horizontal = line_blur(image, _uniform((0.0, float(length)), 18, 26).double())
    np.testing.assert_allclose(horizontal.numpy(), _box_reference(image.numpy(), length, axis=2), atol=1e-12)
    vertical = line_blur(image, _uniform((-float(length), 0.0), 18, 26).double())  # sign does not matter
    np.testing.assert_allclose(vertical.numpy(), _box_reference(image.numpy(), length, axis=1), atol=1e-12)


def test_diagonal_flow_conserves_mass_and_is_symmetric():
    impulse = torch.zeros(1, 41, 41, dtype=torch.float64)
    impulse[0, 20, 20] = 1.0
    flow = _uniform((5.3, 7.1), 41, 41).double()
    response = line_blur(impulse, flow)
    assert float(response.sum()) == pytest.approx(1.0, abs=1e-12)  # a normalised kernel far from the borders
    assert torch.allclose(response, response.flip(1, 2), atol=1e-15)  # centred, point-symmetric kernel
    image = torch.rand(3, 30, 40)
    varying = torch.from_numpy(camera_flow((30, 40), np.random.default_rng(3), 6.0, 6.0, 0.3, 0.2, 4.0, 0.01))
    assert torch.allclose(line_blur(image, varying), line_blur(image, -varying), atol=1e-6)


def test_line_blur_matches_the_pixelwise_formula():
    rng = np.random.default_rng(1)
    image = rng.random((3, 14, 17))
    flow = camera_flow((14, 17), rng, 5.0, 5.0, 0.3, 0.4, 8.0, 0.05)  # strong rotation/zoom: many directions
    flow[:, :3] = 0.0
    flow[:, 3:6] *= 0.1  # sub-pixel vectors
    ours = line_blur(torch.from_numpy(image), torch.from_numpy(flow).double(), tile=5)
    np.testing.assert_allclose(ours.numpy(), _line_blur_reference(image, flow.astype(np.float64)), atol=1e-9)


# ----------------------------------------------------------------------------------------- kernel mode


def _make_tree(root: Path, names=("a.png", "sub/b.png", "sub/deeper/c.jpg"), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        write_image(root / name, _random_image(rng), quality=100)
        paths.append(root / name)
    return paths


def _outputs(dst: Path) -> list[str]:
    """The pairs' files (not the settings record)."""
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file() and p.name != RECORD)


def _arrays(dst: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(dst.rglob("*")):
        if path.suffix == ".png":
            out[path.name] = read_image(path).numpy()
        elif path.suffix == ".mat":
            out[path.name] = read_mfmap(path).numpy()
    return out


def test_saved_motion_map_and_blurry_image_round_trip(tmp_path):
    sharp = _random_image(np.random.default_rng(5), 40, 48)
    write_image(tmp_path / "src" / "img.png", sharp)
    summary = synthesize(tmp_path / "src", tmp_path / "dst", _small(blurs_per_image=3), progress=False)
    assert (summary["written"], summary["existing"], summary["failed"]) == (3, 0, 0)
    source = read_image(tmp_path / "src" / "img.png")
    for k in range(3):
        # The documented recipe: stream [seed, crc32(relative path), k], MATLAB rounding, crop floor(max/2).
        flow = camera_flow((40, 48), np.random.default_rng([0, zlib.crc32(b"img.png"), k]), **SMALL_FLOW)
        flow = np.sign(flow) * np.floor(np.abs(flow) + 0.5)
        bh, bw = (int(np.abs(flow[c]).max() // 2) for c in (0, 1))
        flow = flow[:, bh : 40 - bh, bw : 48 - bw]
        stem = tmp_path / "dst" / f"img_{k:03d}"
        mfmap = read_mfmap(f"{stem}_mfmap.mat")
        np.testing.assert_array_equal(mfmap.numpy(), canonicalize_flow(flow.astype(np.float32)))
        gt = read_image(f"{stem}_gtimg.png")
        assert torch.equal(gt, source[:, bh : 40 - bh, bw : 48 - bw])
        blurry = read_image(f"{stem}_blurryimg.png")
        m = math.ceil(float(torch.hypot(mfmap[0], mfmap[1]).max()) / 2) + 1  # clamping differs near the crop
        reblurred = line_blur(gt, mfmap)
        assert float((blurry - reblurred)[:, m:-m, m:-m].abs().max()) <= QUANT
        assert float((blurry - gt).abs().max()) > 0.05  # it is blurred


def test_cli_end_to_end(tmp_path):
    _make_tree(tmp_path / "src")
    dst = tmp_path / "out"
    args = [f"src={tmp_path / 'src'}", f"dst={dst}", "kernel.blurs_per_image=2", "kernel.include_sharp=true"]
    run = subprocess.run(
        [sys.executable, "-m", "neurmap.synthesize", *args, *SMALL_OVERRIDES],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "9 written, 0 already there, 0 failed" in run.stdout
    names = _outputs(dst)
    assert len(names) == 27
    for name in ("a", "sub_b", "sub_deeper_c"):
        for k in ("000", "001", "002"):
            for kind in ("blurryimg.png", "gtimg.png", "mfmap.mat"):
                assert f"{name}_{k}_{kind}" in names
    # index 002 is the unblurred copy: zero motion, blurry == sharp
    assert not read_mfmap(dst / "a_002_mfmap.mat").any()
    assert torch.equal(read_image(dst / "a_002_blurryimg.png"), read_image(dst / "a_002_gtimg.png"))


def test_reproducible_and_independent_of_workers(tmp_path):
    _make_tree(tmp_path / "src")
    cfg = _small(blurs_per_image=2)
    synthesize(tmp_path / "src", tmp_path / "one", cfg, progress=False)
    synthesize(tmp_path / "src", tmp_path / "again", cfg, progress=False)
    summary = synthesize(tmp_path / "src", tmp_path / "two", {**cfg, "workers": 2}, progress=False)
    assert summary["written"] == 6
    synthesize(tmp_path / "src", tmp_path / "seed1", {**cfg, "seed": 1}, progress=False)
    one = _arrays(tmp_path / "one")
    assert len(one) == 18
    for other in ("again", "two"):
        arrays = _arrays(tmp_path / other)
        assert arrays.keys() == one.keys()
        for name, array in one.items():
            np.testing.assert_array_equal(arrays[name], array, err_msg=f"{other}/{name}")
    png = "sub_b_001_blurryimg.png"
    assert (tmp_path / "one" / png).read_bytes() == (tmp_path / "two" / png).read_bytes()
    seed1 = _arrays(tmp_path / "seed1")
    assert not np.array_equal(seed1["a_000_mfmap.mat"], one["a_000_mfmap.mat"])


def test_resume_redoes_only_missing_items(tmp_path):
    _make_tree(tmp_path / "src")
    cfg = _small(blurs_per_image=2)
    assert synthesize(tmp_path / "src", tmp_path / "dst", cfg, progress=False)["written"] == 6
    again = synthesize(tmp_path / "src", tmp_path / "dst", cfg, progress=False)
    assert (again["written"], again["existing"]) == (0, 6)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dst").iterdir()}
    (tmp_path / "dst" / "sub_b_001_blurryimg.png").unlink()
    redo = synthesize(tmp_path / "src", tmp_path / "dst", cfg, progress=False)
    assert (redo["written"], redo["existing"]) == (1, 5)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dst").iterdir()}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"sub_b_001_blurryimg.png", "sub_b_001_gtimg.png", "sub_b_001_mfmap.mat"}


def test_unreadable_source_skip_or_raise(tmp_path, capsys):
    _make_tree(tmp_path / "src")
    (tmp_path / "src" / "sub" / "broken.png").write_bytes(b"not a png at all")
    args = [f"src={tmp_path / 'src'}", f"dst={tmp_path / 'skip'}", "on_error=skip", *SMALL_OVERRIDES]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "3 written, 0 already there, 1 failed" in captured.out
    assert "skipped 1 failed source(s)" in captured.err and "broken.png" in captured.err
    assert len(_outputs(tmp_path / "skip")) == 9

    assert main([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'raise'}", "on_error=raise", *SMALL_OVERRIDES]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("neurmap.synthesize: error: ") and "broken.png" in err and "not a readable image" in err


def test_refuses_bad_paths_and_settings(tmp_path, capsys):
    _make_tree(tmp_path / "src")
    cases = [
        ([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'src' / 'out'}"], "is inside src="),
        ([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'src'}"], "is inside src="),
        ([f"src={tmp_path / 'missing'}", f"dst={tmp_path / 'out'}"], "does not exist"),
        ([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'out'}", "kernel.blur_per_image=3"], "'kernel.blur_per_image'"),
        ([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'out'}", "workers=0"], "workers must be an integer >= 1"),
        ([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'out'}", "mode=video"], "mode must be 'kernel' or 'gopro'"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append(([f"src={tmp_path / 'empty'}", f"dst={tmp_path / 'out'}"], "holds no image"))
    for args, needle in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("neurmap.synthesize: error: ") and needle in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_config_presets_and_help(capsys):
    cfg = load_config(["preset=mild", "kernel.flow.tx_max=5"])
    assert cfg.kernel.flow.ty_max == 19 and cfg.kernel.flow.tx_max == 5
    assert cfg.kernel.flow.rot_max == pytest.approx(math.pi / 120)
    assert load_config().kernel.flow.rot_max == pytest.approx(math.pi / 70)
    with pytest.raises(UsageError, match="unknown key 'kernel.flow.bogus'.*the keys of kernel.flow are: acc_max"):
        load_config(cfg={"kernel": {"flow": {"bogus": 1}}})
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("mode=gopro", "_blurryimg.png", "<sequence>/blur/", "kernel.blurs_per_image", "preset"):
        assert needle in text


# ------------------------------------------------------------------------------------------ gopro mode


def _square_frames(folder: Path, n: int = 7, h: int = 24, w: int = 32) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.full((h, w, 3), 0.1, np.float32)
        frame[8:16, 3 + 3 * i : 11 + 3 * i] = (0.9, 0.6, 0.3)
        write_image(folder / f"frame_{i:04d}.png", frame)
        frames.append(read_image(folder / f"frame_{i:04d}.png").numpy())  # 8-bit as stored
    return frames


@pytest.mark.parametrize("gamma", [2.2, None])
def test_gopro_mode_averages_windows(tmp_path, gamma):
    frames = np.stack(_square_frames(tmp_path / "videos" / "GOPR0001"))
    cfg = {"mode": "gopro", "gopro": {"frames": 7, "gamma": gamma}}
    summary = synthesize(tmp_path / "videos", tmp_path / "dst", cfg, progress=False)
    assert summary["written"] == 1
    assert _outputs(tmp_path / "dst") == ["GOPR0001/blur/frame_0003.png", "GOPR0001/sharp/frame_0003.png"]
    expected = frames.mean(0) if gamma is None else (frames**gamma).mean(0) ** (1 / gamma)
    blur = read_image(tmp_path / "dst" / "GOPR0001" / "blur" / "frame_0003.png").numpy()
    assert np.abs(blur - expected).max() <= QUANT
    sharp = read_image(tmp_path / "dst" / "GOPR0001" / "sharp" / "frame_0003.png").numpy()
    np.testing.assert_array_equal(sharp, frames[3])


def test_gopro_mode_windows_and_size_mismatch(tmp_path):
    _square_frames(tmp_path / "seq", n=8)  # frames directly in src: one sequence named after src
    summary = synthesize(tmp_path / "seq", tmp_path / "dst", {"mode": "gopro", "gopro": {"frames": 3}}, progress=False)
    assert summary["written"] == 2  # windows 0-2 and 3-5; frames 6-7 do not fill a window
    assert _outputs(tmp_path / "dst" / "seq" / "blur") == ["frame_0001.png", "frame_0004.png"]
    overlapping = {"mode": "gopro", "gopro": {"frames": 3, "stride": 1}}
    with pytest.raises(UsageError, match="were made by another run .*gopro="):  # other settings: refused
        synthesize(tmp_path / "seq", tmp_path / "dst", overlapping, progress=False)
    again = synthesize(tmp_path / "seq", tmp_path / "dst", {**overlapping, "overwrite": True}, progress=False)
    assert again["written"] == 6 and again["existing"] == 0  # windows starting at frames 0 to 5, all made again
    write_image(tmp_path / "seq" / "frame_0009.png", np.zeros((20, 32, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"frame_0009\.png: 20x32 px, but .*frame_0006\.png"):
        synthesize(tmp_path / "seq", tmp_path / "dst2", overlapping, progress=False)


def test_a_rerun_with_other_settings_is_refused(tmp_path, capsys):
    _make_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    assert main([f"src={tmp_path / 'src'}", f"dst={dst}", *SMALL_OVERRIDES]) == 0
    capsys.readouterr()
    before = checksums(dst)
    assert main([f"src={tmp_path / 'src'}", f"dst={dst}", "seed=5", *SMALL_OVERRIDES]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"neurmap.synthesize: error: the pairs in dst={dst} were made by another run ({RECORD}: seed=0 -> 5); "
        "pass overwrite=true to replace them, or choose another output"
    )
    assert checksums(dst) == before
    assert main([f"src={tmp_path / 'src'}", f"dst={dst}", *SMALL_OVERRIDES]) == 0  # the same settings resume
    assert "0 written, 3 already there" in capsys.readouterr().out
    assert main([f"src={tmp_path / 'src'}", f"dst={dst}", "seed=5", "overwrite=true", *SMALL_OVERRIDES]) == 0
    assert "3 written, 0 already there" in capsys.readouterr().out


def test_a_file_it_did_not_write_is_never_replaced(tmp_path, capsys):
    _make_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    write_image(dst / "a_000_gtimg.png", _random_image(np.random.default_rng(9)))
    before = checksums(dst)
    assert main([f"src={tmp_path / 'src'}", f"dst={dst}", *SMALL_OVERRIDES]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"neurmap.synthesize: error: dst={dst} holds {dst}/a_000_gtimg.png, which synthesize did not write "
        f"(no {RECORD}) and would replace; pass overwrite=true to replace it, or choose another dst"
    )
    assert checksums(dst) == before


def test_on_error_fail_goes_on_and_exits_1_with_the_count(tmp_path, capsys):
    _make_tree(tmp_path / "src")
    (tmp_path / "src" / "broken.png").write_bytes(b"not a png")
    assert main([f"src={tmp_path / 'src'}", f"dst={tmp_path / 'dst'}", "on_error=fail", *SMALL_OVERRIDES]) == 1
    captured = capsys.readouterr()
    assert "3 written, 0 already there, 1 failed" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        "neurmap.synthesize: error: 1 source(s) could not be read and were skipped (on_error=skip: exit 0)"
    )


def test_ctrl_c_and_sigterm_stop_with_one_line_and_status_1(tmp_path, capsys, monkeypatch):
    import signal

    from neurmap.synth import synthesis

    _make_tree(tmp_path / "src")
    for how, expected in (("ctrl+c", "Ctrl+C"), ("sigterm", "SIGTERM")):

        def stop(job, how=how):
            if how == "ctrl+c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(synthesis, "_run", stop)
        assert main([f"src={tmp_path / 'src'}", f"dst={tmp_path / how}", *SMALL_OVERRIDES]) == 1
        err = capsys.readouterr().err.strip()
        assert err.splitlines()[-1] == (
            f"neurmap.synthesize: error: stopped by {expected}; run the same command again to resume "
            "(finished pairs are kept)"
        )
