"""Roll augmentation: images/masks roll, normals roll and rotate consistently with depth."""

import math

import pytest
import torch

from pager.geometry import depth_to_normals, erp_directions, roll_erp, roll_normals, rotate_normals_yaw


def scene_depth(h, w):
    """A non-symmetric smooth range-depth field (an ellipsoid-like room seen off-centre)."""
    d = erp_directions(h, w, dtype=torch.float64)
    x, y, z = d
    return (2.0 + 0.6 * x + 0.3 * z * x + 0.4 * y * y + 0.2 * torch.sin(2 * z))[None, None]


def test_roll_matches_torch_roll_and_per_sample():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).view(2, 3, 4, 8)
    assert torch.equal(roll_erp(x, 3), torch.roll(x, 3, dims=-1))
    out = roll_erp(x, torch.tensor([3, -2]))
    assert torch.equal(out[0], torch.roll(x[0], 3, dims=-1))
    assert torch.equal(out[1], torch.roll(x[1], -2, dims=-1))
    m = x > 40
    assert roll_erp(m, torch.tensor([1, 9])).dtype == torch.bool
    with pytest.raises(ValueError):
        roll_erp(x, 1.5)
    with pytest.raises(ValueError):
        roll_erp(x, torch.tensor([1, 2, 3]))


def test_rotation_sign_by_hand():
    # a quarter turn to the right (W/4 pixels) brings the forward direction (+x) to the right (+z)
    # and the right direction (+z) to the back (-x); up stays up
    n = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]).T.reshape(1, 3, 1, 3)
    r = rotate_normals_yaw(n, math.pi / 2)
    want = torch.tensor([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]]).T.reshape(1, 3, 1, 3)
    assert torch.allclose(r, want, atol=1e-6)
    # the ray field is invariant under a roll of the scene (a camera-centred sphere stays one):
    # rolled then rotated rays are the rays again
    d = erp_directions(8, 16)[None]
    assert torch.allclose(roll_normals(d, 4), d, atol=1e-6)
    assert not torch.allclose(roll_erp(d, 4), d, atol=1e-2)


@pytest.mark.parametrize("shift", [5, -13, 0, 64])
def test_roll_consistent_with_depth_normals(shift):
    depth = scene_depth(32, 64)
    a = depth_to_normals(roll_erp(depth, shift))
    b = roll_normals(depth_to_normals(depth), shift)
    assert torch.allclose(a, b, atol=1e-10)


def test_roll_normals_per_sample_tensor():
    depth = torch.cat((scene_depth(16, 32), scene_depth(16, 32).flip(-1)))
    shifts = torch.tensor([3, -7])
    a = depth_to_normals(roll_erp(depth, shifts))
    b = roll_normals(depth_to_normals(depth), shifts)
    assert torch.allclose(a, b, atol=1e-10)
    # the wrong sign would not match
    assert not torch.allclose(a, roll_normals(depth_to_normals(depth), -shifts), atol=1e-3)
