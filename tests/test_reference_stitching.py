"""``stitching="reference"``: the original project's resampling, against pytorch360convert 0.2.3 (a peer, test-only)
and against the golden ERP outputs of the original implementation (tests/data/reference_fidelity)."""
from __future__ import annotations

import math

import pytest
import torch

from pager.geometry import cubemap_to_erp, erp_to_cubemap
from pager.geometry.depth_encoding import decode_depth
from tests.test_reference_fidelity import EPS32, SAFETY, golden, run_case

p360 = pytest.importorskip("pytorch360convert")

SIZES = [(128, 256, 64), (64, 128, 16), (100, 200, 32), (60, 124, 20), (48, 96, 40)]


def _compare(ours, ref, dtype, mode, grid64, size):
    """``ours`` and pytorch360convert's ``ref`` ``[C, ...]`` agree: float64 to 1e-12; float32 bilinear within four
    ulps of the pixel coordinate (its float32 trigonometry, scaling and normalisation each round once; vectorised
    and scalar atan2/tan may round differently) times the largest neighbour difference (2 for data in [-1, 1]),
    plus the rounding of the result; nearest exactly, except at ties (a grid coordinate within 1e-3 pixel of a
    half-integer, where one ulp decides)."""
    diff = (ours.double() - ref.double()).abs()
    if dtype == torch.float64:
        assert diff.max().item() <= 1e-12
        return
    if mode == "bilinear":
        tol = 2.0 * 4 * EPS32 * max(size) + 4 * EPS32
        assert diff.max().item() <= tol
        return
    hs, ws = size
    px = (grid64[0, ..., 0] + 1) / 2 * (ws - 1)
    py = (grid64[0, ..., 1] + 1) / 2 * (hs - 1)
    tie = ((px - px.floor() - 0.5).abs() < 1e-3) | ((py - py.floor() - 0.5).abs() < 1e-3)
    bad = (diff > 0).any(dim=0)
    assert not (bad & ~tie.reshape(bad.shape)).any()


def _rand(shape, dtype, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype) * 2 - 1


