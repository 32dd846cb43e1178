"""Cube padding modes: "geometric" continues the edge-to-edge face grid over the folded cube, "reference"
(released checkpoints) duplicates the shared edge row.

Truth: an analytic smooth function of direction sampled on the edge-to-edge grid of the package
docstring (face pixel k at -1/2 + k/(F-1)); a padded pixel d rows beyond an edge must hold the function at
the point d/(F-1) beyond the edge on the neighbouring face (the folded continuation of the grid).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pager.geometry import (
    FACE_NAMES,
    CubePadConv2d,
    convert_to_cube_padding,
    cube_pad,
    cube_padding_mode,
    cubemap_directions,
    cubemap_to_erp,
    erp_directions,
    erp_to_cubemap,
)

from tests.geometry_truth import VEC, field
from tests.seam_measures import face_labels, local_border_jump_ratio


def grid_point(face, r, c, fs):
    """Edge-to-edge grid point (r, c) of a face, continued linearly in the face plane when outside."""
    n, rv, uv = VEC[face]
    return n, rv, uv, -0.5 + c / (fs - 1), 0.5 - r / (fs - 1)


def continuation(face, r, c, fs):
    """Cube point of padded pixel (r, c) (outside along one axis): distance beyond the edge, folded onto
    the neighbour; and the neighbour's name."""
    n, rv, uv, a, b = grid_point(face, r, c, fs)
    ae, be = min(max(a, -0.5), 0.5), min(max(b, -0.5), 0.5)
    over = abs(a - ae) + abs(b - be)
    out_dir = (a - ae) * rv + (b - be) * uv
    neighbour = next(k for k in FACE_NAMES if torch.allclose(VEC[k][0], out_dir / out_dir.norm()))
    return 0.5 * n + ae * rv + be * uv - over * n, neighbour


