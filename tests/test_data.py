"""Built-in data: dead leaves, motion flows, datasets, transforms, DataModule, conf/data/builtin.yaml."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from omegaconf import OmegaConf

from neurmap.config import instantiate_datamodule
from neurmap.data.datamodule import EpochSampler, NeurMAPDataModule
from neurmap.data.transforms import PairedTransform, SingleTransform
from neurmap.synth.builtin import (
    BuiltinPaired,
    BuiltinTest,
    BuiltinUnpairedBlur,
    BuiltinUnpairedSharp,
    sample_rng,
)
from neurmap.synth.flows import apply_blur, camera_flow, canonicalize_flow, uniform_linear_flow
from neurmap.synth.procedural import dead_leaves, power_law
from tests.conftest import CONF

SIZE = 24  # tiny images keep every dataset below a few ms
CAMERA = {"tx_max": 3.0, "ty_max": 3.0, "rot_max": 0.05, "tz_max": 0.01, "center_shift_max": 2.0}


def _all_pairs_differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if no image of stack ``a`` equals any image of stack ``b``."""
    dist = (a.flatten(1)[:, None] - b.flatten(1)[None]).abs().amax(-1)
    return bool((dist > 1e-3).all())


def _stack(ds, key: str) -> torch.Tensor:
    return torch.stack([ds[i][key] for i in range(len(ds))])


# ---------------------------------------------------------------- dead leaves
def test_dead_leaves_shape_range_and_determinism():
    img = dead_leaves((20, 31), np.random.default_rng(3))
    assert img.shape == (20, 31, 3) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert np.array_equal(img, dead_leaves((20, 31), np.random.default_rng(3)))
    assert not np.allclose(img, dead_leaves((20, 31), np.random.default_rng(4)))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # many shapes, shaded, not a flat fill


def test_power_law_matches_its_cdf():
    lo, hi, a = 2.0, 40.0, 3.0
    r = power_law(np.random.default_rng(0), 20000, lo, hi, a)
    assert r.min() >= lo and r.max() <= hi
    for q in (3.0, 6.0, 15.0):  # analytic CDF of r^-3 on [lo, hi]
        cdf = (lo**-2 - q**-2) / (lo**-2 - hi**-2)
        assert abs((r <= q).mean() - cdf) < 0.015


def test_dead_leaves_has_a_natural_1_over_f_spectrum():
    slopes = []
    for seed in range(2):
        g = dead_leaves(128, np.random.default_rng(seed)).mean(-1)
        amp = np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean())))
        yy, xx = np.mgrid[-64:64, -64:64]
        radius = np.hypot(yy, xx).astype(int).ravel()
        profile = np.bincount(radius, amp.ravel()) / np.bincount(radius)
        k = np.arange(3, 50)
        slopes.append(np.polyfit(np.log(k), np.log(profile[k]), 1)[0])
    assert -1.6 < np.mean(slopes) < -0.6  # natural images: amplitude ~ 1/f


def test_dead_leaves_rejects_bad_radii():
    with pytest.raises(ValueError, match="r_min"):
        dead_leaves(16, np.random.default_rng(0), r_min=5.0, r_max=2.0)


# ---------------------------------------------------------------------- flows
def test_uniform_linear_flow_is_constant_with_length_in_range():
    for seed in range(10):
        flow = uniform_linear_flow((12, 17), np.random.default_rng(seed), length_range=(3.0, 7.0))
        assert flow.shape == (2, 12, 17) and flow.dtype == np.float32
        assert np.all(flow == flow[:, :1, :1])
        assert 3.0 - 1e-5 <= np.hypot(*flow[:, 0, 0]) <= 7.0 + 1e-5
        assert flow[0, 0, 0] >= 0  # angle in [0, pi): vertical component never negative


def test_camera_flow_with_only_tx_is_a_constant_horizontal_flow():
    off = {"ty_max": 0.0, "acc_max": 0.0, "rot_max": 0.0, "center_shift_max": 0.0, "tz_max": 0.0}
    flows = [camera_flow((10, 14), np.random.default_rng(s), tx_max=5.0, **off) for s in range(5)]
    for flow in flows:
        assert np.all(flow[0] == 0)
        assert np.all(flow[1] == flow[1, 0, 0]) and abs(flow[1, 0, 0]) <= 5.0
    assert len({float(f[1, 0, 0]) for f in flows}) == 5  # tx is random


