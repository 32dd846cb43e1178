"""Every dataset reader against a tiny fixture written in the dataset's exact on-disk format."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from pager.data import DATASETS, build_dataset
from pager.data.readers._io import read_dpt
from tests.fixtures_data import (
    DPT_TAG,
    make_matterport3d360,
    make_panoinfinigen_lmdb,
    make_plain,
    make_replica360_4k,
    make_scannetpp,
    make_stanford2d3ds,
    make_structured3d,
    write_dpt,
    write_png,
)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1)


def check_sample(sample, truth, tol, min_depth=0.01, max_depth=75.0, rgb_tol=1e-6):
    """Metres, masks and normals of one sample against the fixture's truth."""
    depth = sample["depth"][0].numpy()
    assert sample["depth"].shape == (1, *truth.depth.shape) and sample["depth"].dtype == torch.float32
    assert sample["rgb"].shape == (3, *truth.depth.shape) and sample["rgb"].dtype == torch.float32
    np.testing.assert_allclose(depth, truth.depth, atol=1e-6, rtol=1e-6)
    known = truth.depth > 0
    # independent check against the analytic scene (quantisation of the format only)
    assert np.abs(depth[known] - truth.analytic[known]).max() <= tol
    expected_mask = known & (truth.depth > 1.01 * min_depth) & (truth.depth < 0.99 * max_depth)
    if truth.valid is not None:
        expected_mask &= truth.valid
    np.testing.assert_array_equal(sample["mask"][0].numpy(), expected_mask)
    assert sample["mask"].dtype == torch.bool
    if rgb_tol is not None and truth.rgb is not None:
        expected_rgb = truth.rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        assert np.abs(sample["rgb"].numpy() - expected_rgb).max() <= rgb_tol + 1e-6
    assert sample["min_depth"] == min_depth and sample["max_depth"] == max_depth
    if truth.normals is not None:
        n = sample["normals"].numpy().transpose(1, 2, 0)
        assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
        assert _cos(n, truth.normals).min() > 0.9995


def test_registry_names():
    assert set(DATASETS) == {
        "PanoInfinigen", "Matterport3D360", "Stanford2D3DS", "ScannetPP", "Structured3D", "Replica360_4K", "Synthetic",
        "Images",
    }
    with pytest.raises(ValueError, match="unknown dataset 'Nope'"):
        build_dataset("Nope", "/tmp", "test")


def test_dpt_format_bytes(tmp_path):
    depth = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.25
    path = write_dpt(tmp_path / "d.dpt", depth)
    data = path.read_bytes()
    # hand-built header: tag, width 3, height 2
    assert data[:12] == struct.pack("<fii", 202021.25, 3, 2) and len(data) == 12 + 24
    np.testing.assert_array_equal(read_dpt(path), depth)
    bad = tmp_path / "bad.dpt"
    bad.write_bytes(struct.pack("<fii", 1.0, 3, 2) + depth.tobytes())
    with pytest.raises(ValueError, match="bad.dpt"):
        read_dpt(bad)
    short = tmp_path / "short.dpt"
    short.write_bytes(struct.pack("<fii", DPT_TAG, 3, 2) + depth.tobytes()[:-4])
    with pytest.raises(ValueError, match="short.dpt"):
        read_dpt(short)
    with pytest.raises(FileNotFoundError, match="missing.dpt"):
        read_dpt(tmp_path / "missing.dpt")


def test_matterport3d360(tmp_path):
    truth = make_matterport3d360(tmp_path, height=16)
    for split in ("train", "val", "test"):
        ds = build_dataset("Matterport3D360", tmp_path, split)
        assert sorted(r.id for r in ds.records) == sorted(truth[split])
        for i in range(len(ds)):
            s = ds[i]
            check_sample(s, truth[split][s["id"]], tol=1e-6)
            assert s["scene_type"] == "indoor" and s["dataset"] == "Matterport3D360"
            assert "normals" not in s
            # 14 % band: int(0.14 * 16) = 2 rows at top and bottom
            em = s["eval_mask"][0].numpy()
            assert not em[:2].any() and not em[-2:].any()
            np.testing.assert_array_equal(em[2:-2], s["mask"][0].numpy()[2:-2])
    s = build_dataset("Matterport3D360", tmp_path, "train")[0]
    assert s["id"] == "sceneA__sceneAkey00"
    # NaN, +inf, -1 and 0 are unknown: depth 0, mask False
    assert (s["depth"][0, 1, 1:5] == 0).all() and not s["mask"][0, 1, 1:5].any()


