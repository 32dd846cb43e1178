"""Large panoramas in bounded memory: band-by-band stitching and writing give the whole-image results, and
``pager predict`` of a moderately large panorama stays within a memory budget derived from its output size.

Equality tests compare each banded path with the same computation done whole (bands forced tiny by
monkeypatching the band sizes) and with an independent implementation (``F.grid_sample`` on the padded panorama,
as the code did before, for ERP->cube); the budget test runs ``pager predict`` with a tiny checkpoint in a child
process and reads the child's own peak RSS.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pager.geometry.cubemap as cubemap
from pager.geometry.cubemap import cubemap_to_erp, erp_to_cubemap
from pager.geometry.seam_blend import SEAM_BLEND_ROTATION, align_log_scale, erp_seam_weights, lower_median

ROOT = Path(__file__).resolve().parents[1]
EPS32 = torch.finfo(torch.float32).eps


def _force_bands(mp: pytest.MonkeyPatch, band_pixels: int) -> None:
    """Every cube->ERP call resamples band by band with about ``band_pixels`` pixels per band."""
    mp.setattr(cubemap, "C2E_CACHE_PIXELS", 0)
    mp.setattr(cubemap, "STITCH_BAND_PIXELS", band_pixels)


# ------------------------------------------------------------------------------------------------
# cube -> ERP
# ------------------------------------------------------------------------------------------------
CASES = [("exact", None), ("exact", SEAM_BLEND_ROTATION), ("reference", None)]


@pytest.mark.parametrize("stitching,rotation", CASES, ids=["exact", "exact-rotated", "reference"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_c2e_in_bands_equals_the_whole_image(stitching, rotation, mode, dtype):
    """Rows taken band by band (``rows=``, and the automatic banding of large outputs) are the rows of the whole
    output: the grid of a pixel is per-pixel arithmetic, so only its rounding could differ."""
    g = torch.Generator().manual_seed(0)
    h, w, fs = 26, 52 if stitching == "exact" else 56, 12
    cube = (torch.rand(2, 6, 3, fs, fs, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    whole = cubemap_to_erp(cube, h, w, mode=mode, stitching=stitching, rotation=rotation)
    cuts = [0, 1, 5, 6, 13, 25, h]  # bands of 1 to 8 rows, the poles alone
    parts = [cubemap_to_erp(cube, h, w, mode=mode, stitching=stitching, rotation=rotation, rows=(a, b))
             for a, b in zip(cuts[:-1], cuts[1:])]
    with pytest.MonkeyPatch.context() as mp:
        _force_bands(mp, 3 * w)
        auto = cubemap_to_erp(cube, h, w, mode=mode, stitching=stitching, rotation=rotation)
        middle = cubemap_to_erp(cube, h, w, mode=mode, stitching=stitching, rotation=rotation, rows=(4, 21))
    # the grids of a band equal the whole grid's rows up to one rounding of float32 trigonometry (reference mode
    # evaluates it in float32): a shift of ~eps32 pixel of the strip, times a value step of at most 2 per pixel
    tol = 0.0 if (stitching == "exact" or mode == "nearest") else 2 * 4 * EPS32 * 6 * (fs + 2)
    if dtype == torch.float16:
        tol = max(tol, 1e-3)  # the result is rounded to float16 after sampling in float32
    for got in (torch.cat(parts, dim=2), auto):
        assert got.shape == whole.shape and got.dtype == whole.dtype
        assert (got.double() - whole.double()).abs().max().item() <= tol
    assert (middle.double() - whole[:, :, 4:21].double()).abs().max().item() <= tol


def test_c2e_rows_are_checked():
    cube = torch.zeros(1, 6, 1, 8, 8)
    for rows in ((3, 3), (-1, 4), (0, 17), (5, 2), "ab"):
        with pytest.raises(ValueError, match="rows"):
            cubemap_to_erp(cube, 16, 32, rows=rows)


def test_c2e_grid_is_only_built_per_band_for_large_outputs(monkeypatch):
    """Above C2E_CACHE_PIXELS no whole-image grid is cached: every grid built is one band's."""
    built = []
    real = cubemap._c2e_band_grid

    def spy(height, width, face_size, device, dtype, rotation=None, rows=None):
        grid = real(height, width, face_size, device, dtype, rotation, rows)
        built.append(grid.shape[1])
        return grid

    monkeypatch.setattr(cubemap, "_c2e_band_grid", spy)
    monkeypatch.setattr(cubemap, "C2E_CACHE_PIXELS", 64 * 128 - 1)
    monkeypatch.setattr(cubemap, "STITCH_BAND_PIXELS", 10 * 128)
    cubemap_to_erp(torch.rand(1, 6, 1, 16, 16), 64, 128)
    assert built and max(built) == 10 and sum(built) == 64