def test_camera_flow_acceleration_ramps_across_columns():
    off = {"ty_max": 0.0, "rot_max": 0.0, "center_shift_max": 0.0, "tz_max": 0.0}
    flow = camera_flow((6, 9), np.random.default_rng(1), tx_max=5.0, acc_max=0.5, **off)
    assert np.allclose(flow[1], flow[1, :1])  # no change down a column
    diffs = np.diff(flow[1, 0])
    assert np.allclose(diffs, diffs[0], atol=1e-5) and abs(diffs[0]) > 0  # linear, non-constant
    assert np.isclose(flow[1, 0].mean(), (flow[1, 0, 0] + flow[1, 0, -1]) / 2, atol=1e-5)


def test_camera_rotation_is_tangential_and_zoom_radial():
    h, w = 21, 31
    oy, ox = np.mgrid[0:h, 0:w] - np.array([(h - 1) / 2, (w - 1) / 2])[:, None, None]
    r = np.hypot(oy, ox)
    base = {"tx_max": 0.0, "ty_max": 0.0, "acc_max": 0.0, "center_shift_max": 0.0}
    rot = camera_flow((h, w), np.random.default_rng(0), rot_max=0.1, tz_max=0.0, **base)
    assert np.allclose(rot[0] * oy + rot[1] * ox, 0, atol=1e-4)  # perpendicular to the radius
    mag = np.hypot(rot[0], rot[1])
    assert np.allclose(mag, mag.max() / r.max() * r, atol=1e-4) and mag.max() <= math.tan(0.1) * r.max() + 1e-4
    zoom = camera_flow((h, w), np.random.default_rng(0), rot_max=0.0, tz_max=0.01, **base)
    assert np.allclose(zoom[0] * ox - zoom[1] * oy, 0, atol=1e-4)  # parallel to the radius
    ratio = np.hypot(zoom[0], zoom[1])[r > 0] / r[r > 0] ** 1.5
    assert np.allclose(ratio, ratio[0], atol=1e-6) and ratio[0] <= 0.01


def test_canonicalize_flow_tensor_and_array():
    flow = torch.tensor([[[1.0, -2.0]], [[-3.0, 4.0]]])  # (2, 1, 2)
    out = canonicalize_flow(flow)
    assert torch.equal(out, torch.tensor([[[-1.0, -2.0]], [[3.0, 4.0]]]))
    assert np.array_equal(canonicalize_flow(flow.numpy()), out.numpy())


def test_apply_blur_zero_flow_is_identity():
    sharp = torch.rand(3, 9, 11)
    assert torch.allclose(apply_blur(sharp, torch.zeros(2, 9, 11), alpha=40.0), sharp, atol=1e-6)


def test_apply_blur_axes_and_extent():
    sharp = torch.zeros(3, 9, 21)
    sharp[:, :, 10] = 1.0  # a vertical line
    horizontal = apply_blur(sharp, torch.tensor([0.0, 6.0])[:, None, None].expand(2, 9, 21).clone())
    assert torch.allclose(horizontal, horizontal[:, :1].expand_as(horizontal))  # every row the same
    row = horizontal[0, 0]
    assert row[7:14].min() > 0.05 and row[:6].max() == 0 and row[15:].max() == 0  # spread +-3 px
    assert torch.isclose(row.sum(), torch.tensor(1.0), atol=1e-4)  # mass kept
    vertical = apply_blur(sharp, torch.tensor([6.0, 0.0])[:, None, None].expand(2, 9, 21).clone())
    assert torch.allclose(vertical, sharp, atol=1e-6)  # blurring along the line changes nothing


