"""Colormaps, colour bar, normals to RGB, error maps and mosaics."""
import matplotlib
import numpy as np
import pytest
import torch

from pager.export import colorize_depth, depth_colorbar, depth_range, error_map, mosaic, normals_to_rgb


def _cmap_rgb(name, x):
    return (np.asarray(matplotlib.colormaps[name](x))[..., :3] * 255).round().astype(int)


def test_colorize_depth_shapes_ends_and_invalid_pixels():
    depth = np.tile(np.linspace(1.0, 10.0, 32, dtype=np.float32), (8, 1))
    depth[0, 0] = np.nan
    mask = np.ones_like(depth, bool)
    mask[1, 1] = False
    img = colorize_depth(depth, mask, percentile=100)
    assert img.shape == (8, 32, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, 0], [128, 128, 128])
    np.testing.assert_array_equal(img[1, 1], [128, 128, 128])
    # nearest -> low end of Spectral (red), farthest -> high end (blue)
    assert np.abs(img[2, 0].astype(int) - _cmap_rgb("Spectral", 0.0)).max() <= 1
    assert np.abs(img[2, -1].astype(int) - _cmap_rgb("Spectral", 1.0)).max() <= 1
    assert img[2, 0, 0] > img[2, 0, 2] and img[2, -1, 2] > img[2, -1, 0]
    # batched tensor input, custom invalid colour
    batch = torch.from_numpy(np.stack([depth, depth * 2]))
    out = colorize_depth(batch, torch.from_numpy(np.stack([mask, mask])), invalid_color=(0, 0, 0))
    assert out.shape == (2, 8, 32, 3)
    np.testing.assert_array_equal(out[1, 1, 1], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 2:], out[1, 2:])  # per-image range: scaling the depth changes nothing


def test_percentile_clips_outliers_and_inverse_keeps_order():
    depth = np.ones((10, 10), np.float32)
    depth[:, 5:] = 2.0
    depth[0, 0] = 1000.0  # an outlier beyond the 99th percentile
    vmin, vmax = depth_range(depth, percentile=95)
    assert vmin == 1.0 and vmax == 2.0
    img = colorize_depth(depth, percentile=95)
    np.testing.assert_array_equal(img[0, 0], img[5, 9])  # clipped to the top colour
    inv = colorize_depth(np.tile(np.linspace(1, 5, 16, dtype=np.float32), (4, 1)), inverse=True, percentile=100)
    assert np.abs(inv[0, 0].astype(int) - _cmap_rgb("Spectral", 0.0)).max() <= 1
    # disparity colouring: the middle depth (3 m) is past the middle of the colormap (1/3 -> 0.833)
    mid = colorize_depth(np.array([[1.0, 3.0, 5.0]] * 2, np.float32), inverse=True, percentile=100)[0, 1]
    assert np.abs(mid.astype(int) - _cmap_rgb("Spectral", (1 - 1 / 3) / (1 - 1 / 5))).max() <= 2


def test_colorbar_appended_with_metre_ticks():
    depth = np.tile(np.linspace(0.5, 20.0, 128, dtype=np.float32), (64, 1))
    img = colorize_depth(depth, colorbar=True)
    assert img.shape[0] == 64 and img.shape[1] > 128
    vmin, vmax = depth_range(depth)
    assert vmin == 0.5 and 19.5 < vmax < 20.0
    bar = depth_colorbar(vmin, vmax, height=64)
    assert bar.dtype == np.uint8 and bar.shape[0] == 64
    np.testing.assert_array_equal(img[:, 128:], bar)
    # the bar's ramp: red near the bottom, blue near the top, and dark tick labels exist
    col = bar[:, bar.shape[1] // 7]
    assert col[-10, 0] > col[-10, 2] and col[10, 2] > col[10, 0]
    assert (bar.min(-1) < 60).sum() > 20
    with pytest.raises(ValueError):
        depth_colorbar(5.0, 1.0, height=64)


def test_normals_to_rgb_formula_and_layouts():
    n = np.zeros((3, 2, 3), np.float32)
    n[:, 0, 0] = [1, 0, 0]
    n[:, 0, 1] = [0, 1, 0]
    n[:, 0, 2] = [0, 0, -1]
    n[:, 1, 0] = [np.nan, 0, 0]
    n[:, 1, 1] = [0.6, -0.8, 0]
    rgb = normals_to_rgb(n)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [255, 128, 128])
    np.testing.assert_array_equal(rgb[0, 1], [128, 255, 128])
    np.testing.assert_array_equal(rgb[0, 2], [128, 128, 0])
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 0])  # non-finite -> invalid colour
    np.testing.assert_array_equal(rgb[1, 2], [0, 0, 0])  # zero vector -> invalid
    np.testing.assert_array_equal(rgb[1, 1], np.rint((np.array([0.6, -0.8, 0]) + 1) / 2 * 255))
    np.testing.assert_array_equal(normals_to_rgb(np.moveaxis(n, 0, -1)), rgb)  # channels-last
    batch = normals_to_rgb(torch.from_numpy(np.stack([n, n])).half())
    assert batch.shape == (2, 2, 3, 3)
    with pytest.raises(ValueError, match="3 channels"):
        normals_to_rgb(np.zeros((4, 5, 6)))


def test_error_map_is_signed_and_symmetric():
    gt = np.full((4, 4), 2.0, np.float32)
    pred = gt.copy()
    pred[0, 0] = 3.0  # over-estimate
    pred[0, 1] = 1.0  # under-estimate
    mask = np.ones_like(gt, bool)
    mask[3, 3] = False
    img = error_map(pred, gt, mask, vmax=1.0)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, 0], _cmap_rgb("RdBu_r", 1.0))  # red
    np.testing.assert_array_equal(img[0, 1], _cmap_rgb("RdBu_r", 0.0))  # blue
    assert np.abs(img[1, 1].astype(int) - _cmap_rgb("RdBu_r", 0.5)).max() <= 1  # zero error: centre
    np.testing.assert_array_equal(img[3, 3], [128, 128, 128])
    rel = error_map(pred, gt, relative=True, vmax=0.5)
    np.testing.assert_array_equal(rel[0, 0], _cmap_rgb("RdBu_r", 1.0))


def test_mosaic_concatenates_and_resizes():
    a = np.zeros((10, 20, 3), np.uint8)
    b = np.full((5, 10), 200, np.uint8)  # grayscale, half the height -> resized to 10 x 20
    m = mosaic([a, b], gap=2)
    assert m.shape == (10, 42, 3) and m.dtype == np.uint8
    assert (m[:, 20:22] == 255).all() and (m[:, 22:] == 200).all() and (m[:, :20] == 0).all()
    assert mosaic([a, a], vertical=True).shape == (20, 20, 3)
    with pytest.raises(ValueError, match="uint8"):
        mosaic([a.astype(np.float32)])
