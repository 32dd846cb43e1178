"""Video metrics (pager.evaluation.temporal) on hand-made sequences with known answers."""
import math

import numpy as np
import pytest
import torch

from pager.evaluation.temporal import flicker, frame_depth_metrics, sequence_flicker
from pager.geometry.warp import yaw_pose
from tests.test_geometry_warp import rays_np, sphere_depth

H, W = 24, 48


def sphere_sequence(n=5, radius=6.0):
    """A camera translating and turning inside a sphere: true depth and poses (analytic)."""
    rays = rays_np(H, W)
    centers = [(0.3 * i, 0.05 * i, -0.2 * i) for i in range(n)]
    yaws = [0.1 * i for i in range(n)]
    depth = torch.from_numpy(np.stack([sphere_depth(c, y, radius, rays) for c, y in zip(centers, yaws)]))
    poses = torch.stack([yaw_pose(y, c) for c, y in zip(centers, yaws)])
    return depth, poses


def test_static_camera_and_identical_predictions_give_zero():
    gen = torch.Generator().manual_seed(0)
    gt = 1.0 + 4.0 * torch.rand(1, H, W, dtype=torch.float64, generator=gen).expand(4, H, W)
    pred = 0.5 + torch.rand(1, H, W, dtype=torch.float64, generator=gen).expand(4, H, W)  # wrong, but constant
    poses = yaw_pose(0.0).expand(4, 4, 4)
    out = sequence_flicker(pred, gt, poses)
    assert out["flicker"].shape == (3,)
    assert torch.allclose(out["flicker"], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out["covisible"], torch.ones(3, dtype=torch.float64))


def test_consistent_prediction_of_a_moving_camera_is_flicker_free():
    gt, poses = sphere_sequence()
    out = sequence_flicker(3.7 * gt, gt, poses)  # right up to one fixed scale
    # bilinear interpolation of a smooth depth map on a 7.5 degree grid: small residual only
    assert float(out["flicker"].max()) < 2e-3
    assert float(out["covisible"].min()) > 0.9


@pytest.mark.parametrize("k", [1.25, 0.8])
def test_one_scaled_frame_flickers_by_log_k(k):
    gt, poses = sphere_sequence()
    pred = gt.clone()
    pred[2] *= k
    f = sequence_flicker(pred, gt, poses)["flicker"]
    expected = torch.tensor([0.0, abs(math.log(k)), abs(math.log(k)), 0.0], dtype=torch.float64)
    assert torch.allclose(f, expected, atol=2e-3)


def test_yaw_rotation_with_rolled_predictions_is_exact():
    gen = torch.Generator().manual_seed(1)
    base = 1.0 + 4.0 * torch.rand(H, W, dtype=torch.float64, generator=gen)
    k = 3
    gt = torch.stack([torch.roll(base, i * k, dims=-1) for i in range(3)])
    poses = torch.stack([yaw_pose(2 * math.pi * k * i / W) for i in range(3)])
    assert torch.allclose(sequence_flicker(2.0 * gt, gt, poses)["flicker"], torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # a per-pixel error that does not move with the scene flickers
    noisy = gt * torch.exp(0.1 * torch.randn(3, H, W, dtype=torch.float64, generator=gen))
    assert float(sequence_flicker(noisy, gt, poses)["flicker"].min()) > 0.05


def test_invalid_prediction_pixels_are_left_out():
    gt, poses = sphere_sequence(3)
    pred = gt.clone()
    pred[1, :, : W // 2] = 50.0  # garbage where the prediction says it is invalid
    pmask = torch.ones_like(gt, dtype=torch.bool)
    pmask[1, :, : W // 2] = False
    out = flicker(pred[:-1], pred[1:], gt[:-1], gt[1:],
                  torch.linalg.inv(poses[:-1]) @ poses[1:], pred_mask_src=pmask[:-1], pred_mask_tgt=pmask[1:])
    assert float(out["flicker"].max()) < 2e-3
    assert float(out["covisible"].max()) < 0.6


def test_per_frame_and_sequence_alignment():
    gt, _ = sphere_sequence(3)
    scales = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64).view(3, 1, 1)
    per = frame_depth_metrics(gt * scales, gt, scope="per_frame")
    assert torch.allclose(per["abs_rel"], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    seq = frame_depth_metrics(gt * scales, gt, scope="sequence")
    # one scale for all: the geometric mean of (1, 2, 0.5) is 1, so frames 2 and 3 are off by 2x / 0.5x
    assert torch.allclose(seq["abs_rel"], torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(frame_depth_metrics(gt * 3.0, gt, scope="sequence")["abs_rel"], torch.zeros(3, dtype=torch.float64), atol=1e-12)