# ------------------------------------------------------------------- datasets
def test_dataset_keys_dtypes_and_ranges():
    sets = {
        "paired": (BuiltinPaired(3, SIZE, 0), {"blur", "sharp", "motion", "name"}),
        "blur": (BuiltinUnpairedBlur(3, SIZE, 0, camera=CAMERA), {"blur", "name"}),
        "sharp": (BuiltinUnpairedSharp(3, (SIZE, SIZE + 4), 0), {"sharp", "name"}),
        "test": (BuiltinTest(3, SIZE, 0, camera=CAMERA), {"blur", "sharp", "motion", "name"}),
    }
    for ds, keys in sets.values():
        assert len(ds) == 3
        sample = ds[1]
        assert set(sample) == keys and isinstance(sample["name"], str)
        for key in keys & {"blur", "sharp"}:
            img = sample[key]
            assert img.dtype == torch.float32 and img.shape[0] == 3 and img.min() >= 0 and img.max() <= 1
        if "motion" in keys:
            assert sample["motion"].dtype == torch.float32 and sample["motion"].shape == (2, SIZE, SIZE)
    assert sets["sharp"][0][0]["sharp"].shape == (3, SIZE, SIZE + 4)
    assert len({sets["paired"][0][i]["name"] for i in range(3)}) == 3
    with pytest.raises(IndexError):
        sets["paired"][0][3]


def test_paired_blur_is_a_uniform_linear_blur_of_the_sharp_image():
    ds = BuiltinPaired(2, SIZE, 0, blur_length=(4.0, 6.0))
    for i in range(2):
        s = ds[i]
        assert (s["blur"] - s["sharp"]).abs().mean() > 0.01  # actually blurred
        rng = sample_rng(0, "paired", i)  # the documented draw order: image, then flow
        assert torch.equal(torch.from_numpy(dead_leaves((SIZE, SIZE), rng)).permute(2, 0, 1), s["sharp"])
        flow = torch.from_numpy(uniform_linear_flow((SIZE, SIZE), rng, (4.0, 6.0)))
        assert torch.allclose(apply_blur(s["sharp"], flow), s["blur"], atol=1e-6)


def test_same_seed_identical_other_seed_or_set_different():
    a, b = BuiltinTest(4, SIZE, 7, camera=CAMERA), BuiltinTest(4, SIZE, 7, camera=CAMERA)
    for key in ("blur", "sharp", "motion"):
        assert torch.equal(_stack(a, key), _stack(b, key))
    other_seed = BuiltinTest(4, SIZE, 8, camera=CAMERA)
    val = BuiltinTest(4, SIZE, 7, camera=CAMERA, split="val")
    paired = BuiltinPaired(4, SIZE, 7)
    sharp = BuiltinUnpairedSharp(4, SIZE, 7)
    stacks = [_stack(d, "sharp") for d in (a, other_seed, val, paired, sharp)]
    for i in range(len(stacks)):
        for j in range(i + 1, len(stacks)):
            assert _all_pairs_differ(stacks[i], stacks[j]), (i, j)
    # image i does not depend on the set size
    assert torch.equal(_stack(BuiltinPaired(2, SIZE, 7), "blur"), _stack(paired, "blur")[:2])


def test_test_motion_is_canonical_and_explains_the_blur():
    ds = BuiltinTest(3, SIZE, 0, camera=CAMERA)
    for i in range(3):
        s = ds[i]
        assert (s["motion"][1] >= 0).all()
        assert s["motion"].abs().max() > 0.5  # a real flow, not zeros
        assert torch.allclose(apply_blur(s["sharp"], s["motion"]), s["blur"], atol=1e-5)


def test_unpaired_sets_share_no_image():
    n = 4
    blur_set = BuiltinUnpairedBlur(n, SIZE, 0, camera=CAMERA)
    sharp_set = BuiltinUnpairedSharp(n, SIZE, 0)
    sources = []
    for i in range(n):  # rebuild the hidden sources the way the docs say they are drawn
        rng = sample_rng(0, "unpaired_blur", i)
        src = torch.from_numpy(dead_leaves((SIZE, SIZE), rng)).permute(2, 0, 1)
        flow = torch.from_numpy(camera_flow((SIZE, SIZE), rng, **CAMERA))
        assert torch.allclose(apply_blur(src, flow), blur_set[i]["blur"], atol=1e-6)  # it IS the source
        sources.append(src)
    assert _all_pairs_differ(torch.stack(sources), _stack(sharp_set, "sharp"))
    assert "sharp" not in blur_set[0] and "blur" not in sharp_set[0]


