"""Points and normals from the analytic range depth of a box room; angle error; masks; poles."""

import pytest
import torch

from pager.geometry import depth_to_normals, depth_to_points, erp_directions, normals_angle_error

HALF = torch.tensor([2.0, 1.4, 3.0], dtype=torch.float64)  # box half-sizes (x, y, z), metres
CAM = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)  # camera position inside the box


def box_room(h, w):
    """Analytic range depth [1, 1, H, W], inward wall normals [1, 3, H, W] and wall ids [H, W]."""
    d = erp_directions(h, w, dtype=torch.float64)
    best = torch.full((h, w), float("inf"), dtype=torch.float64)
    normal = torch.zeros(3, h, w, dtype=torch.float64)
    wall = torch.full((h, w), -1)
    for k in range(3):
        for s, sgn in enumerate((1.0, -1.0)):
            t = (sgn * HALF[k] - CAM[k]) / d[k]  # ray parameter to the plane x_k = sgn*half_k
            hit = (t > 0) & (t < best)
            best = torch.where(hit, t, best)
            nv = torch.zeros(3, 1, 1, dtype=torch.float64)
            nv[k] = -sgn  # pointing into the room, towards the camera
            normal = torch.where(hit, nv.expand(3, h, w), normal)
            wall = torch.where(hit, torch.tensor(2 * k + s), wall)
    return best[None, None], normal[None], wall


def test_points_lie_on_the_walls():
    depth, _, wall = box_room(32, 64)
    pts = depth_to_points(depth)[0] + CAM.view(3, 1, 1)  # world points relative to the box centre
    for k in range(3):
        for s, sgn in enumerate((1.0, -1.0)):
            sel = wall == 2 * k + s
            assert sel.any()
            assert torch.allclose(pts[k][sel], torch.full_like(pts[k][sel], sgn * HALF[k].item()), atol=1e-9)
    # range is the norm of the point
    assert torch.allclose(depth_to_points(depth).norm(dim=1, keepdim=True), depth)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_box_room_normals(dtype):
    depth, normal, _ = box_room(128, 256)
    n = depth_to_normals(depth.to(dtype))
    assert n.shape == (1, 3, 128, 256) and torch.isfinite(n).all()
    err = normals_angle_error(n.double(), normal)
    assert err.median() < 1.0
    assert (err < 5).float().mean() > 0.9  # only pixels next to the room's edges differ
    # oriented towards the camera and unit length
    rays = erp_directions(128, 256, dtype=torch.float64)[None]
    assert ((n.double() * rays).sum(1) <= 1e-6).all()
    assert torch.allclose(n.norm(dim=1), torch.ones(1, 128, 256, dtype=dtype), atol=1e-3)


def test_poles_and_sphere():
    # a sphere around the camera: normals are -ray everywhere, including the first/last rows
    h, w = 16, 32
    depth = torch.full((2, 1, h, w), 2.5)
    n = depth_to_normals(depth)
    rays = erp_directions(h, w)[None]
    assert torch.isfinite(n).all()
    err = normals_angle_error(n, -rays.expand_as(n))
    assert err[:, 1:-1].max() < 0.5  # central differences are exact up to float for a sphere
    assert err.max() < 10.0  # one-sided rows at the poles are still sensible


def test_mask():
    depth, normal, wall = box_room(32, 64)
    assert (wall[12:21, 26:39] == wall[16, 32]).all()  # the hole and its ring lie on one flat wall
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[..., 14:19, 28:37] = False
    depth_bad = depth.clone()
    depth_bad[..., 14:19, 28:37] = 1e3  # garbage inside the hole must not leak into the normals
    n = depth_to_normals(depth_bad, mask=mask)
    assert torch.isfinite(n).all()
    assert (n[..., 14:19, 28:37] == 0).all()
    # the ring around the hole uses one-sided differences: exact on a plane
    err = normals_angle_error(n, normal)[0]
    ring = torch.zeros(32, 64, dtype=torch.bool)
    ring[13:20, 27:38] = True
    ring[14:19, 28:37] = False
    assert err[ring].max() < 1e-3
    unmasked = normals_angle_error(depth_to_normals(depth_bad), normal)[0]
    assert unmasked[ring].max() > 10  # without the mask the garbage does leak
    isolated = torch.zeros_like(mask)
    isolated[..., 5, 5] = True
    assert (depth_to_normals(depth, mask=isolated) == 0).all()  # no valid neighbour at all


def test_angle_error_hand_values():
    a = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]]).T.reshape(1, 3, 1, 3)
    b = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, 5.0]]).T.reshape(1, 3, 1, 3)
    err = normals_angle_error(a, b)
    assert torch.allclose(err, torch.tensor([[[0.0, 180.0, 90.0]]]), atol=1e-4)


def test_grad_and_half_precision():
    depth, _, _ = box_room(16, 32)
    d = depth.float().requires_grad_(True)
    depth_to_normals(d).sum().backward()
    assert torch.isfinite(d.grad).all()
    for dt in (torch.float16, torch.bfloat16):
        n = depth_to_normals(depth.to(dt))
        assert n.dtype == dt and torch.isfinite(n.float()).all()


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        depth_to_normals(torch.rand(1, 16, 32))
    with pytest.raises(ValueError, match="mask"):
        depth_to_normals(torch.rand(1, 1, 16, 32), mask=torch.ones(1, 1, 8, 8, dtype=torch.bool))