# ------------------------------------------------------------------------------------------------
# ERP -> cube: 4-neighbour gathering instead of grid_sample on a padded float copy
# ------------------------------------------------------------------------------------------------
def _e2c_by_grid_sample(erp: torch.Tensor, fs: int, stitching: str, rotation=None) -> torch.Tensor:
    """The former implementation: grid_sample on the float panorama (circularly padded for exact stitching)."""
    from pager.geometry.reference_stitching import reference_e2c_grid

    b, c, h, w = erp.shape
    sdt = cubemap._sampling_dtype(erp.dtype) if erp.dtype.is_floating_point else torch.float32
    x = erp.to(sdt).reshape(1, b * c, h, w)
    if stitching == "exact":
        x = torch.cat((x[..., -1:], x, x[..., :1]), dim=-1)
        grid = cubemap._e2c_grid(h, w, fs, torch.device("cpu"), sdt, cubemap._rotation_key(rotation))
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:
        grid = reference_e2c_grid(h, w, fs, torch.device("cpu"), sdt)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(b, c, 6, fs, fs).transpose(1, 2)


@pytest.mark.parametrize("stitching,rotation", CASES, ids=["exact", "exact-rotated", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_e2c_gather_equals_grid_sample(stitching, rotation, dtype):
    g = torch.Generator().manual_seed(1)
    erp = (torch.rand(2, 3, 20, 40, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    ours = erp_to_cubemap(erp, 16, stitching=stitching, rotation=rotation)
    ref = _e2c_by_grid_sample(erp, 16, stitching, rotation)
    # the same formula evaluated by another kernel (which may fuse the un-normalisation into one FMA): sample
    # positions may differ by a rounding of the pixel coordinate (eps x up to W + 2, in x and y), times a value
    # step of at most 2 per pixel, plus a few roundings of the values (magnitude <= 1)
    eps = torch.finfo(dtype).eps
    assert (ours.double() - ref.double()).abs().max().item() <= 2 * 2 * eps * (40 + 2) + 8 * eps


@pytest.mark.parametrize("stitching", ["exact", "reference"])
def test_e2c_reads_uint8_and_channels_last_panoramas_in_place(stitching):
    """A uint8 panorama is sampled as its values (float32 faces, the 0..255 scale kept); channels-last and
    alpha-dropping views give the NCHW result; with ``uint8_to=(-1, 1)`` the faces are bit for bit those of the
    float panorama ``u8 / 255 * 2 - 1``."""
    g = torch.Generator().manual_seed(2)
    hwc = torch.randint(0, 256, (1, 24, 48, 4), generator=g, dtype=torch.uint8)
    view = hwc[..., :3].permute(0, 3, 1, 2)  # [1, 3, H, W] over an RGBA buffer: neither NCHW nor contiguous
    nchw = view.contiguous()
    faces = erp_to_cubemap(view, 16, stitching=stitching)
    assert faces.dtype == torch.float32
    assert torch.equal(faces, erp_to_cubemap(nchw, 16, stitching=stitching))
    # as above: coordinate rounding (eps x 50 px, x and y) times a step of up to 255, plus value roundings
    assert (faces - _e2c_by_grid_sample(nchw, 16, stitching)).abs().max().item() <= 255 * (2 * EPS32 * 50 + 8 * EPS32)
    as_float = erp_to_cubemap(nchw.float() / 255.0 * 2.0 - 1.0, 16, stitching=stitching)
    assert torch.equal(erp_to_cubemap(view, 16, stitching=stitching, uint8_to=(-1.0, 1.0)), as_float)
    with pytest.raises(ValueError, match="uint8_to"):
        erp_to_cubemap(nchw.float(), 16, stitching=stitching, uint8_to=(-1.0, 1.0))


# ------------------------------------------------------------------------------------------------
# Pager.predict: band by band == whole, every stitching, both modalities, seam blending
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny depth and a tiny normals checkpoint (reference normals frame) sharing one base."""
    from pager.model import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("memory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        dck = build_tiny_checkpoint(root / "d", "depth", face_size=32, seed=4)
        nck = build_tiny_checkpoint(root / "n", "normals", face_size=32, seed=5, base_dir=root / "d_base",
                                    normals_frame="reference")
    return root, dck, nck


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoints):
    from pager.model import Pager

    root, dck, nck = tiny_checkpoints
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        return Pager.from_pretrained({"depth": str(dck), "normals": str(nck)}, device="cpu")


@pytest.mark.parametrize("stitching,seam_blend", [("exact", False), ("reference", False), ("exact", True)],
                         ids=["exact", "reference", "exact-seam_blend"])
def test_predict_in_bands_equals_whole(tiny_model, stitching, seam_blend):
    g = torch.Generator().manual_seed(3)
    erp = torch.rand(1, 3, 40, 80, generator=g) * 2 - 1
    kwargs = dict(face_size=32, stitching=stitching, seam_blend=seam_blend, output_size=(36, 72))
    whole = tiny_model.predict(erp, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        _force_bands(mp, 5 * 72)  # 8 bands, the last one shorter
        banded = tiny_model.predict(erp, **kwargs)
    assert set(banded) == {"depth", "depth_values", "depth_mask", "normals", "normals_mask"} == set(whole)
    for key, value in whole.items():
        got = banded[key]
        assert got.shape == value.shape and got.dtype == value.dtype, key
        if value.dtype == torch.bool:
            assert torch.equal(got, value), key
        else:
            # per-pixel arithmetic on the same grids; seam blending's weights come from a 3x3 matrix product
            # whose rounding may depend on the batch of rows (1 ulp of float64, far below float32's)
            torch.testing.assert_close(got, value, rtol=4 * EPS32, atol=4 * EPS32, msg=key)
    n = banded["normals"]
    assert n.permute(0, 2, 3, 1).is_contiguous()  # channels-last storage: numpy [H, W, 3] without a copy


def test_predict_uint8_panorama_equals_float_faces(tiny_model, monkeypatch):
    """Pager.predict of a uint8 panorama feeds the encoder the faces of the float panorama rgb / 255 * 2 - 1,
    bit for bit (the same values interpolated in the same way)."""
    seen = []
    real = tiny_model.encode_rgb
    monkeypatch.setattr(tiny_model, "encode_rgb", lambda faces: seen.append(faces.clone()) or real(faces))
    u8 = torch.randint(0, 256, (1, 3, 32, 64), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    tiny_model.predict(u8, modalities=["depth"], face_size=32)
    tiny_model.predict(u8.float() / 255.0 * 2.0 - 1.0, modalities=["depth"], face_size=32)
    assert torch.equal(seen[0], seen[1])


def test_lower_median_is_nanmedian():
    g = torch.Generator().manual_seed(7)
    for n in (1, 2, 7, 100, 101):
        v = torch.randn(n, generator=g)
        v[torch.rand(n, generator=g) < 0.3] = float("nan")
        assert torch.equal(lower_median(v), torch.nanmedian(v)) or (torch.isnan(v).all() and torch.isnan(lower_median(v)))
    assert torch.isnan(lower_median(torch.full((4,), float("nan"))))


def test_seam_weights_in_bands_equal_whole():
    whole = erp_seam_weights(20, 40, SEAM_BLEND_ROTATION, dtype=torch.float64)
    parts = torch.cat([erp_seam_weights(20, 40, SEAM_BLEND_ROTATION, dtype=torch.float64, rows=(a, b))
                       for a, b in ((0, 3), (3, 11), (11, 20))])
    torch.testing.assert_close(parts, whole, rtol=0, atol=4 * torch.finfo(torch.float64).eps)
    depths = torch.rand(2, 1, 20, 40, dtype=torch.float64) + 0.5
    assert align_log_scale(depths)[0, 0].item() == 1.0


# ------------------------------------------------------------------------------------------------
# writers: band by band == whole
# ------------------------------------------------------------------------------------------------
def test_writers_in_bands_equal_whole(tmp_path, monkeypatch):
    import pager.export.files as files
    from pager.export import colorize_depth, load_depth_png16, normals_to_rgb, save_depth_png16

    g = np.random.default_rng(8)
    depth = (g.random((37, 74)) * 80).astype(np.float32)
    depth[3, 5], depth[9, 9] = np.nan, np.inf
    mask = g.random((37, 74)) > 0.1
    normals = g.normal(size=(37, 74, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[4, 4] = np.nan

    def run(tag):
        return (colorize_depth(depth, mask), colorize_depth(depth, mask, inverse=True), normals_to_rgb(normals, mask),
                normals_to_rgb(np.moveaxis(normals, -1, 0)),
                load_depth_png16(save_depth_png16(tmp_path / f"{tag}.png", depth, mask=mask, scale=1000.0)))

    whole = run("whole")
    monkeypatch.setattr(files, "BAND_PIXELS", 3 * 74)
    banded = run("banded")
    for a, b in zip(whole, banded):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="negative"):
        bad = depth.copy()
        bad[30, 1] = -2.0
        save_depth_png16(tmp_path / "neg.png", bad)
    assert not (tmp_path / "neg.png").exists()


# ------------------------------------------------------------------------------------------------
# the memory budget of pager predict
# ------------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from PIL import Image

    def rss_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    from pager.cli.main import main
    ck, out, width = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
    small = os.path.join(out, "small.png")
    Image.fromarray(np.full((64, 128, 3), 90, np.uint8)).save(small)
    # warm-up: imports, model loading, one prediction; then the peak is reset to the current RSS
    assert main(["predict", small, "--out", os.path.join(out, "warm"), "--checkpoint_path", *ck, "--no_progress"]) == 0
    h = width // 2
    x = np.linspace(0, 6.28, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 3.14, h, dtype=np.float32)[:, None]
    pano = np.stack([np.sin(x + y), np.cos(3 * x) * np.sin(y), np.sin(5 * y) + 0 * x], -1) * 100 + 128
    big = os.path.join(out, "big.png")
    Image.fromarray(pano.astype(np.uint8)).save(big, compress_level=1)
    del pano, x, y
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = rss_kib("VmRSS")
    assert main(["predict", big, "--out", os.path.join(out, "big"), "--checkpoint_path", *ck, "--no_progress"]) == 0
    print(json.dumps({"before_kib": before, "peak_kib": rss_kib("VmHWM")}))
""")


def test_predict_peak_memory_is_bounded_by_the_outputs(tiny_checkpoints, tmp_path, script_runner):
    """``pager predict`` (depth + normals, every output file) of a 3072x1536 panorama with a tiny checkpoint:
    the peak RSS above the warmed-up process stays under twice the arrays it returns and writes (depth and
    normals float32, masks, uint8 RGB: 22 bytes per pixel; the factor 2 leaves room for the writers' uint8/uint16
    images and PIL's copies of them, about 14 bytes per pixel) plus a fixed margin for one band of the
    stitching (STITCH_BAND_PIXELS pixels at up to 256 bytes each while its float64 grid is built) and of the
    writers (BAND_PIXELS pixels at up to 64 bytes). The former code held float64 cube->ERP grids of the whole
    image (about 150 bytes per pixel) and several float copies of the input and outputs: ~2.5x this bound."""
    from pager.export.files import BAND_PIXELS

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc (peak RSS reset)")
    root, ck, nck = tiny_checkpoints
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PAGER_CACHE_DIR=str(root / "cache"))
    width = 3072  # 4.7 M pixels: above C2E_CACHE_PIXELS, so stitched band by band like 8K panoramas
    # a process of its own (forked from the suite's script server: torch / diffusers already imported), which
    # measures its own peak above its warmed-up state
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    proc = script_runner.run(child, [f"{ck},{nck}", str(tmp_path), str(width)], cwd=tmp_path, env=env, timeout=600)
    if proc.returncode != 0 and "clear_refs" in proc.stderr:
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = (result["peak_kib"] - result["before_kib"]) * 1024
    pixels = width * (width // 2)
    outputs = 22 * pixels
    bound = 2 * outputs + 256 * cubemap.STITCH_BAND_PIXELS + 64 * BAND_PIXELS
    assert grown <= bound, f"peak RSS grew by {grown / 2**20:.0f} MiB > bound {bound / 2**20:.0f} MiB"
