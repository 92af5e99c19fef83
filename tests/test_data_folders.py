"""On-disk datasets: every documented layout on a tiny fake tree, the data configs, and bad input."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from neurmap.config import instantiate_datamodule
from neurmap.data import layouts
from neurmap.data.folders import EvalImages, PairedImages, UnpairedImages
from neurmap.data.io import ImageReadError, list_images, read_image, read_mfmap, write_image, write_mfmap
from neurmap.data.transforms import PairedTransform, SingleTransform
from tests import fake_data
from tests.conftest import compose


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, fake_data.all_layouts(root)


def _check_image(x: torch.Tensor, size=fake_data.SIZE) -> None:
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, *size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# ------------------------------------------------------------------------------------------------ io
def test_read_image_converts_gray_rgba_and_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    gray = (rng.random((5, 7)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    x = read_image(tmp_path / "gray.png")
    assert x.shape == (3, 5, 7) and torch.equal(x[0], x[2])
    assert torch.allclose(x[1], torch.from_numpy(gray / 255.0).float())

    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 77
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    x = read_image(tmp_path / "rgba.png")
    assert x.shape == (3, 4, 6)
    assert torch.allclose(x[:, 0, 0] * 255, torch.tensor([30.0, 20.0, 10.0]))  # RGB, alpha dropped

    deep = np.full((3, 3, 3), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert torch.allclose(read_image(tmp_path / "deep.png"), torch.full((3, 3, 3), 40000 / 65535))

    gray16 = np.full((2, 2), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    assert torch.equal(read_image(tmp_path / "gray16.png"), torch.ones(3, 2, 2))


def test_write_then_read_round_trips_8_and_16_bit(tmp_path):
    x = torch.rand(3, 9, 11)
    write_image(tmp_path / "a.png", x)
    assert (read_image(tmp_path / "a.png") - x).abs().max() <= 0.5 / 255 + 1e-6
    write_image(tmp_path / "b.png", x, bits=16)
    assert (read_image(tmp_path / "b.png") - x).abs().max() <= 0.5 / 65535 + 1e-6
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary file


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00trunc"])
def test_unreadable_image_names_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(path)
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")


def test_mfmap_round_trip_and_gong_axes(tmp_path):
    motion = np.random.default_rng(1).normal(size=(2, 6, 8)).astype(np.float32) * 5
    write_mfmap(tmp_path / "m_mfmap.mat", motion)
    from scipy.io import loadmat

    raw = loadmat(tmp_path / "m_mfmap.mat")["mfmap"]
    assert raw.shape == (6, 8, 2) and (raw[..., 0] >= 0).all()  # (u, v), u = horizontal >= 0
    sign = np.where(motion[1] < 0, -1.0, 1.0)
    np.testing.assert_array_equal(raw[..., 0], motion[1] * sign)
    np.testing.assert_array_equal(raw[..., 1], motion[0] * sign)
    np.testing.assert_array_equal(read_mfmap(tmp_path / "m_mfmap.mat").numpy(), motion * sign)


def test_bad_mfmap_files_are_named(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "a_mfmap.mat", {"flow": np.zeros((2, 2, 2))})
    with pytest.raises(ImageReadError, match="a_mfmap.mat: no variable 'mfmap'"):
        read_mfmap(tmp_path / "a_mfmap.mat")
    savemat(tmp_path / "b_mfmap.mat", {"mfmap": np.zeros((2, 2, 3))})
    with pytest.raises(ImageReadError, match=r"b_mfmap.mat: mfmap has shape \(2, 2, 3\)"):
        read_mfmap(tmp_path / "b_mfmap.mat")
    (tmp_path / "c_mfmap.mat").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match="c_mfmap.mat"):
        read_mfmap(tmp_path / "c_mfmap.mat")


def test_missing_and_empty_folders_name_the_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist; expected GoPro frames"):
        list_images(tmp_path / "nowhere", "GoPro frames")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty holds no image .*; expected unpaired photos"):
        list_images(tmp_path / "empty", "unpaired photos")


# ------------------------------------------------------------------------------------------- layouts
def test_gopro_layout_pairs_frames_and_chooses_the_blur_folder(tree):
    root, roots = tree
    records = layouts.gopro(roots["gopro"], "train", "blur")
    assert len(records) == 6
    for r in records:
        assert r["blur"].parent.name == "blur" and r["sharp"].parent.name == "sharp"
        assert r["blur"].name == r["sharp"].name and r["blur"].parts[-3] == r["sharp"].parts[-3]
    gamma = layouts.gopro(roots["gopro"], "test", "blur_gamma")
    assert {r["blur"].parent.name for r in gamma} == {"blur_gamma"}
    assert [r["name"] for r in layouts.gopro(roots["gopro"], "test", max_images=2)] == [
        "GOPR00_11_00/000000",
        "GOPR01_11_00/000000",
    ]
    with pytest.raises(FileNotFoundError, match=r"GOPRO_Large/val does not exist; expected the GoPro layout"):
        layouts.gopro(roots["gopro"], "val")
    with pytest.raises(FileNotFoundError, match=r"blurry does not exist"):
        layouts.gopro(roots["gopro"], "train", "blurry")


def test_gopro_frame_without_sharp_counterpart_is_named(tmp_path):
    base = fake_data.gopro(tmp_path, sequences=1, frames=2)
    (base / "train" / "GOPR00_11_00" / "sharp" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"000001.png has no sharp counterpart"):
        layouts.gopro(base, "train")


def test_realblur_reads_the_official_list_files(tree):
    root, roots = tree
    for subset in ("J", "R"):
        records = layouts.realblur(roots["realblur"], subset, "train")
        assert len(records) == 4
        for r in records:
            assert r["blur"].parent.name == "blur" and r["sharp"].parent.name == "gt"
            assert r["blur"].name.replace("blur", "gt") == r["sharp"].name
            assert r["blur"].parts[-3] == r["sharp"].parts[-3]
    test = layouts.realblur(roots["realblur"], "J", "test")
    assert {r["name"].split("/")[0] for r in test} == {"scene002", "scene003"}  # test scenes, disjoint
    with pytest.raises(ValueError, match="subset must be 'J' or 'R'"):
        layouts.realblur(roots["realblur"], "K")


def test_realblur_bad_lists_name_file_and_line(tmp_path, tree):
    _, roots = tree
    base = roots["realblur"]
    (base / "RealBlur_J_bad_list.txt").write_text("only_one_path.png\n")
    with pytest.raises(ValueError, match=r"RealBlur_J_bad_list.txt:1: expected '<gt path> <blur path>'"):
        layouts.realblur(base, "J", list_file="RealBlur_J_bad_list.txt")
    (base / "RealBlur_J_gone_list.txt").write_text("a/gt/gt_1.png a/blur/blur_1.png\n")
    with pytest.raises(FileNotFoundError, match=r"gone_list.txt:1: .*blur_1.png does not exist; list paths are"):
        layouts.realblur(base, "J", list_file="RealBlur_J_gone_list.txt")
    with pytest.raises(FileNotFoundError, match=r"RealBlur_J_val_list.txt does not exist"):
        layouts.realblur(base, "J", "val")


def test_kernel_synth_layout_with_ground_truth_motion(tree):
    _, roots = tree
    records = layouts.kernel_synth(roots["kernel_synth"] / "test")
    assert len(records) == 3
    for r in records:
        stem = r["blur"].name[: -len("_blurryimg.png")]
        assert r["sharp"].name == f"{stem}_gtimg.png" and r["motion"].name == f"{stem}_mfmap.mat"
    assert "motion" not in layouts.kernel_synth(roots["kernel_synth"] / "train", with_motion=False)[0]


def test_kernel_synth_missing_partner_is_named(tmp_path):
    base = fake_data.kernel_synth(tmp_path, per_split=1)
    (base / "train" / "img0_000_mfmap.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"img0_000_blurryimg.png has no motion file"):
        layouts.kernel_synth(base / "train")
    assert len(layouts.kernel_synth(base / "train", with_motion=False)) == 1


def test_paired_folders_match_by_relative_name(tmp_path):
    base = fake_data.folders(tmp_path)
    records = layouts.paired_folders(base / "paired" / "train")
    assert [r["name"] for r in records] == ["0", "1", "2"]
    assert all(r["blur"].name == r["sharp"].name for r in records)
    (base / "paired" / "train" / "target" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"input/1.png has no target"):
        layouts.paired_folders(base / "paired" / "train")


def test_image_folder_is_recursive_and_skips_excluded_folders(tree):
    _, roots = tree
    records = layouts.image_folder(roots["urb"] / "blur", key="blur")
    assert len(records) == 4 and {r["blur"].suffix for r in records} == {".png", ".jpg"}
    assert {r["name"].split("/")[0] for r in records} == {"scene0", "scene1"}
    assert len(layouts.image_folder(roots["urb"] / "blur", exclude=["scene1"])) == 2
    with pytest.raises(FileNotFoundError, match=r"blur holds no image"):
        layouts.image_folder(roots["urb"] / "blur", recursive=False)


# ------------------------------------------------------------------------------------------- datasets
def test_paired_dataset_gives_aligned_same_crop_pairs(tree):
    _, roots = tree
    ds = PairedImages(layouts.gopro(roots["gopro"]), transform=PairedTransform(crop_size=24, hflip=True))
    torch.manual_seed(0)
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"blur", "sharp", "name"} and s["blur"].shape == s["sharp"].shape == (3, 24, 24)
        # the blurry image is a 3-tap horizontal average of the sharp one: same crop and flip
        # keep the relation everywhere except the crop's left/right columns
        padded = s["sharp"]
        reblurred = (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3
        assert (reblurred - s["blur"][..., 1:-1]).abs().max() < 2.5 / 255


def test_unpaired_datasets_read_one_side_and_name_it(tree):
    _, roots = tree
    records = layouts.realblur(roots["realblur"], "J", "train")
    blur = UnpairedImages(records, "blur", transform=SingleTransform(crop_size=16))
    sharp = UnpairedImages(records, "sharp", transform=SingleTransform(crop_size=16))
    b, s = blur[0], sharp[0]
    assert set(b) == {"blur", "name"} and set(s) == {"sharp", "name"}
    assert b["blur"].shape == s["sharp"].shape == (3, 16, 16)
    assert "gt/gt_" in s["name"] and "blur" not in s["name"].split("/")[-1]
    with pytest.raises(ValueError, match="key must be 'blur' or 'sharp'"):
        UnpairedImages(records, "motion")
    with pytest.raises(ValueError, match="records have no 'sharp' files"):
        UnpairedImages(layouts.image_folder(roots["urb"] / "blur"), "sharp")


def test_eval_dataset_whole_images_with_optional_sharp_and_motion(tree):
    _, roots = tree
    synth = EvalImages(layouts.kernel_synth(roots["kernel_synth"] / "test"))
    s = synth[0]
    _check_image(s["blur"])
    _check_image(s["sharp"])
    assert s["motion"].shape == (2, *fake_data.SIZE) and s["motion"].dtype == torch.float32
    assert torch.allclose(s["motion"][1], torch.full(fake_data.SIZE, 3.0)) and s["motion"][0].abs().max() == 0
    urb = EvalImages(layouts.image_folder(roots["urb"] / "test"))
    assert set(urb[0]) == {"blur", "name"}


def test_corrupt_image_raises_by_default_or_is_skipped_with_a_count(tmp_path):
    base = fake_data.gopro(tmp_path, sequences=1, frames=3)
    bad = base / "train" / "GOPR00_11_00" / "blur" / "000001.png"
    bad.write_bytes(b"corrupt")
    records = layouts.gopro(base)
    with pytest.raises(ImageReadError, match="000001.png: not a readable image"):
        PairedImages(records)[1]
    ds = PairedImages(records, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped an unreadable item \(1 of 3 so far.*000001.png"):
        sample = ds[1]
    assert sample["name"] == "GOPR00_11_00/000002"  # the next readable item
    assert ds.skipped == {1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known-bad item is skipped silently afterwards
        names = [ds[i]["name"] for i in range(3)]
    assert names == ["GOPR00_11_00/000000", "GOPR00_11_00/000002", "GOPR00_11_00/000002"]


def test_paired_size_mismatch_names_the_pair(tmp_path):
    base = fake_data.folders(tmp_path, count=1)
    target = base / "paired" / "train" / "target" / "0.png"
    write_image(target, np.zeros((10, 12, 3), np.float32))
    with pytest.raises(ImageReadError, match=r"size mismatch.*input/0.png 40x56.*target/0.png 10x12"):
        PairedImages(layouts.paired_folders(base / "paired" / "train"))[0]


def test_small_images_are_padded_to_the_crop_with_one_warning(tree):
    _, roots = tree
    ds = UnpairedImages(layouts.image_folder(roots["urb"] / "sharp", key="sharp"), "sharp", SingleTransform(64))
    with pytest.warns(UserWarning, match="smaller than crop_size=64") as record:
        shapes = {tuple(ds[i]["sharp"].shape) for i in range(len(ds))}
    assert shapes == {(3, 64, 64)}
    assert len([w for w in record if "smaller than crop_size" in str(w.message)]) == 1


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("choice", "train_sizes", "val_names"),
    [
        ("gopro", {"paired": 6, "blur": 6, "sharp": 6}, ["gopro"]),
        ("realblur", {"paired": 6, "blur": 4, "sharp": 4}, ["realblur"]),
        ("kernel_synth", {"paired": 6, "blur": 3, "sharp": 3}, ["kernel_synth"]),
        ("urb", {"paired": 6, "blur": 4, "sharp": 4}, ["gopro", "urb"]),
        ("folders", {"paired": 3, "blur": 3, "sharp": 3}, ["folders"]),
    ],
)
def test_data_choice_builds_its_sets_from_the_paths_config(tree, tmp_path, monkeypatch, choice, train_sizes, val_names):
    root, _ = tree
    monkeypatch.setenv("NEURMAP_DATA", str(root))
    overrides = ["data.num_workers=0", "data.paired.transform.crop_size=32", "data.batch_size_paired=3"]
    cfg = compose([f"data={choice}", *overrides, "data.batch_size_unpaired=3"], tmp_path / "run")
    dm = instantiate_datamodule(cfg)
    dm.setup()
    assert {k: len(v) for k, v in dm.train_sets.items()} == train_sizes
    assert dm.val_names == val_names and dm.test_names == val_names
    assert dm.train_sets["blur"].keys == ["blur"] and dm.train_sets["sharp"].keys == ["sharp"]
    batch = next(iter(dm.train_dataloader()))[0]
    assert batch["blur"]["blur"].shape == batch["sharp"]["sharp"].shape == (3, 3, 32, 32)
    for name in val_names:
        sample = dm.val_sets[name][0]
        assert sample["blur"].shape == (3, *fake_data.SIZE)  # whole images, never resized


def test_a_missing_root_is_reported_when_the_config_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURMAP_DATA", str(tmp_path / "nothing_here"))
    cfg = compose(["data=realblur"], tmp_path / "run")
    with pytest.raises(Exception, match=r"GOPRO_Large/train does not exist; expected the GoPro layout"):
        instantiate_datamodule(cfg)


def test_one_paths_key_moves_one_root(tree, tmp_path, monkeypatch):
    root, roots = tree
    monkeypatch.setenv("NEURMAP_DATA", str(tmp_path / "elsewhere"))
    moved = [f"paths.gopro={roots['gopro']}", f"paths.realblur={roots['realblur']}"]
    cfg = compose(["data=realblur", "data.unpaired_blur.records.subset=R", *moved], tmp_path / "run")
    assert cfg.data.test.realblur.records.subset == "R"
    dm = instantiate_datamodule(cfg)
    dm.setup("test")
    assert "RealBlur-R" in str(dm.test_sets["realblur"].records[0]["blur"])


def test_jpeg_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with EXIF orientation 6 (rotate 90° clockwise) comes out portrait."""
    import struct

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    ok, jpeg = cv2.imencode(".jpg", pixels)
    assert ok
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"Exif\x00\x00" + tiff
    data = jpeg.tobytes()
    (tmp_path / "phone.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    x = read_image(tmp_path / "phone.jpg")
    assert x.shape == (3, 40, 20)
    assert float(x[:, :20].mean()) > 0.9 and float(x[:, 20:].mean()) < 0.1  # the white half is now on top
