"""ERP reprojection between camera poses (pager.geometry.warp) on analytic cases and rendered truth."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from pager.data.synthetic import render
from pager.data.synthetic.scene import Material, Room, Scene
from pager.geometry.warp import erp_reproject, erp_sample, relative_pose, reproject_visibility, yaw_pose


def rays_np(h, w):
    """Pixel rays from the documented formula (numpy, independent of pager.geometry)."""
    theta = 2 * np.pi * (np.arange(w) + 0.5) / w - np.pi
    phi = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    th, ph = np.meshgrid(theta, phi)
    return np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)])  # [3, H, W]


def sphere_depth(center, yaw, radius, rays_cam):
    """Range from a camera at ``center`` (turned by ``yaw``) to a sphere of ``radius`` around the origin,
    along camera rays [3, ...]: solve |c + t d| = R with d the world ray (yaw rotation of scene.py)."""
    c, s = math.cos(yaw), math.sin(yaw)
    x, y, z = rays_cam
    d = np.stack([c * x + s * z, y, -s * x + c * z])
    o = np.asarray(center, float).reshape(3, *([1] * (d.ndim - 1)))
    b = (o * d).sum(0)
    return -b + np.sqrt(b * b - (o * o).sum(0) + radius * radius)


def test_relative_pose_inverts_rigid_transforms():
    a = yaw_pose(0.7, (1.0, 0.2, -0.5))
    b = yaw_pose(-1.1, (0.3, 0.1, 2.0))
    rel = relative_pose(a, b)[0]
    expected = torch.linalg.inv(a) @ b
    assert torch.allclose(rel, expected, atol=1e-12)
    assert torch.allclose(relative_pose(a, a)[0], torch.eye(4, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, -7, 24])
def test_pure_yaw_is_a_column_roll(k):
    h, w = 12, 24
    gen = torch.Generator().manual_seed(k + 100)
    src = 1.0 + 3.0 * torch.rand(1, h, w, dtype=torch.float64, generator=gen)
    alpha = 2 * math.pi * k / w
    tgt = torch.roll(src, k, dims=-1)  # the documented effect of turning the camera by +alpha
    rel = relative_pose(yaw_pose(0.3), yaw_pose(0.3 + alpha))
    theta, phi, rng = erp_reproject(tgt, rel)
    assert torch.allclose(rng, tgt, rtol=1e-12)
    j = torch.arange(w, dtype=torch.float64)
    expect_theta = torch.remainder(2 * math.pi * (j - k + 0.5) / w, 2 * math.pi) - math.pi
    assert torch.allclose(torch.remainder(theta - expect_theta + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros_like(theta), atol=1e-9)
    for mode in ("bilinear", "nearest"):
        assert torch.allclose(erp_sample(src.unsqueeze(1), theta, phi, mode=mode)[:, 0], tgt, atol=1e-9)
    *_, visible = reproject_visibility(tgt, src, rel)
    assert bool(visible.all())


def test_yaw_convention_matches_the_renderer():
    """Turning a rendered camera by 2 pi k / W rolls its depth by k columns (the ray caster is the truth)."""
    room = Room((0.0, 0.0, 0.0), (4.0, 3.0, 5.5), Material(), Material(), Material())
    scene = Scene(kind="indoor", camera=(1.3, 1.2, 2.1), yaw=0.4, objects=(room,))
    h, k = 16, 3
    a = render(scene, height=h)
    b = render(dataclasses.replace(scene, yaw=scene.yaw + 2 * math.pi * k / (2 * h)), height=h)
    np.testing.assert_allclose(b.depth, np.roll(a.depth, k, axis=1), rtol=1e-6)
    rel = relative_pose(yaw_pose(scene.yaw, scene.camera), yaw_pose(scene.yaw + 2 * math.pi * k / (2 * h), scene.camera))
    theta, phi, _ = erp_reproject(torch.from_numpy(b.depth).double()[None], rel)
    warped = erp_sample(torch.from_numpy(a.depth).double()[None, None], theta, phi)[0, 0].numpy()
    np.testing.assert_allclose(warped, b.depth, rtol=1e-6)


def test_translation_inside_a_sphere_is_exact():
    h, w, radius = 32, 64, 5.0
    c0, y0 = (0.5, -0.2, 0.3), 0.2
    c1, y1 = (1.1, 0.1, -0.4), -0.5
    rays = rays_np(h, w)
    d0 = torch.from_numpy(sphere_depth(c0, y0, radius, rays))[None]
    d1 = torch.from_numpy(sphere_depth(c1, y1, radius, rays))[None]
    rel = relative_pose(yaw_pose(y0, c0), yaw_pose(y1, c1))
    theta, phi, rng = erp_reproject(d1, rel)
    # the reprojected range is the source camera's own range along the reprojected direction
    th, ph = theta[0].numpy(), phi[0].numpy()
    dirs = np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)])
    np.testing.assert_allclose(rng[0].numpy(), sphere_depth(c0, y0, radius, dirs), rtol=1e-10)
    # bilinear sampling of the smooth source map: interpolation error of a 5.6 degree grid only
    sampled = erp_sample(d0[:, None], theta, phi)[0, 0]
    assert float(((sampled - rng[0]).abs() / rng[0]).max()) < 5e-3
    *_, visible = reproject_visibility(d1, d0, rel)
    assert bool(visible.all())


def test_translation_in_a_rendered_box_room():
    room = Room((0.0, 0.0, 0.0), (4.0, 3.0, 5.5), Material(), Material(), Material())
    s0 = Scene(kind="indoor", camera=(1.5, 1.3, 2.2), yaw=0.1, objects=(room,))
    s1 = dataclasses.replace(s0, camera=(1.8, 1.4, 2.6), yaw=0.35)
    h = 48
    a, b = render(s0, height=h), render(s1, height=h)
    da, db = torch.from_numpy(a.depth).double()[None], torch.from_numpy(b.depth).double()[None]
    rel = relative_pose(yaw_pose(s0.yaw, s0.camera), yaw_pose(s1.yaw, s1.camera))
    theta, phi, rng, visible = reproject_visibility(db, da, rel)
    # a convex room hides nothing: all but the pixels straddling the room's corner edges are visible
    assert float(visible.double().mean()) > 0.97
    sampled = erp_sample(da[:, None], theta, phi)[0, 0]
    rel_err = ((sampled - rng[0]).abs() / rng[0])[visible[0]]
    assert float(rel_err.median()) < 2e-3
    assert float(torch.quantile(rel_err, 0.99)) < 0.03


def test_occluded_points_are_not_visible():
    """Points hidden behind something closer in the source frame are not visible in both."""
    h, w = 16, 32
    # target sees a sphere of radius 5; the source sees the same sphere, but a (fake) occluder at 1 m
    # covers the left half of its panorama
    rays = rays_np(h, w)
    d = torch.from_numpy(sphere_depth((0.0, 0.0, 0.0), 0.0, 5.0, rays))[None]
    src = d.clone()
    src[..., : w // 2] = 1.0
    *_, visible = reproject_visibility(d, src, relative_pose(yaw_pose(0.0), yaw_pose(0.0)))
    assert not bool(visible[..., : w // 2 - 1].any())
    assert bool(visible[..., w // 2 + 1: -1].all())
