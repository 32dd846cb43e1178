"""ERP <-> cubemap: agreement with pytorch360convert, analytic truth, round trips, masks, dtypes."""

import math

import pytest
import torch

from pager.geometry import (
    FACE_NAMES,
    cubemap_angles,
    cubemap_directions,
    cubemap_to_erp,
    erp_directions,
    erp_to_cubemap,
    uv_positional_encoding,
)

from tests.geometry_truth import FRAMES

p360 = pytest.importorskip("pytorch360convert.pytorch360convert")



def face_pixel_dirs(fs):
    """[6, 3, F, F] unit rays of the edge-to-edge face grid, float64, from FRAMES."""
    k = torch.arange(fs, dtype=torch.float64) / (fs - 1)
    a = (k - 0.5).view(1, 1, fs)
    b = (0.5 - k).view(1, fs, 1)
    out = []
    for name in FACE_NAMES:
        n, r, u = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in FRAMES[name])
        p = 0.5 * n + a * r + b * u
        out.append(p / p.norm(dim=0, keepdim=True))
    return torch.stack(out)


def smooth(d):
    """A smooth function of direction, 3 channels; d: [..., 3, H, W]."""
    x, y, z = d.unbind(-3)
    return torch.stack((torch.sin(2 * x) + 0.5 * y, torch.cos(3 * z) * x, x * y + z), dim=-3)


def test_face_order_and_centres():
    assert FACE_NAMES == ("F", "R", "B", "L", "U", "D")
    d = cubemap_directions(5, dtype=torch.float64)  # odd size: pixel (2, 2) is the face centre
    axes = torch.tensor([[1, 0, 0], [0, 0, 1], [-1, 0, 0], [0, 0, -1], [0, 1, 0], [0, -1, 0]], dtype=torch.float64)
    assert torch.allclose(d[:, :, 2, 2], axes, atol=1e-12)
    assert torch.allclose(d, face_pixel_dirs(5), atol=1e-12)
    theta, phi = cubemap_angles(5, dtype=torch.float64)
    assert torch.allclose(theta[:4, 2, 2].abs(), torch.tensor([0, math.pi / 2, math.pi, math.pi / 2], dtype=torch.float64))
    assert phi[4, 2, 2] == pytest.approx(math.pi / 2) and phi[5, 2, 2] == pytest.approx(-math.pi / 2)


def test_e2c_matches_pytorch360convert():
    torch.manual_seed(0)
    h, w, fs = 64, 128, 24
    erp = torch.rand(2, 3, h, w)
    ours = erp_to_cubemap(erp, fs)
    assert ours.shape == (2, 6, 3, fs, fs)
    for i in range(2):
        ref = p360.e2c(erp[i], fs, cube_format="stack")  # [6, 3, F, F]
        diff = (ours[i] - ref).abs()
        assert diff.mean() < 1e-4 and diff.max() < 1e-2, (diff.mean(), diff.max())
    ref_nn = p360.e2c(erp[0], fs, mode="nearest", cube_format="stack")
    assert (erp_to_cubemap(erp[:1], fs, mode="nearest")[0] != ref_nn).float().mean() < 1e-3


def test_c2e_against_analytic_truth_and_pytorch360convert():
    # pytorch360convert's c2e is not the inverse of its e2c (face pixel k -> k/F - 1/2 instead of
    # k/(F-1) - 1/2, ERP columns at linspace(-pi, pi, W) instead of pixel centres): on this smooth
    # field it is off by ~1e-2 on average (up to ~0.5 at a few face-type boundary pixels), so the
    # issue's "mean < 1e-4 vs pytorch360convert" cannot hold for c2e. We test against the analytic
    # field instead and check that we are much closer to it than pytorch360convert.
    h, w, fs = 128, 256, 48
    cube = smooth(face_pixel_dirs(fs)).unsqueeze(0)  # [1, 6, 3, F, F]
    truth = smooth(erp_directions(h, w, dtype=torch.float64)).unsqueeze(0)
    ours = cubemap_to_erp(cube, h, w)
    err = (ours - truth).abs()
    assert err.mean() < 1e-3 and err.max() < 1e-2, (err.mean(), err.max())
    ref = p360.c2e(cube[0].float(), h, w, cube_format="stack").double()
    ref_err = (ref - truth[0]).abs()
    assert err.mean() * 10 < ref_err.mean()