def test_dataset_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="leaves.*r_mni"):
        BuiltinPaired(2, SIZE, 0, leaves={"r_mni": 1.0})
    with pytest.raises(ValueError, match="camera.*tx"):
        BuiltinTest(2, SIZE, 0, camera={"tx": 1.0})
    with pytest.raises(ValueError, match="split"):
        BuiltinTest(2, SIZE, 0, split="train")
    with pytest.raises(ValueError, match="num_images"):
        BuiltinUnpairedSharp(0, SIZE, 0)


# ----------------------------------------------------------------- transforms
def _coords(h: int, w: int) -> torch.Tensor:
    """(3, h, w) image whose channels are row / h, column / w and a constant."""
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) / h
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) / w
    return torch.stack([rows, cols, torch.full((h, w), 0.5)])


def test_paired_transform_same_crop_and_flip():
    torch.manual_seed(0)
    img = _coords(20, 24)
    t = PairedTransform(crop_size=8, hflip=True, vflip=True)
    seen_h, seen_v, corners = set(), set(), set()
    for _ in range(30):
        out = t({"blur": img, "sharp": 1 - img, "name": "x"})
        assert out["blur"].shape == out["sharp"].shape == (3, 8, 8) and out["name"] == "x"
        assert torch.allclose(out["blur"], 1 - out["sharp"])  # same window, same flips
        col_step = out["blur"][1, 0, 1] - out["blur"][1, 0, 0]
        row_step = out["blur"][0, 1, 0] - out["blur"][0, 0, 0]
        seen_h.add(bool(col_step < 0))
        seen_v.add(bool(row_step < 0))
        corners.add((round(float(out["blur"][0].min()) * 20), round(float(out["blur"][1].min()) * 24)))
    assert seen_h == {False, True} and seen_v == {False, True} and len(corners) > 5