def test_matterport3d360_native_size_not_hardcoded(tmp_path):
    truth = make_matterport3d360(tmp_path, height=20, scenes={"test": ["s"]}, views=1)
    s = build_dataset("Matterport3D360", tmp_path, "test")[0]
    assert s["depth"].shape == (1, 20, 40)
    # int(0.14 * 20) = 2 rows
    assert s["eval_mask"][0, :2].sum() == 0 and s["eval_mask"][0, 2].sum() == s["mask"][0, 2].sum()
    check_sample(s, truth["test"]["s__skey00"], tol=1e-6)


def test_stanford2d3ds(tmp_path):
    truth = make_stanford2d3ds(tmp_path, height=20)["all"]
    ds = build_dataset("Stanford2D3DS", tmp_path, "test")
    assert sorted(r.id for r in ds.records) == sorted(truth)
    for i in range(len(ds)):
        s = ds[i]
        check_sample(s, truth[s["id"]], tol=0.5 / 512 + 1e-6)
        assert s["depth"][0, 0, 0] == 0 and not s["mask"][0, 0, 0]  # 65535 = missing
        em = s["eval_mask"][0]
        assert not em[:3].any() and not em[-3:].any() and bool(em[3:-3].any())  # int(0.15 * 20) = 3
    # a value of 1024 steps is exactly 2 m
    (tmp_path / "S2").mkdir()
    depth = np.full((8, 16), 1024, np.uint16)
    write_png(tmp_path / "S2" / "Stanford2D3DS" / "area_3" / "pano" / "depth" / "x_depth.png", depth)
    write_png(tmp_path / "S2" / "Stanford2D3DS" / "area_3" / "pano" / "rgb" / "x_rgb.png", np.zeros((8, 16, 3), np.uint8))
    s = build_dataset("Stanford2D3DS", tmp_path / "S2", "test")[0]
    assert torch.all(s["depth"] == 2.0) and s["id"] == "area_3__pano__x"


def test_stanford2d3ds_split_file(tmp_path):
    truth = make_stanford2d3ds(tmp_path, height=16)["all"]
    (tmp_path / "Stanford2D3DS" / "test.txt").write_text("area_5a\n")
    ds = build_dataset("Stanford2D3DS", tmp_path, "test")
    assert sorted(r.id for r in ds.records) == sorted(k for k in truth if k.startswith("area_5a"))
    assert len(build_dataset("Stanford2D3DS", tmp_path, "train")) == len(truth)


@pytest.mark.parametrize("normal_name", ["normal.png", "normals.png"])
def test_structured3d(tmp_path, normal_name):
    truth = make_structured3d(tmp_path, height=16, normal_name=normal_name)
    for split in ("train", "val", "test"):
        ds = build_dataset("Structured3D", tmp_path, split)
        assert sorted(r.id for r in ds.records) == sorted(truth[split])
        for i in range(len(ds)):
            s = ds[i]
            check_sample(s, truth[split][s["id"]], tol=0.0005 + 1e-6)
            assert torch.equal(s["eval_mask"], s["mask"])


def test_structured3d_normal_decoding_hand_value(tmp_path):
    """v = (128, 255, 0) decodes to (0, 127/128, -1) / |.| in the left-handed frame, z negated in ours."""
    full = tmp_path / "Structured3D" / "scene_03250" / "2D_rendering" / "7" / "panorama" / "full"
    write_png(full / "rgb_rawlight.png", np.zeros((4, 8, 3), np.uint8))
    write_png(full / "depth.png", np.full((4, 8), 1500, np.uint16))
    img = np.zeros((4, 8, 3), np.uint8)
    img[...] = (128, 255, 0)
    write_png(full / "normal.png", img)
    s = build_dataset("Structured3D", tmp_path, "test")[0]
    expected = np.array([0.0, 127 / 128, 1.0]) / np.linalg.norm([0.0, 127 / 128, 1.0])
    np.testing.assert_allclose(s["normals"][:, 0, 0].numpy(), expected, atol=1e-6)
    assert torch.all(s["depth"] == 1.5) and s["id"] == "scene_03250__7"