def test_c2e_vs_pytorch360convert_max_away_from_face_borders_at_full_size():
    # At 2048x1024 / 512 faces the "max < 1e-2 away from face borders" holds against
    # pytorch360convert's c2e (measured 7e-3); its mean (1.9e-3) cannot reach 1e-4 because of
    # pytorch360convert's own grid offsets (see the test above), so the mean is checked against the
    # analytic field instead (measured 2e-6).
    h, w, fs = 1024, 2048, 512
    cube = smooth(face_pixel_dirs(fs)).unsqueeze(0).float()
    ours = cubemap_to_erp(cube, h, w)[0]
    ref = p360.c2e(cube[0], h, w, cube_format="stack")
    d = erp_directions(h, w)
    truth = smooth(d)
    a = d.abs()
    major = a.amax(dim=0)
    # face coordinates of every ERP pixel: the two minor components over the major one, in [-1, 1]
    minor = torch.sort(a, dim=0).values[:2] / major  # [2, H, W]
    away = (minor < 1 - 8.0 / fs).all(dim=0)  # more than ~4 face pixels from any face border
    assert away.float().mean() > 0.9
    assert (ours - ref).abs().amax(dim=0)[away].max() < 1e-2
    assert (ours - truth).abs().mean() < 1e-4


def test_round_trip_2048x1024_512_faces():
    h, w, fs = 1024, 2048, 512
    erp = smooth(erp_directions(h, w)).unsqueeze(0)
    back = cubemap_to_erp(erp_to_cubemap(erp, fs), h, w)
    err = (back - erp).abs()
    assert err.mean() < 1e-3, err.mean()
    assert err.max() < 1e-2, err.max()


