"""Shared PanoramaDataset behaviour: splits, bad data, roll augmentation, resizing, targets, DataLoader."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pager.data import build_dataset
from pager.data.dataset import roll_sample, tiny_subset
from tests.fixtures_data import (
    box_room,
    make_matterport3d360,
    make_panoinfinigen_lmdb,
    make_plain,
    make_structured3d,
    write_png,
)


# ----------------------------------------------------------------------------------------------
# splits and subsets
# ----------------------------------------------------------------------------------------------

def test_tiny_subset_even_and_fixed():
    assert tiny_subset(5, 16) == [0, 1, 2, 3, 4]
    assert tiny_subset(100, 5) == [0, 25, 50, 74, 99]  # round(i * 99 / 4)
    assert tiny_subset(31, 16) == list(range(0, 31, 2))


def test_tiny_val_and_debug(tmp_path):
    make_plain(tmp_path, height=8, layout={("indoor", "val"): [(f"r{i:02d}", 2) for i in range(20)]})
    val = build_dataset("Synthetic", tmp_path, "val")
    tiny = build_dataset("Synthetic", tmp_path, "tiny_val")
    assert len(val) == 40 and len(tiny) == 16
    all_ids = [r.id for r in val.records]
    assert [r.id for r in tiny.records] == [all_ids[i] for i in tiny_subset(40, 16)]
    assert [r.id for r in build_dataset("Synthetic", tmp_path, "tiny_val").records] == [r.id for r in tiny.records]
    dbg = build_dataset("Synthetic", tmp_path, "val", debug=True, debug_size=5)
    assert [r.id for r in dbg.records] == all_ids[:5]
    assert len(build_dataset("Synthetic", tmp_path, "tiny_val", tiny_val_size=4)) == 4


def test_bad_arguments(tmp_path):
    make_structured3d(tmp_path, height=8, scenes={"train": [1]}, rooms=1)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build_dataset("Structured3D", tmp_path, "dev")
    with pytest.raises(ValueError, match="only indoor"):
        build_dataset("Structured3D", tmp_path, "train", scenes="outdoor")
    with pytest.raises(FileNotFoundError, match="Matterport3D360"):
        build_dataset("Matterport3D360", tmp_path, "test")


def test_empty_split_names_folder(tmp_path):
    make_structured3d(tmp_path, height=8, scenes={"train": [1]}, rooms=1)
    with pytest.raises(ValueError, match=r"Structured3D.*'val'.*empty.*scene_03000\.\.scene_03249"):
        build_dataset("Structured3D", tmp_path, "val")
    make_matterport3d360(tmp_path, height=8, scenes={"test": ["s"]}, views=1)
    with pytest.raises(FileNotFoundError, match=r"scenes_val\.txt"):
        build_dataset("Matterport3D360", tmp_path, "val")


def test_ids_are_unique_and_filesystem_safe(tmp_path):
    truth = make_panoinfinigen_lmdb(tmp_path, height=8, layout={("indoor", "test"): [(0, "a/b", 2)]})
    ds = build_dataset("PanoInfinigen", tmp_path, "test")
    ids = [ds[i]["id"] for i in range(len(ds))]
    assert ids == ["indoor__a_b__0000", "indoor__a_b__0001"] and all("/" not in i for i in ids)
    assert len(truth["test"]) == 2


# ----------------------------------------------------------------------------------------------
# bad data
# ----------------------------------------------------------------------------------------------

def test_missing_file_error_names_path_and_dataset(tmp_path):
    make_matterport3d360(tmp_path, height=8, scenes={"test": ["s"]}, views=2)
    victim = next((tmp_path / "Matterport3D360").rglob("skey01_depth.dpt"))
    victim.unlink()
    ds = build_dataset("Matterport3D360", tmp_path, "test")
    assert len(ds) == 2  # listed, not silently dropped
    with pytest.raises(FileNotFoundError, match=r"Matterport3D360.*skey01_depth\.dpt"):
        ds[1]


def test_unreadable_file_error_names_path(tmp_path):
    make_matterport3d360(tmp_path, height=8, scenes={"test": ["s"]}, views=1)
    rgb = next((tmp_path / "Matterport3D360").rglob("*_rgb.png"))
    rgb.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Matterport3D360.*skey00_rgb\.png"):
        build_dataset("Matterport3D360", tmp_path, "test")[0]


def test_size_mismatch_is_an_error(tmp_path):
    make_structured3d(tmp_path, height=8, scenes={"test": [3300]}, rooms=1)
    rgb = next((tmp_path / "Structured3D").rglob("rgb_rawlight.png"))
    write_png(rgb, np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"RGB size \(4, 8\) differs from depth size \(8, 16\).*rgb_rawlight\.png"):
        build_dataset("Structured3D", tmp_path, "test")[0]


def test_skip_bad_samples_counts_and_returns_real_samples(tmp_path, caplog):
    truth = make_matterport3d360(tmp_path, height=8, scenes={"test": ["s"]}, views=4)["test"]
    root = tmp_path / "Matterport3D360"
    next(root.rglob("skey01_rgb.png")).write_bytes(b"garbage")  # undecodable: found at read time
    next(root.rglob("skey03_depth.dpt")).unlink()  # missing: found at listing time
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("Matterport3D360", tmp_path, "test", skip_bad_samples=True)
    assert len(ds) == 3 and ds.skipped == 1 and "skey03_depth.dpt" in caplog.text
    s = ds[1]  # the garbage one: the next sample is returned instead
    assert ds.skipped == 2 and s["id"] == "s__skey02"
    np.testing.assert_allclose(s["depth"][0].numpy(), truth["s__skey02"].depth, atol=1e-6)
    assert [ds[i]["id"] for i in range(3)] == ["s__skey00", "s__skey02", "s__skey02"]
    assert ds.skipped == 2  # a known bad index is not counted twice
    with pytest.raises(FileNotFoundError):
        build_dataset("Matterport3D360", tmp_path, "test")[3]


# ----------------------------------------------------------------------------------------------
# roll augmentation and normals
# ----------------------------------------------------------------------------------------------

def _depth_to_normals(depth: torch.Tensor) -> torch.Tensor:
    """Independent test helper: ERP depth [1, H, W] -> normals [3, H, W] in our frame, facing the camera."""
    _, h, w = depth.shape
    theta = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 * math.pi - math.pi
    phi = math.pi / 2 - (torch.arange(h, dtype=torch.float64) + 0.5) / h * math.pi
    t, p = torch.meshgrid(theta, phi, indexing="xy")
    ray = torch.stack([torch.cos(p) * torch.cos(t), torch.sin(p), torch.cos(p) * torch.sin(t)])
    pts = depth.double() * ray
    d_col = torch.roll(pts, -1, -1) - torch.roll(pts, 1, -1)
    d_row = torch.cat([pts[:, 1:2] - pts[:, :1], pts[:, 2:] - pts[:, :-2], pts[:, -1:] - pts[:, -2:-1]], 1)
    n = torch.cross(d_col, d_row, dim=0)
    n = n / n.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return torch.where((n * pts).sum(0, keepdim=True) > 0, -n, n).float()


def _flat_interior(normals: torch.Tensor) -> torch.Tensor:
    """Pixels whose 4 neighbours (longitude wraps) have the same normal: central differences are exact there."""
    same = torch.ones(normals.shape[1:], dtype=torch.bool)
    for shift, dim in ((1, -1), (-1, -1)):
        same &= (torch.roll(normals, shift, dim) - normals).abs().amax(0) < 1e-6
    up = torch.cat([normals[:, :1], normals[:, :-1]], 1)
    down = torch.cat([normals[:, 1:], normals[:, -1:]], 1)
    same &= ((up - normals).abs().amax(0) < 1e-6) & ((down - normals).abs().amax(0) < 1e-6)
    same[0] = same[-1] = False
    return same


def test_rotate_normals_matches_rotated_box():
    """Rolling a box room by s columns equals the same box turned by yaw 2*pi*s/W (analytic)."""
    h, w, s = 16, 32, 5
    depth, normals = box_room(h, w)
    depth2, normals2 = box_room(h, w, yaw=2 * math.pi * s / w)
    rolled = roll_sample({"depth": torch.from_numpy(depth)[None], "normals": torch.from_numpy(normals).permute(2, 0, 1)}, s)
    np.testing.assert_allclose(rolled["depth"][0].numpy(), depth2, atol=1e-5)
    np.testing.assert_allclose(rolled["normals"].numpy(), normals2.transpose(2, 0, 1), atol=1e-5)
    # pure rotation: a quarter turn maps forward (x) to right (z)
    n = torch.zeros(3, 1, 4)
    n[0] = 1
    np.testing.assert_allclose(roll_sample({"normals": n}, 1)["normals"][:, 0, 0].numpy(), [0, 0, 1], atol=1e-6)


def test_roll_augmentation_keeps_depth_normals_consistent(tmp_path):
    make_plain(tmp_path, height=16, normals_format="npy", with_mask=False,
               layout={("indoor", "train"): [("room", 3)]})
    ds = build_dataset("Synthetic", tmp_path, "train", augment=True)
    plain = build_dataset("Synthetic", tmp_path, "train")
    torch.manual_seed(3)
    shifts = set()
    from pager.geometry import depth_to_normals

    helpers = [_depth_to_normals, lambda d: depth_to_normals(d[None])[0]]  # ours (independent) and the library's
    for i in range(len(ds)):
        aug, ref = ds[i], plain[i]
        # find the roll that was applied and check every tensor moved by it
        shift = next(s for s in range(32) if torch.equal(torch.roll(ref["depth"], s, -1), aug["depth"]))
        shifts.add(shift)
        assert torch.equal(torch.roll(ref["rgb"], shift, -1), aug["rgb"])
        assert torch.equal(torch.roll(ref["mask"], shift, -1), aug["mask"])
        # same-face neighbourhood, all 4 neighbours with known depth
        interior = _flat_interior(aug["normals"]) & _flat_interior(aug["mask"].float().expand(3, -1, -1)) & aug["mask"][0]
        assert interior.sum() > 100
        for helper in helpers:
            derived = helper(aug["depth"])
            cos = (derived * aug["normals"]).sum(0)[interior]
            assert cos.min() > 0.999, (i, shift, float(cos.min()))
    assert len(shifts - {0}) >= 1


# ----------------------------------------------------------------------------------------------
# resizing, targets, cubemaps
# ----------------------------------------------------------------------------------------------

def test_resize_to_height(tmp_path):
    truth = make_structured3d(tmp_path, height=16, scenes={"test": [3260]}, rooms=1)["test"]
    s = build_dataset("Structured3D", tmp_path, "test", height=8)[0]
    t = truth[s["id"]]
    assert s["rgb"].shape == (3, 8, 16) and s["depth"].shape == (1, 8, 16) and s["normals"].shape == (3, 8, 16)
    # area: each output pixel is the mean of a 2x2 block of the input
    rgb = t.rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1
    block = rgb.reshape(3, 8, 2, 16, 2).mean((2, 4))
    np.testing.assert_allclose(s["rgb"].numpy(), block, atol=1e-5)
    # nearest: every output depth is one of the input depths of its block
    blocks = t.depth.reshape(8, 2, 16, 2).transpose(0, 2, 1, 3).reshape(8, 16, 4)
    assert np.all(np.abs(blocks - s["depth"][0].numpy()[..., None]).min(-1) < 1e-6)
    assert torch.allclose(s["normals"].norm(dim=0), torch.ones(8, 16), atol=1e-5)
    up = build_dataset("Structured3D", tmp_path, "test", height=32)[0]
    assert up["rgb"].shape == (3, 32, 64) and up["mask"].dtype == torch.bool


def test_target_encoding_and_cubemap(tmp_path):
    from pager.geometry.depth_encoding import encode_depth

    make_panoinfinigen_lmdb(tmp_path, height=16, layout={("indoor", "test"): [(0, "a", 1)]})
    ds = build_dataset("PanoInfinigen", tmp_path, "test", scenes="indoor", target_encoding="log", return_cubemap=True)
    s = ds[0]
    assert ds.max_depth == 15.0
    torch.testing.assert_close(s["depth_target"], encode_depth(s["depth"], 0.01, 15.0, log_scale=True))
    d = float(s["depth"][0, 8, 3])
    expected = 2 * (math.log(d) - math.log(0.01)) / (math.log(15.0) - math.log(0.01)) - 1
    assert abs(float(s["depth_target"][0, 8, 3]) - expected) < 1e-5
    assert s["rgb_cubemap"].shape == (6, 3, 12, 12) and s["depth_cubemap"].shape == (6, 1, 12, 12)
    assert s["mask_cubemap"].dtype == torch.bool and s["normals_cubemap"].shape == (6, 3, 12, 12)
    # the front face centre looks along +x: the front wall of the box, 3 m away
    assert abs(float(s["depth_cubemap"][0, 0, 5:7, 5:7].mean()) - 3.0) < 0.05
    aff = build_dataset("PanoInfinigen", tmp_path, "test", target_encoding="affine")[0]
    assert float(aff["depth_target"].min()) == -1.0 and float(aff["depth_target"].max()) == 1.0


# ----------------------------------------------------------------------------------------------
# DataLoader
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["PanoInfinigen", "Synthetic"])
def test_dataloader_two_workers(tmp_path, name):
    if name == "PanoInfinigen":
        make_panoinfinigen_lmdb(tmp_path, height=8)
    else:
        make_plain(tmp_path, height=8)
    ds = build_dataset(name, tmp_path, "train", augment=True)
    ds[0]  # the parent touched the data before the workers fork
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    ids, n = [], 0
    for batch in loader:
        assert batch["rgb"].shape[1:] == (3, 8, 16) and batch["depth"].shape[1:] == (1, 8, 16)
        assert batch["normals"].shape[1:] == (3, 8, 16) and batch["mask"].dtype == torch.bool
        ids += list(batch["id"])
        n += batch["rgb"].shape[0]
    assert n == len(ds) and sorted(ids) == sorted(r.id for r in ds.records)


def _float_rgb_through(entry: str, tmp_path, values: np.ndarray):
    """Read a float image ``values`` [H, W, 3] the way ``entry`` does: the Images dataset (inference's RGB-only
    samples, from a grey float TIFF of channel 0) or ``rgb_to_tensor`` (every dataset sample with ground truth)."""
    from pager.data.dataset import rgb_to_tensor

    if entry == "rgb_to_tensor":
        return rgb_to_tensor(values, what="rgb of s")
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    Image.fromarray(values[:, :, 0].astype(np.float32), mode="F").save(folder / "pano.tiff")
    return build_dataset("Images", folder, "test")[0]["rgb"]


@pytest.mark.parametrize("entry", ["images_dataset", "rgb_to_tensor"])
def test_dataset_float_rgb_outside_unit_range_is_refused_not_clipped(tmp_path, entry):
    """A float RGB with values beyond [0, 1] (a float TIFF, HDR) is a bad sample naming what it is (as
    ``pager predict`` refuses it), never clipped silently; NaN too; in-range values map to [-1, 1] linearly."""
    from pager.data.dataset import BadSampleError

    x = np.full((8, 16, 3), 0.25, np.float32)
    x[0, 0] = 3.0
    with pytest.raises(BadSampleError, match=r"span \[0\.25, 3\], outside \[0, 1\]"):
        _float_rgb_through(entry, tmp_path, x)
    x[0, 0] = np.nan
    with pytest.raises(BadSampleError, match="NaN"):
        _float_rgb_through(entry, tmp_path, x)
    x[0, 0] = 1.0
    out = _float_rgb_through(entry, tmp_path, x)
    assert out.shape == (3, 8, 16)
    assert float(out[0, 0, 0]) == 1.0 and torch.allclose(out[:, 1:], torch.full_like(out[:, 1:], -0.5))