def analytic_cube(fs, n=1):
    dirs = cubemap_directions(fs, dtype=torch.float64)  # [6, 3, F, F], the docstring's grid
    vals = field(dirs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [6, 2, F, F]
    return vals.repeat(n, 1, 1, 1).contiguous()


def test_analytic_cube_is_on_the_docstring_grid():
    fs = 5
    cube = analytic_cube(fs)
    for f, name in enumerate(FACE_NAMES):
        n, rv, uv, a, b = grid_point(name, 1, 3, fs)
        assert torch.allclose(cube[f, :, 1, 3], field(0.5 * n + a * rv + b * uv), atol=1e-12)


@pytest.mark.parametrize("pad", [1, 2])
def test_geometric_pad_is_the_continuation_all_edges(pad):
    fs = 6
    cube = analytic_cube(fs, n=2)
    out = cube_pad(cube, pad, mode="geometric")
    assert out.shape == (12, 2, fs + 2 * pad, fs + 2 * pad)
    assert torch.equal(out[:, :, pad:-pad, pad:-pad], cube)
    pairs = set()
    for f, name in enumerate(FACE_NAMES):
        for rr in range(-pad, fs + pad):
            for cc in range(-pad, fs + pad):
                r_out, c_out = not 0 <= rr < fs, not 0 <= cc < fs
                got = out[f, :, rr + pad, cc + pad]
                if r_out and c_out:
                    # both adjacent padded values lie on the edge between the two neighbours
                    pa, _ = continuation(name, rr, min(max(cc, 0), fs - 1), fs)
                    pb, _ = continuation(name, min(max(rr, 0), fs - 1), cc, fs)
                    if abs(rr - min(max(rr, 0), fs - 1)) == abs(cc - min(max(cc, 0), fs - 1)):
                        assert torch.allclose(pa, pb, atol=1e-12)  # diagonal: the same 3-D point
                    want = 0.5 * (field(pa) + field(pb))
                elif r_out or c_out:
                    p, neighbour = continuation(name, rr, cc, fs)
                    pairs.add((name, neighbour))
                    want = field(p)
                else:
                    continue
                assert torch.allclose(got, want, atol=1e-12), (name, rr, cc, got, want)
                assert torch.allclose(out[f + 6, :, rr + pad, cc + pad], want, atol=1e-12)
    assert len(pairs) == 24  # 12 edges, both directions


def test_geometric_skips_the_shared_edge_row_by_hand():
    fs = 4
    x = torch.arange(6 * fs * fs, dtype=torch.float64).view(6, 1, fs, fs)
    up, left = x[4, 0], x[3, 0]  # U sits above F (U's bottom row is the F/U edge), L left of F
    geo = cube_pad(x, 2, mode="geometric")[0, 0]
    ref = cube_pad(x, 2, mode="reference")[0, 0]
    assert torch.equal(geo[1, 2:-2], up[fs - 2]) and torch.equal(geo[0, 2:-2], up[fs - 3])
    assert torch.equal(ref[1, 2:-2], up[fs - 1]) and torch.equal(ref[0, 2:-2], up[fs - 2])
    assert torch.equal(geo[2:-2, 1], left[:, fs - 2]) and torch.equal(ref[2:-2, 1], left[:, fs - 1])
    assert geo[1, 1] == 0.5 * (up[fs - 2, 0] + left[0, fs - 2])


def test_geometric_pad_of_a_resampled_panorama_within_interpolation_accuracy():
    """Cube from erp_to_cubemap of a smooth ERP: padded values match the field at the continuation points
    as well as the face pixels match it (interpolation error); reference mode is off by a pixel's step."""
    fs, h = 16, 96
    erp = field(erp_directions(h, 2 * h, dtype=torch.float64).permute(1, 2, 0)).permute(2, 0, 1)[None]
    cube = erp_to_cubemap(erp, fs)[0]  # [6, 2, F, F]
    inner_err = (cube - analytic_cube(fs)).abs().max().item()
    errs = {}
    for mode in ("geometric", "reference"):
        out = cube_pad(cube, 1, mode=mode)
        worst = 0.0
        for f, name in enumerate(FACE_NAMES):
            for k in range(fs):
                for rr, cc in ((-1, k), (fs, k), (k, -1), (k, fs)):
                    p, _ = continuation(name, rr, cc, fs)
                    worst = max(worst, (out[f, :, rr + 1, cc + 1] - field(p)).abs().max().item())
        errs[mode] = worst
    assert errs["geometric"] <= 1.5 * inner_err + 1e-9
    assert errs["reference"] > 5 * errs["geometric"]


def test_blur_has_no_face_borders_in_geometric_mode():
    """A cube-padded 5x5 box blur is a pure geometry check: with geometric padding both faces see the
    same 3-D samples at a shared edge point, so the stitched ERP is as smooth across borders as inside."""
    fs, h = 32, 64
    labels = face_labels(fs, h)
    cube = analytic_cube(fs)[:, :1]
    w = torch.full((1, 1, 5, 5), 1 / 25, dtype=torch.float64)
    ratio = {}
    for mode in ("geometric", "reference"):
        blurred = F.conv2d(cube_pad(cube, 2, mode=mode), w)
        ratio[mode] = local_border_jump_ratio(cubemap_to_erp(blurred[None], h, 2 * h)[0, 0], labels)
    unblurred = local_border_jump_ratio(cubemap_to_erp(cube[None], h, 2 * h)[0, 0], labels)
    assert abs(unblurred - 1) < 0.05  # the statistic itself: ~1 on a smooth cubemap
    assert abs(ratio["geometric"] - 1) < 0.05  # measured 1.006
    assert ratio["reference"] > 1.4  # measured 1.59: the duplicated edge row shows as a step


def test_conv_and_convert_modes():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(6, 2, 8, 8)
    geo = CubePadConv2d.from_conv(conv, mode="geometric")
    assert geo.cube_padding_mode == "geometric" and "geometric" in repr(geo)
    assert torch.allclose(geo(x), F.conv2d(cube_pad(x, 1, mode="geometric"), conv.weight, conv.bias))
    assert not torch.allclose(geo(x), CubePadConv2d.from_conv(conv)(x))
    with pytest.raises(ValueError, match="mode"):
        CubePadConv2d.from_conv(conv, mode="cells")

    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 3, padding=1))
    assert cube_padding_mode(model) is None
    convert_to_cube_padding(model)
    assert cube_padding_mode(model) == "reference"
    y_ref = model(x)
    mods = list(model.modules())
    convert_to_cube_padding(model, mode="geometric")  # same layers, new mode
    assert all(a is b for a, b in zip(mods, model.modules()))
    assert cube_padding_mode(model) == "geometric"
    y_geo = model(x)
    assert not torch.allclose(y_ref, y_geo)
    convert_to_cube_padding(model, mode="reference")
    assert torch.equal(model(x), y_ref)
    model[0].cube_padding_mode = "geometric"
    with pytest.raises(ValueError, match="mixes"):
        cube_padding_mode(model)
    with pytest.raises(ValueError, match="mode"):
        convert_to_cube_padding(model, mode="zero")


def test_one_sided_downsample_geometric():
    downsampling = pytest.importorskip("diffusers.models.downsampling")
    torch.manual_seed(0)
    ds = downsampling.Downsample2D(4, use_conv=True, out_channels=4, padding=0, name="conv")
    convert_to_cube_padding(ds, mode="geometric")
    assert ds.conv.cube_padding_mode == "geometric" and ds.conv.input_zero_pad == (0, 1, 0, 1)
    h = torch.randn(6, 4, 8, 8)
    want = F.conv2d(cube_pad(h, sides=(0, 1, 0, 1), mode="geometric"), ds.conv.weight, ds.conv.bias, stride=2)
    assert torch.allclose(ds(h), want, atol=1e-6)


def test_geometric_limits_and_cache_keys():
    x = torch.randn(6, 1, 4, 4)
    assert cube_pad(x, 4).shape[-1] == 12  # up to F
    # geometric: the neighbour has only F-1 rows beyond the edge; tiny faces fall back to the reference table
    assert torch.equal(cube_pad(x, 4, mode="geometric"), cube_pad(x, 4))
    assert not torch.equal(cube_pad(x, 3, mode="geometric"), cube_pad(x, 3))
    one = torch.randn(6, 2, 1, 1)
    assert torch.equal(cube_pad(one, 1, mode="geometric"), cube_pad(one, 1))
    with pytest.raises(ValueError):
        cube_pad(x, 5, mode="geometric")
    with pytest.raises(ValueError, match="mode"):
        cube_pad(x, 1, mode="nearest")
    # both modes on the same sizes do not share a cached table
    assert not torch.equal(cube_pad(x, 1, mode="geometric"), cube_pad(x, 1, mode="reference"))
