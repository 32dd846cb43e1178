"""ERP grids: hand-computed angles and rays, frame handedness, angle/direction round trip."""

import math

import pytest
import torch

from pager.geometry import angles_to_directions, directions_to_angles, erp_angles, erp_directions


def test_angles_hand_computed():
    theta, phi = erp_angles(4, 8, dtype=torch.float64)
    assert theta.shape == phi.shape == (4, 8)
    # column j centre: 2*pi*(j+0.5)/8 - pi ; row i: pi/2 - pi*(i+0.5)/4
    assert theta[0, 0].item() == pytest.approx(-7 * math.pi / 8)
    assert theta[0, 4].item() == pytest.approx(math.pi / 8)
    assert phi[0, 0].item() == pytest.approx(3 * math.pi / 8)
    assert phi[3, 0].item() == pytest.approx(-3 * math.pi / 8)


def test_directions_frame():
    h, w = 64, 128
    d = erp_directions(h, w, dtype=torch.float64)
    assert d.shape == (3, h, w)
    assert torch.allclose(d.norm(dim=0), torch.ones(h, w, dtype=torch.float64))
    # image centre -> forward (+x); three quarters across -> right (+z); top rows -> up (+y)
    centre = d[:, h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].mean(dim=(1, 2))
    assert torch.allclose(centre / centre.norm(), torch.tensor([1.0, 0, 0], dtype=torch.float64), atol=1e-12)
    right = d[:, h // 2 - 1 : h // 2 + 1, 3 * w // 4 - 1 : 3 * w // 4 + 1].mean(dim=(1, 2))
    assert torch.allclose(right / right.norm(), torch.tensor([0, 0, 1.0], dtype=torch.float64), atol=1e-12)
    assert d[1, 0].min() > 0.99 and d[1, -1].max() < -0.99
    # right-handed: forward x up = right
    assert torch.equal(torch.linalg.cross(torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])), torch.tensor([0, 0, 1.0]))


def test_round_trip_and_cache_safety():
    theta, phi = erp_angles(16, 32, dtype=torch.float64)
    d = angles_to_directions(theta, phi, dim=0)
    assert torch.allclose(d, erp_directions(16, 32, dtype=torch.float64))
    t2, p2 = directions_to_angles(d * 3.0, dim=0)  # length does not matter
    assert torch.allclose(t2, theta) and torch.allclose(p2, phi)
    d.zero_()  # callers may modify what they got: the cache is not affected
    assert erp_directions(16, 32, dtype=torch.float64).abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtypes(dtype):
    d = erp_directions(8, 16, dtype=dtype)
    assert d.dtype == dtype and torch.isfinite(d).all()


def test_bad_size():
    with pytest.raises(ValueError, match="height"):
        erp_directions(0, 8)
    with pytest.raises(ValueError, match="dtype"):
        erp_angles(4, 8, dtype=torch.int64)