def test_replica360_4k(tmp_path):
    truth = make_replica360_4k(tmp_path, height=16)["all"]
    ds = build_dataset("Replica360_4K", tmp_path, "test")
    assert sorted(r.id for r in ds.records) == sorted(truth)
    for i in range(len(ds)):
        s = ds[i]
        check_sample(s, truth[s["id"]], tol=1e-6, rgb_tol=0.1)  # JPEG
        assert not s["mask"][0, 8, :8].any()  # the mask file's hole


def test_scannetpp(tmp_path):
    truth = make_scannetpp(tmp_path, height=16)
    for split in ("train", "val"):
        ds = build_dataset("ScannetPP", tmp_path, split)
        assert sorted(r.id for r in ds.records) == sorted(truth[split])
        for i in range(len(ds)):
            s = ds[i]
            check_sample(s, truth[split][s["id"]], tol=0.0005 + 1e-6, rgb_tol=0.1)
            assert not s["mask"][0, 0, :3].any()
    # test reads the val scenes (no public test ground truth), as the reference does
    assert [r.id for r in build_dataset("ScannetPP", tmp_path, "test").records] == \
        [r.id for r in build_dataset("ScannetPP", tmp_path, "val").records]


def test_panoinfinigen_lmdb(tmp_path):
    truth = make_panoinfinigen_lmdb(tmp_path, height=16)
    both = build_dataset("PanoInfinigen", tmp_path, "train", scenes="both")
    assert sorted(r.id for r in both.records) == sorted(truth["train"])
    assert (both.min_depth, both.max_depth) == (0.01, 75.0)
    for i in range(len(both)):
        s = both[i]
        t = truth["train"][s["id"]]
        assert s["scene_type"] == t.scene_type
        check_sample(s, t, tol=1e-6, max_depth=75.0)
        if t.scene_type == "outdoor":
            assert not s["mask"][0, 0].any() and float(s["depth"][0, 0, 0]) == 1000.0  # raw, not clipped
    indoor = build_dataset("PanoInfinigen", tmp_path, "train", scenes="indoor")
    assert (indoor.min_depth, indoor.max_depth) == (0.01, 15.0)
    assert all(r.scene_type == "indoor" for r in indoor.records) and len(indoor) == 3
    s = indoor[0]
    check_sample(s, truth["train"][s["id"]], tol=1e-6, max_depth=15.0)
    outdoor = build_dataset("PanoInfinigen", tmp_path, "val", scenes="outdoor")
    assert [r.id for r in outdoor.records] == ["outdoor__outdoor_scene_w__0000", "outdoor__outdoor_scene_w__0001"]


def test_panoinfinigen_missing_key_names_shard(tmp_path):
    import lmdb

    make_panoinfinigen_lmdb(tmp_path, height=8)
    shard = tmp_path / "PanoInfinigen" / "indoor" / "train" / "shard_00001.lmdb"
    env = lmdb.open(str(shard))
    with env.begin(write=True) as txn:
        txn.delete(b"indoor_scene_b/0000#normal")
    env.close()
    ds = build_dataset("PanoInfinigen", tmp_path, "train", scenes="indoor")
    idx = [r.id for r in ds.records].index("indoor__indoor_scene_b__0000")
    with pytest.raises(ValueError, match=r"PanoInfinigen.*shard_00001\.lmdb.*indoor_scene_b/0000#normal"):
        ds[idx]


@pytest.mark.parametrize("name,fmt", [("Synthetic", "png8"), ("Synthetic", "npy"), ("Synthetic", "png16"), ("PanoInfinigen", "png8")])
def test_plain_layout(tmp_path, name, fmt):
    truth = make_plain(tmp_path, name=name, height=16, normals_format=fmt)
    for split in ("train", "val"):
        ds = build_dataset(name, tmp_path, split)
        assert sorted(r.id for r in ds.records) == sorted(truth[split])
        for i in range(len(ds)):
            s = ds[i]
            t = truth[split][s["id"]]
            assert s["scene_type"] == t.scene_type
            check_sample(s, t, tol=0.0005 + 1e-6)
            if fmt != "png8":  # 16-bit PNG / float: far finer than 8-bit quantisation
                n = s["normals"].numpy().transpose(1, 2, 0)
                assert _cos(n, t.normals).min() > 1 - 1e-7
    ind = build_dataset(name, tmp_path, "test", scenes="indoor")
    assert len(ind) == 1 and ind.max_depth == 15.0
    with pytest.raises(ValueError, match=r"empty.*outdoor/test"):
        build_dataset(name, tmp_path, "test", scenes="outdoor")
