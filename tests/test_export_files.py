"""16-bit depth PNG, npz and image files."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from pager.export import load_depth_png16, load_npz, save_depth_png16, save_image, save_npz


def test_depth_png16_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.1, 60.0, size=(16, 32)).astype(np.float32)
    depth[0, 0] = np.nan
    mask = np.ones_like(depth, bool)
    mask[1, 1] = False
    path = save_depth_png16(tmp_path / "d.png", torch.from_numpy(depth), mask=mask)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
        raw = np.asarray(img).astype(np.int64)
    assert raw[0, 0] == 0 and raw[1, 1] == 0
    assert raw[2, 2] == round(depth[2, 2] * 1000)  # documented default: millimetres
    back = load_depth_png16(path)
    assert np.isnan(back[0, 0]) and np.isnan(back[1, 1])
    ok = ~np.isnan(back)
    assert np.abs(back[ok] - depth[ok]).max() <= 0.5 / 1000 + 1e-6
    # custom scale is stored in the file and used when loading
    save_depth_png16(tmp_path / "e.png", depth, scale=500.0)
    np.testing.assert_allclose(load_depth_png16(tmp_path / "e.png")[ok], depth[ok], atol=1 / 1000 + 1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "e.png"]  # no temp files


def test_depth_png16_clips_and_warns_on_overflow(tmp_path, caplog):
    depth = np.array([[1.0, 70.0], [np.inf, 0.0001]], np.float32)
    with caplog.at_level(logging.WARNING, logger="pager.export.files"):
        save_depth_png16(tmp_path / "d.png", depth)
    assert "2 pixel(s)" in caplog.text and "clipped" in caplog.text
    back = load_depth_png16(tmp_path / "d.png")
    np.testing.assert_allclose(back[0], [1.0, 65.535], atol=1e-4)
    assert back[1, 0] == pytest.approx(65.535)
    assert back[1, 1] == pytest.approx(0.001)  # tiny valid depth does not become the invalid 0
    with pytest.raises(ValueError, match="negative"):
        save_depth_png16(tmp_path / "n.png", -depth)
    with pytest.raises(ValueError, match=r"\.png"):
        save_depth_png16(tmp_path / "n.jpg", depth)
    with pytest.raises(FileNotFoundError):
        load_depth_png16(tmp_path / "missing.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="16-bit"):
        load_depth_png16(tmp_path / "rgb.png")


def test_npz_round_trip(tmp_path):
    depth = torch.rand(4, 8)
    normals = np.random.default_rng(1).normal(size=(3, 4, 8)).astype(np.float32)
    path = save_npz(tmp_path / "pred.npz", arr_0=depth, normals=normals, mask=np.ones((4, 8), bool))
    data = load_npz(path)
    assert set(data) == {"arr_0", "normals", "mask"}
    np.testing.assert_array_equal(data["arr_0"], depth.numpy())
    np.testing.assert_array_equal(data["normals"], normals)
    assert data["mask"].dtype == np.bool_
    # np.load reads it too (compatibility with the reference's eval files)
    assert np.load(path)["arr_0"].shape == (4, 8)
    with pytest.raises(ValueError, match="nothing"):
        save_npz(tmp_path / "empty.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_npz(tmp_path / "bad.npz")


def test_save_image_png_and_jpg(tmp_path):
    img = (np.arange(8 * 16 * 3) % 256).astype(np.uint8).reshape(8, 16, 3)
    save_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    save_image(tmp_path / "a.jpg", np.full((8, 16, 3), 100, np.uint8))
    assert np.abs(np.asarray(Image.open(tmp_path / "a.jpg")).astype(int) - 100).max() <= 2
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "f.png", img.astype(np.float32))
    with pytest.raises(ValueError, match="suffix"):
        save_image(tmp_path / "f.xyz", img)


@pytest.mark.parametrize("max_depth, scale", [(10.0, 1000.0), (65.535, 1000.0), (65.536, 500.0), (75.0, 500.0),
                                              (131.07, 500.0), (131.08, 200.0), (1000.0, 50.0), (65535.0, 1.0),
                                              (131070.0, 0.5)])
def test_depth_png_scale_is_the_finest_that_holds_the_range(max_depth, scale):
    from pager.export import depth_png_scale

    assert depth_png_scale(max_depth) == scale
    assert max_depth * depth_png_scale(max_depth) <= 65535.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_depth_png_scale_refuses_a_range_that_is_not_positive(bad):
    from pager.export import depth_png_scale

    with pytest.raises(ValueError, match="max_depth must be a positive finite number"):
        depth_png_scale(bad)


@pytest.mark.parametrize("metric", [False, True])
def test_predict_writes_the_whole_depth_range_by_default(tmp_path, caplog, metric):
    """``pager predict``'s writer with no ``--depth_scale``: depths up to the checkpoint's ``max_depth`` (75) are kept
    (a fixed 1000 steps per unit clipped everything above 65.535); the PNG names its scale and unit."""
    from PIL import Image

    from pager.cli.predict import write_outputs

    depth = np.linspace(0.5, 74.9, 32 * 64, dtype=np.float32).reshape(32, 64)
    result = {"depth": depth, "depth_mask": np.ones_like(depth, bool), "normals": None, "normals_mask": None,
              "rgb": np.zeros((32, 64, 3), np.uint8)}
    meta = {"metric_depth": metric, "min_depth": 0.1, "max_depth": 75.0}
    with caplog.at_level("WARNING"):
        write_outputs("pano", tmp_path, result, meta)
    assert "clipped" not in caplog.text
    path = tmp_path / "pano_depth16.png"
    np.testing.assert_allclose(load_depth_png16(path), depth, atol=0.5 / 500 + 1e-5)
    with Image.open(path) as im:
        assert float(im.text["pager:depth_scale"]) == 500.0
        assert im.text["pager:depth_unit"] == ("metres" if metric else "relative")
    write_outputs("mm", tmp_path, result, dict(meta, max_depth=20.0), depth_scale=None)  # a range that fits mm
    with Image.open(tmp_path / "mm_depth16.png") as im:
        assert float(im.text["pager:depth_scale"]) == 1000.0


@pytest.mark.parametrize("writer", ["depth_png16", "ply"])
@pytest.mark.parametrize("depth_unit,stored", [("m", "metres"), ("relative", "relative")])
def test_writers_take_the_pipeline_depth_unit(tmp_path, writer, depth_unit, stored):
    """``PagerOutput.metadata[k]['depth_unit']`` ('m' or 'relative') passed on as ``unit=`` ends in the file as the
    writers spell it: the PNG's ``pager:depth_unit`` chunk, the PLY's ``comment depth_unit`` line."""
    from PIL import Image

    from pager.export import erp_point_cloud, save_depth_png16, save_point_cloud

    depth = np.full((8, 16), 2.0, np.float32)
    if writer == "depth_png16":
        save_depth_png16(tmp_path / "d.png", depth, unit=depth_unit)
        assert Image.open(tmp_path / "d.png").info["pager:depth_unit"] == stored
    else:
        save_point_cloud(tmp_path / "c.ply", erp_point_cloud(depth, unit=depth_unit, remove_flying_pixels=False))
        header = (tmp_path / "c.ply").read_bytes().split(b"end_header")[0].decode()
        assert f"comment depth_unit {stored}\n" in header