def test_transforms_reproducible_from_torch_seed_and_independent_per_call():
    img = _coords(20, 20)
    t = SingleTransform(crop_size=6, hflip=False)
    torch.manual_seed(1)
    first = [t({"blur": img, "name": "a"})["blur"] for _ in range(5)]
    torch.manual_seed(1)
    again = [t({"blur": img, "name": "a"})["blur"] for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    blur_out = t({"blur": img, "name": "a"})["blur"]
    sharp_crops = [t({"sharp": img, "name": "b"})["sharp"] for _ in range(5)]
    assert any(not torch.equal(blur_out, s) for s in sharp_crops)  # each sample draws its own crop


def test_small_images_are_reflect_padded_with_one_warning():
    t = SingleTransform(crop_size=8, hflip=False)
    img = _coords(5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = t({"sharp": img, "name": "s"})["sharp"]
        t({"sharp": img, "name": "s"})
    assert sum("smaller than crop_size" in str(w.message) for w in caught) == 1
    assert out.shape == (3, 8, 8)
    # reflection, not constant padding: the padded image holds exactly the values of the original rows
    assert set(torch.unique(out[0]).tolist()) == set(torch.unique(img[0]).tolist())


def test_tiny_images_are_padded_to_the_crop():
    out = SingleTransform(crop_size=16, hflip=False)({"blur": _coords(3, 1), "name": "t"})["blur"]
    assert out.shape == (3, 16, 16) and set(torch.unique(out[0]).tolist()) <= set(
        torch.unique(_coords(3, 1)[0]).tolist()
    )


def test_degradation_touches_only_the_blurry_image_and_is_off_at_p_0():
    from neurmap.data.transforms import Degradation

    img = _coords(24, 24)
    off = PairedTransform(8, degrade=Degradation((0.0, 0.02), (60, 95), p=0.0))
    torch.manual_seed(3)
    plain = PairedTransform(8)({"blur": img, "sharp": img})
    torch.manual_seed(3)
    assert torch.equal(off({"blur": img, "sharp": img})["blur"], plain["blur"])
    on = PairedTransform(8, degrade=Degradation((0.05, 0.05), (30, 30), p=1.0))
    torch.manual_seed(3)
    out = on({"blur": img, "sharp": img})
    torch.manual_seed(3)
    again = on({"blur": img, "sharp": img})
    assert torch.equal(out["sharp"], plain["sharp"])  # same crop, sharp side untouched
    assert (out["blur"] - plain["blur"]).abs().mean() > 0.01 and torch.equal(out["blur"], again["blur"])
    assert out["blur"].dtype == torch.float32 and out["blur"].min() >= 0 and out["blur"].max() <= 1


def test_transform_rejects_wrong_samples():
    with pytest.raises(ValueError, match=r"sample\['motion'\] must be a \(2, H, W\) tensor"):
        PairedTransform(8)({"blur": _coords(9, 9), "sharp": _coords(9, 9), "motion": torch.zeros(2, 8, 9)})
    with pytest.raises(ValueError, match="PairedTransform expects 2"):
        PairedTransform(8)({"blur": _coords(9, 9)})
    with pytest.raises(ValueError, match="SingleTransform expects 1"):
        SingleTransform(8)({"blur": _coords(9, 9), "sharp": _coords(9, 9)})


# ----------------------------------------------------------------- datamodule
def _dm(n: int = 8, **kwargs) -> NeurMAPDataModule:
    args = {
        "paired": lambda: BuiltinPaired(n, SIZE, 0),
        "unpaired_blur": lambda: BuiltinUnpairedBlur(n, SIZE, 0, camera=CAMERA),
        "unpaired_sharp": lambda: BuiltinUnpairedSharp(n, SIZE, 0),
        "val": {
            "a": lambda: BuiltinTest(3, SIZE, 0, camera=CAMERA, split="val"),
            "b": lambda: BuiltinTest(2, SIZE, 0, camera=CAMERA),
        },
        "test": {"t": lambda: BuiltinTest(2, SIZE, 0, camera=CAMERA)},
        "batch_size_paired": 2,
        "batch_size_unpaired": 2,
    }
    return NeurMAPDataModule(**(args | kwargs))


@pytest.mark.parametrize(
    ("use_paired", "use_unpaired", "keys"),
    [(True, True, {"paired", "blur", "sharp"}), (True, False, {"paired"}), (False, True, {"blur", "sharp"})],
)
def test_combined_loader_keys_follow_the_switches(use_paired, use_unpaired, keys):
    dm = _dm(use_paired=use_paired, use_unpaired=use_unpaired)
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch, _, _ = next(iter(loader))
    assert set(batch) == keys
    for key in keys:
        field = "sharp" if key == "sharp" else "blur"
        assert batch[key][field].shape == (2, 3, SIZE, SIZE)


def test_misconfigurations_raise_clear_errors():
    with pytest.raises(ValueError, match="use_paired and use_unpaired"):
        _dm(use_paired=False, use_unpaired=False)
    with pytest.raises(ValueError, match="data.paired is missing"):
        _dm(paired=None)
    with pytest.raises(ValueError, match="data.unpaired_sharp is missing"):
        _dm(unpaired_sharp=None)
    _dm(paired=None, use_paired=False)  # not needed -> fine
    with pytest.raises(ValueError, match="data.unpaired_blur gives 3 images.*batch_size_unpaired=4"):
        _dm(n=3, batch_size_unpaired=4, batch_size_paired=1).train_dataloader()


def test_unpaired_loaders_are_shuffled_independently():
    dm = _dm(n=8)
    dm.setup("fit")
    orders = {k: [i for i, _ in dm.train_sampler(k)] for k in ("paired", "blur", "sharp")}
    assert sorted(orders["blur"]) == sorted(orders["sharp"]) == list(range(8))
    assert orders["blur"] != orders["sharp"] and orders["paired"] != orders["blur"]
    # through the real loaders: blurry image i does not meet sharp image i
    loader = dm.train_dataloader()
    pairs = [(b["blur"]["name"], b["sharp"]["name"]) for b, _, _ in loader]
    blur_idx = [int(n[-5:]) for names, _ in pairs for n in names]
    sharp_idx = [int(n[-5:]) for _, names in pairs for n in names]
    assert len(blur_idx) == 8 and blur_idx != sharp_idx
    # the same seed gives the same orders; another seed other orders
    assert [i for i, _ in _dm_setup(seed=0).train_sampler("blur")] == orders["blur"]
    assert [i for i, _ in _dm_setup(seed=5).train_sampler("blur")] != orders["blur"]


def _dm_setup(**kwargs) -> NeurMAPDataModule:
    dm = _dm(**kwargs)
    dm.setup("fit")
    return dm


def test_distributed_samplers_have_their_own_seeds():
    orders = {}
    for rank in (0, 1):
        dm = _dm_setup()
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        for key in ("blur", "sharp"):
            sampler = dm.train_sampler(key)
            assert isinstance(sampler, EpochSampler) and len(sampler) == 4
            orders[rank, key] = [i for i, _ in sampler]
    assert orders[0, "blur"] != orders[0, "sharp"]
    assert not set(orders[0, "blur"]) & set(orders[1, "blur"])  # ranks split the set
    assert sorted(orders[0, "blur"] + orders[1, "blur"]) == list(range(8))


def test_epoch_sampler_passes_offsets_and_sample_seeds():
    sampler = EpochSampler(10, seed=3)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10)) and list(sampler) == first  # a pure function
    sampler.set_position(1, 0)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first] and {s for _, s in second}.isdisjoint(s for _, s in first)
    sampler.set_position(1, 4)
    assert list(sampler) == second[4:]  # resuming mid-pass continues exactly
    shards = [list(EpochSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 3 for s in shards) and len({i for s in shards for i, _ in s}) == 9


def test_resumable_loader_maps_the_training_position_to_its_pass():
    dm = _dm(n=8, batch_size_paired=2, batch_size_unpaired=4)  # paired: 4 batches, blur/sharp: 2 batches
    dm.setup("fit")
    loaders = dm.train_dataloader().iterables
    assert [loaders[k].epoch_batches for k in ("paired", "blur")] == [4, 4]
    blur = loaders["blur"]
    blur.load_state_dict({"epoch": 3, "batches": 3})  # 2 passes per epoch: pass 3*2 + 1, 1 batch in
    assert blur._next == (7, 1)
    blur.load_state_dict({"epoch": 3, "batches": 4})  # saved at the epoch's end: epoch 4 starts afresh
    assert blur._next == (8, 0)
    dm.trainer = None
    assert blur.state_dict() == {"epoch": 0, "batches": 0}


def test_augmentations_follow_the_data_position_not_the_global_rng():
    def crops(seed: int) -> list[torch.Tensor]:
        blur = lambda: BuiltinUnpairedBlur(8, SIZE, 0, camera=CAMERA, transform=SingleTransform(crop_size=8))  # noqa: E731
        dm = _dm_setup(unpaired_blur=blur, seed=seed)
        return [b["blur"]["blur"] for b, _, _ in dm.train_dataloader()]

    torch.manual_seed(0)
    first = crops(seed=0)
    torch.manual_seed(123)  # whatever ran before must not change the crops
    assert all(torch.equal(a, b) for a, b in zip(first, crops(seed=0)))
    assert not all(torch.equal(a, b) for a, b in zip(first, crops(seed=1)))  # the data seed does


def test_eval_loaders_follow_names_without_shuffle_and_setup_is_idempotent():
    calls = {"paired": 0, "a": 0}

    def counted(key, make):
        def factory():
            calls[key] += 1
            return make()

        return factory

    dm = _dm(
        paired=counted("paired", lambda: BuiltinPaired(4, SIZE, 0)),
        val={
            "b": lambda: BuiltinTest(2, SIZE, 0, camera=CAMERA),
            "a": counted("a", lambda: BuiltinTest(3, SIZE, 0, camera=CAMERA, split="val")),
        },
    )
    assert dm.val_names == ["b", "a"] and dm.test_names == ["t"]
    dm.setup("fit")
    dm.setup("fit")
    dm.train_dataloader()
    loaders = dm.val_dataloader()
    dm.val_dataloader()
    assert calls == {"paired": 1, "a": 1}
    assert [len(dl.dataset) for dl in loaders] == [2, 3]
    names = [n for batch in loaders[1] for n in batch["name"]]
    assert names == [f"builtin_val_{i:05d}" for i in range(3)]
    assert loaders[1].batch_size == 1 and set(next(iter(loaders[1]))) == {"blur", "sharp", "motion", "name"}
    assert [len(dl.dataset) for dl in dm.test_dataloader()] == [2]


# --------------------------------------------------------------------- config
def _builtin_cfg(paired: bool = True, unpaired: bool = True):
    root = {"seed": 0, "variant": {"paired": paired, "unpaired": unpaired}}
    return OmegaConf.merge(root, {"data": OmegaConf.load(CONF / "data" / "builtin.yaml")})


def test_builtin_yaml_shape():
    cfg = _builtin_cfg()
    data = cfg.data
    factories = [
        data.paired,
        data.unpaired_blur,
        data.unpaired_sharp,
        *data.val.values(),
        *data.test.values(),
    ]
    assert all(f._partial_ is True for f in factories)
    assert list(data.val) == list(data.test) == ["builtin_camera"]
    assert data.val.builtin_camera.split == "val" and data.test.builtin_camera.split == "test"
    cfg.data.paired.leaves.r_min = 3.0  # shared by interpolation
    assert cfg.data.unpaired_sharp.leaves.r_min == 3.0 and cfg.data.test.builtin_camera.leaves.r_min == 3.0


def test_default_builtin_config_builds():
    dm = instantiate_datamodule(_builtin_cfg())
    dm.setup(None)
    assert len(dm.train_sets["paired"]) == 256 and len(dm.test_sets["builtin_camera"]) == 32
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert batch["paired"]["blur"].shape == (4, 3, 64, 64) and batch["sharp"]["sharp"].shape == (4, 3, 64, 64)
    assert torch.equal(batch["paired"]["blur"].isnan(), torch.zeros_like(batch["paired"]["blur"], dtype=bool))
    val = dm.val_dataloader()[0].dataset[0]
    assert val["blur"].shape == (3, 96, 96) and (val["motion"][1] >= 0).all()


def test_builtin_config_without_paired_data():
    cfg = _builtin_cfg(paired=False)
    cfg.data.unpaired_blur.num_images = cfg.data.unpaired_sharp.num_images = 8
    dm = instantiate_datamodule(cfg)
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"blur", "sharp"}