@pytest.mark.parametrize("h,w,fs", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_c2e_reference_equals_pytorch360convert(h, w, fs, dtype, mode):
    cube = _rand((2, 6, 3, fs, fs), dtype)
    ours = cubemap_to_erp(cube, h, w, mode=mode, stitching="reference")
    from pager.geometry.reference_stitching import reference_c2e_grid

    grid = reference_c2e_grid(h, w, fs, torch.device("cpu"), torch.float64)
    for b in range(2):
        ref = p360.c2e(cube[b], h, w, mode=mode, cube_format="stack")
        _compare(ours[b], ref, dtype, mode, grid, (fs + 2, 6 * (fs + 2)))


def test_c2e_reference_keeps_integer_masks_exact():
    cube = (_rand((1, 6, 1, 16, 16), torch.float64) > 0)
    ours = cubemap_to_erp(cube, 32, 64, mode="nearest", stitching="reference")
    ref = p360.c2e(cube[0].double(), 32, 64, mode="nearest", cube_format="stack") > 0.5
    assert ours.dtype == torch.bool and torch.equal(ours[0], ref)


@pytest.mark.parametrize("h,w,fs", SIZES + [(32, 64, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_e2c_reference_equals_pytorch360convert(h, w, fs, dtype, mode):
    erp = _rand((2, 3, h, w), dtype)
    ours = erp_to_cubemap(erp, fs, mode=mode, stitching="reference")
    from pager.geometry.reference_stitching import reference_e2c_grid

    grid = reference_e2c_grid(h, w, fs, torch.device("cpu"), torch.float64).view(1, 6, fs, fs, 2)
    for b in range(2):
        ref = p360.e2c(erp[b], face_w=fs, mode=mode, cube_format="stack")
        _compare(ours[b].transpose(0, 1), ref.transpose(0, 1), dtype, mode, grid, (h, w))


def test_e2c_reference_differs_from_exact_only_at_the_seam():
    """At large faces some face pixels fall between the last ERP column centre and the seam: the original clamps
    them to the last column, ours interpolates across +-180 degrees. Nothing else differs."""
    h, w, fs = 32, 64, 48
    erp = _rand((1, 1, h, w), torch.float64)
    exact = erp_to_cubemap(erp, fs, stitching="exact")[0, :, 0]
    ref = erp_to_cubemap(erp, fs, stitching="reference")[0, :, 0]
    differ = (exact - ref).abs() > 1e-12
    assert differ.any()
    theta = torch.atan2(*[t for t in _face_dirs(fs)[[2, 0]]])  # longitude of each face pixel
    col = (theta / (2 * math.pi) + 0.5) * w - 0.5
    seam = (col > w - 1) | (col < 0)
    assert torch.equal(differ, seam & differ) and differ.sum() == seam.sum()


def _face_dirs(fs):
    from pager.geometry import cubemap_directions

    return cubemap_directions(fs, dtype=torch.float64).permute(1, 0, 2, 3)  # [3, 6, F, F]


def test_pad_faces_reference_equals_pytorch360convert_padding():
    from pytorch360convert.pytorch360convert import pad_cube_faces

    from pager.geometry.reference_stitching import pad_faces_reference

    cube = _rand((1, 6, 2, 8, 8), torch.float64)
    strip = pad_faces_reference(cube)[0]  # [C, F+2, 6(F+2)]
    ref = pad_cube_faces(cube[0].permute(0, 2, 3, 1))  # [6, F+2, F+2, C]
    assert torch.equal(strip, torch.cat(list(ref.permute(0, 3, 1, 2)), dim=-1))


def test_reference_stitching_rejects_widths_the_original_cannot_make():
    with pytest.raises(ValueError, match="multiple of 4"):
        cubemap_to_erp(torch.zeros(1, 6, 1, 8, 8), 15, 30, stitching="reference")
    with pytest.raises(ValueError, match="stitching must be one of"):
        cubemap_to_erp(torch.zeros(1, 6, 1, 8, 8), 16, 32, stitching="pytorch360convert")
    with pytest.raises(ValueError, match="stitching must be one of"):
        erp_to_cubemap(torch.zeros(1, 1, 16, 32), 8, stitching="")


# ------------------------------------------------------------------------------------------------
# golden ERP outputs of the original implementation
# ------------------------------------------------------------------------------------------------
def _truth64(case: str):
    """Our float64 decoded faces (equal to the original's float64 run to 1e-10, see test_reference_fidelity),
    stitched with the reference stitching in float64: the truth of the ERP outputs."""
    r = run_case(case)
    cfg = next(iter(r["model"].configs.values()))
    decoded = r["ours64"]["decoded"][None]  # [1, 6, 3, F, F]
    if r["modality"] == "depth":
        values = cubemap_to_erp(decoded.mean(dim=2, keepdim=True), 128, 256, stitching="reference")[0, 0].clamp(-1, 1)
        return torch.log(decode_depth(values, cfg.min_depth, cfg.max_depth, log_scale=cfg.log_scale))
    erp = cubemap_to_erp(decoded, 128, 256, stitching="reference")[0].clamp(-1, 1)
    return erp


def _assert_close(stage, ours32, truth64, golden32):
    ours32, golden32 = ours32.double(), golden32.double()
    own = (ours32 - truth64).abs().max().item()
    tol = SAFETY * max(own, EPS32 * golden32.abs().max().item())
    err = (ours32 - golden32).abs().max().item()
    assert err <= tol, f"{stage}: max |ours - golden| = {err:.3g} > {tol:.3g} (SAFETY x own fp32 error {own:.3g})"
    return err, tol


def test_reference_stitching_reproduces_golden_depth():
    """``Pager.predict(..., stitching="reference")`` gives the original's ERP log-depth and depth (metres)."""
    g = golden()
    model = run_case("ref_written_depth")["model"]
    out = model.predict(g["input/erp"], face_size=64, stitching="reference")
    log_depth = torch.log(out["depth"][0].double())
    truth = _truth64("ref_written_depth")
    _, tol = _assert_close("log_depth", log_depth, truth, g["ref_written_depth/fp32/log_depth"])
    # depth = exp(log depth): its relative error is the log error, plus one float32 rounding of the exp
    rel = (out["depth"][0].double() / g["ref_written_depth/fp32/depth"].double() - 1).abs().max().item()
    assert rel <= tol + 2 * EPS32
    own = (log_depth - truth).abs().max().item()
    # the exact stitching does not reproduce the original's output (so the test above can fail)
    exact = torch.log(model.predict(g["input/erp"], face_size=64)["depth"][0].double())
    assert (exact - g["ref_written_depth/fp32/log_depth"].double()).abs().max().item() > 100 * own


def test_reference_stitching_reproduces_golden_normals():
    """Normals: the original's clamped ERP output, normalised and converted to our frame (z mirrored)."""
    g = golden()
    model = run_case("ref_written_normals")["model"]
    out = model.predict(g["input/erp"], face_size=64, stitching="reference")["normals"][0].double()
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64).view(3, 1, 1)

    def unit(n):
        return n / n.norm(dim=0, keepdim=True).clamp_min(1e-6) * flip

    raw = g["ref_written_normals/fp32/normals_raw"].double()
    valid = raw.norm(dim=0) > 1e-2  # direction is ill-conditioned where the raw output is ~0
    truth = unit(_truth64("ref_written_normals"))
    _assert_close("normals", out[:, valid], truth[:, valid], unit(raw)[:, valid])
    assert valid.float().mean() > 0.99