def test_e2c_is_bilinear_at_the_analytic_positions_with_seam_wrap():
    # independent re-implementation of the sampling: bilinear interpolation of a random ERP at the
    # ERP position of every face pixel, columns wrapping around the seam, rows clamped at the poles.
    # W=64, F=32: the back face's centre columns sample between the last and the first ERP column.
    torch.manual_seed(2)
    h, w, fs = 32, 64, 32
    erp = torch.rand(1, 2, h, w, dtype=torch.float64)
    d = face_pixel_dirs(fs)
    theta = torch.atan2(d[:, 2], d[:, 0])
    phi = torch.atan2(d[:, 1], torch.hypot(d[:, 0], d[:, 2]))
    x = (theta / (2 * math.pi) + 0.5) * w - 0.5
    y = ((0.5 - phi / math.pi) * h - 0.5).clamp(0, h - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    c0, c1 = x0 % w, (x0 + 1) % w
    r0, r1 = y0, (y0 + 1).clamp(max=h - 1)
    img = erp[0]  # [C, H, W]
    expected = (
        img[:, r0, c0] * (1 - wx) * (1 - wy) + img[:, r0, c1] * wx * (1 - wy)
        + img[:, r1, c0] * (1 - wx) * wy + img[:, r1, c1] * wx * wy
    ).permute(1, 0, 2, 3)  # [6, C, F, F]
    wraps = (x > w - 1) | (x < 0)
    assert wraps.any()  # the seam is really exercised
    ours = erp_to_cubemap(erp, fs)[0]
    assert (ours - expected).abs().max() < 1e-9


def test_round_trip_batched():
    h, w, fs = 32, 64, 16
    d = erp_directions(h, w, dtype=torch.float64)
    erp = torch.stack((smooth(d), smooth(d) * 2 - 1)).float()
    back = cubemap_to_erp(erp_to_cubemap(erp, fs), h, w)
    assert back.shape == erp.shape
    assert (back - erp).abs().mean() < 1e-2
    assert torch.allclose(back[1], cubemap_to_erp(erp_to_cubemap(erp[1:], fs), h, w)[0])


def test_nearest_keeps_masks_exact():
    torch.manual_seed(1)
    h, w, fs = 32, 64, 16
    mask = torch.rand(2, 1, h, w) > 0.5
    cube = erp_to_cubemap(mask, fs, mode="nearest")
    assert cube.dtype == torch.bool and cube.shape == (2, 6, 1, fs, fs)
    back = cubemap_to_erp(cube, h, w, mode="nearest")
    assert back.dtype == torch.bool and back.shape == mask.shape
    # every value exists in the source (no blending): compare with the float path in nearest mode
    as_float = erp_to_cubemap(mask.float(), fs, mode="nearest")
    assert torch.equal(as_float.bool(), cube)
    labels = torch.randint(0, 1000, (1, 1, h, w))
    lc = erp_to_cubemap(labels, fs, mode="nearest")
    assert lc.dtype == torch.int64 and set(lc.unique().tolist()) <= set(labels.unique().tolist())
    # a large constant region round-trips exactly
    m = torch.zeros(1, 1, h, w, dtype=torch.bool)
    m[..., 8:24, 10:40] = True
    rt = cubemap_to_erp(erp_to_cubemap(m, 32, mode="nearest"), h, w, mode="nearest")
    assert (rt != m).float().mean() < 0.02
    with pytest.raises(ValueError, match="nearest"):
        erp_to_cubemap(mask, fs)


@pytest.mark.parametrize("h, fs", [(256, 24), (1024, 96)])  # 96: the latent face of a 768-px face
def test_uv_positional_encoding_equals_e2c_of_uv_image(h, fs):
    w = 2 * h
    j = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    i = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    uv_img = torch.stack(torch.meshgrid(j, i, indexing="xy")).float()  # [2, H, W]: u, v
    ref = p360.e2c(uv_img, fs, cube_format="stack")  # [6, 2, F, F]
    ours = uv_positional_encoding(fs)
    assert ours.shape == (6, 2, fs, fs)
    assert (ours - ref).abs().max() < 1e-5
    # signs: front centre ~ (0, 0); right face u ~ +1/2; up face v ~ -1 (top of the ERP)
    assert ours[0].abs().amax(dim=(1, 2)).max() < 0.5
    assert ours[1, 0].mean() == pytest.approx(0.5, abs=1e-3)
    assert ours[4, 1].mean() < -0.5 and ours[5, 1].mean() > 0.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    h, w, fs = 32, 64, 16
    erp = smooth(erp_directions(h, w)).unsqueeze(0).to(dtype)
    cube = erp_to_cubemap(erp, fs)
    back = cubemap_to_erp(cube, h, w)
    assert cube.dtype == dtype and back.dtype == dtype
    assert torch.isfinite(back.float()).all()
    assert (back.float() - erp.float()).abs().mean() < 0.05


def test_differentiable():
    erp = torch.rand(1, 2, 16, 32, requires_grad=True)
    cube = erp_to_cubemap(erp, 8)
    cube.sum().backward()
    assert erp.grad is not None and erp.grad.abs().sum() > 0
    c = torch.rand(1, 6, 2, 8, 8, requires_grad=True)
    cubemap_to_erp(c, 16, 32).square().sum().backward()
    assert c.grad is not None and torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="erp"):
        erp_to_cubemap(torch.rand(3, 16, 32), 8)
    with pytest.raises(ValueError, match="mode"):
        erp_to_cubemap(torch.rand(1, 3, 16, 32), 8, mode="bicubic")
    with pytest.raises(ValueError, match="cube"):
        cubemap_to_erp(torch.rand(1, 5, 3, 8, 8), 16, 32)
    with pytest.raises(ValueError, match="face_size"):
        erp_to_cubemap(torch.rand(1, 3, 16, 32), 1)