@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True), (True, True)])
def test_paired_transform_keeps_motion_consistent_with_the_blur(hflip, vflip):
    """After crop and flips the motion still explains the blur: re-blurring the augmented sharp image with the
    augmented motion gives the augmented blurry image (interior, away from crop borders). A flip that moved
    the field but not its vectors would blur diagonal edges along the mirrored direction and fail this."""
    data = BuiltinPaired(6, 48, 3, blur_length=(8.0, 12.0))
    transform = PairedTransform(32, hflip=hflip, vflip=vflip)
    torch.manual_seed(0)
    checked = 0
    for i in range(len(data)):
        sample = data[i]
        out = transform(sample)
        assert out["motion"].shape == (2, 32, 32) and (out["motion"][1] >= 0).all()
        m = out["motion"][:, 0, 0]
        if abs(float(m[0])) < 2 or abs(float(m[1])) < 2:
            continue  # near-axis blur: mirrored and true directions coincide, nothing to tell apart
        reblurred = apply_blur(out["sharp"], out["motion"])
        inner = (slice(None), slice(8, -8), slice(8, -8))
        assert torch.allclose(reblurred[inner], out["blur"][inner], atol=2e-3)
        flipped = out["motion"].clone()
        flipped[0] = -flipped[0]  # the wrong (mirrored) direction really is distinguishable
        assert not torch.allclose(apply_blur(out["sharp"], flipped)[inner], out["blur"][inner], atol=2e-3)
        checked += 1
    assert checked >= 2
