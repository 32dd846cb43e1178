"""The original PaGeR project's resampling (``stitching="reference"``), written out as grids.

The original code resamples with pytorch360convert 0.2.3 (``e2c`` / ``c2e``, ``stack`` format). Its ERP->cube
positions are ours (see :mod:`pager.geometry.cubemap`), except at the longitude seam: it wraps the column
coordinate into ``[0, W)`` and then clamps it to ``W - 1`` (``grid_sample(..., align_corners=True,
padding_mode="border")``), so face pixels whose ray falls between the last column centre and the seam take the
last column instead of interpolating across +-180 degrees. Its cube->ERP is not the inverse of that grid:

- the ERP pixel ``(i, j)`` is read at longitude ``u_j = -pi + 2 pi j / (W - 1)`` and latitude
  ``v_i = pi/2 - pi i / (H - 1)`` (both ends included, not pixel centres);
- the face of every ERP pixel comes from a fixed table, not from the ray: column ``j`` belongs to side face
  ``((j - 3 (W//8)) mod W) // (W//4)`` (F, R, B, L), and the rows above
  ``round(H/2 - atan(cos(t_c)) H / pi)`` to U (the rows below its mirror image to D), with
  ``t_c = linspace(-pi, pi, W//4)[c] / 4`` for the column ``c = ((j - 3 (W//8)) mod W) mod (W//4)`` of a side;
- on that face, ``x = 0.5 tan(u - k pi/2)``, ``y = -0.5 tan(v) / cos(u - k pi/2)`` (side ``k``), or
  ``x = c sin u``, ``y = c cos u`` with ``c = 0.5 tan(pi/2 - v)`` (U) and ``x = c sin u``, ``y = -c cos u`` with
  ``c = 0.5 tan(pi/2 - |v|)`` (D); both are clamped to ``[-1/2, 1/2]`` and face pixel ``k`` is taken to sit at
  ``k / F - 1/2`` (edge-to-edge grids put it at ``k / (F - 1) - 1/2``: up to one pixel of shift);
- faces are padded by one pixel with their neighbours' border rows (our ``cube_pad`` reference table), the
  four corner pixels of every padded face being 0, and sampled bilinearly (``align_corners=True``).

This module reproduces those definitions with its own tensor code (no pytorch360convert at run time). Both grids
are evaluated in the sampling dtype (float32, or float64 for float64 data) in the original's order of
operations, so that its rounding (about 1e-3 pixel at 768-pixel faces in float32), its nearest-neighbour ties
and its table decisions are the same. ``W`` must be a multiple of 4 (pytorch360convert's table has ``4 (W//4)`` columns and fails
otherwise).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["reference_c2e_grid", "reference_e2c_grid", "reference_erp_to_cubemap", "reference_cubemap_to_erp",
           "pad_faces_reference", "check_reference_width"]


def check_reference_width(width: int) -> None:
    """``ValueError`` unless ``width`` is a multiple of 4 (the original's cube->ERP table needs it)."""
    if width % 4:
        raise ValueError(
            f"stitching='reference' needs an ERP width that is a multiple of 4 (the original's cube->ERP face table "
            f"has W//4 columns per side face), got width {width}; use stitching='exact' or another output size"
        )


@functools.lru_cache(maxsize=32)
def _e2c_grid_cached(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # pytorch360convert's cube points in its frame (x right, y up, z forward), evaluated in ``dtype`` in its order
    # of operations (the face grid is linspace(-1/2, 1/2, F); flips are flips of that grid, not negations).
    rng = torch.linspace(-0.5, 0.5, face_size, dtype=dtype)
    x, y = torch.meshgrid(rng, -rng, indexing="xy")  # [F, F]: x[r, c] = rng[c], y[r, c] = -rng[r]
    xf, yf = torch.flip(x, [1]), torch.flip(y, [0])
    half = torch.full_like(x, 0.5)
    faces = [
        (x, y, half),  # F
        (half, y, xf),  # R
        (xf, y, -half),  # B
        (-half, y, x),  # L
        (x, half, yf),  # U
        (x, -half, y),  # D
    ]
    px = torch.stack([f[0] for f in faces])  # [6, F, F]
    py = torch.stack([f[1] for f in faces])
    pz = torch.stack([f[2] for f in faces])
    u = torch.atan2(px, pz)
    v = torch.atan2(py, torch.sqrt(px ** 2 + pz ** 2))
    col = (u / (2 * math.pi) + 0.5) * width - 0.5
    row = (-v / math.pi + 0.5) * height - 0.5
    # wrapped into [0, W) then clamped to the last column (align_corners=True, border): no interpolation across
    # +-180 degrees; rows clamped to [0, H - 1]
    gx = (torch.remainder(col, width) / (width - 1)) * 2 - 1
    gy = (row.clamp(0, height - 1) / max(height - 1, 1)) * 2 - 1
    return torch.stack((gx, gy), dim=-1).reshape(1, 6 * face_size, face_size, 2).to(device).contiguous()


def reference_e2c_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``grid_sample`` grid ``[1, 6F, F, 2]`` (``align_corners=True``, faces stacked vertically) of the original's
    ERP->cube into the unpadded ERP ``[H, W]``. Cached per arguments; do not modify it in place."""
    if width < 2:
        raise ValueError(f"stitching='reference' needs an ERP width >= 2, got {width}")
    return _e2c_grid_cached(int(height), int(width), int(face_size), device, dtype)


def _nearest_index(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat indices of ``grid_sample(mode="nearest", align_corners=True)`` for a grid ``[1, ..., 2]`` into
    ``[height, width]``: its own un-normalisation in the grid's dtype and round-half-to-even."""
    gx = torch.round((grid[0, ..., 0] + 1) / 2 * (width - 1)).long().clamp(0, width - 1)
    gy = torch.round((grid[0, ..., 1] + 1) / 2 * (height - 1)).long().clamp(0, height - 1)
    return (gy * width + gx).reshape(-1)


def reference_erp_to_cubemap(erp: torch.Tensor, face_size: int, mode: str, sampling_dtype: torch.dtype,
                             uint8_to: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """The original's ERP->cube of ``erp [B, C, H, W]`` -> ``[B, 6, C, F, F]`` (bilinear or nearest). Bilinear
    gathers the 4 neighbours of every face pixel from ``erp`` as it is (no whole-panorama float copy; integer
    panoramas are sampled as float32 values and returned as float32; ``uint8_to`` as in
    :func:`pager.geometry.erp_to_cubemap`)."""
    from pager.geometry.cubemap import _bilinear_gather

    b, c, h, w = erp.shape
    grid = reference_e2c_grid(h, w, face_size, erp.device, sampling_dtype)
    if mode == "nearest":
        out = erp.reshape(b * c, h * w).index_select(1, _nearest_index(grid, h, w))
    else:
        out = _bilinear_gather(erp, grid, align_corners=True, wrap=False, uint8_to=uint8_to)
        if erp.dtype.is_floating_point:
            out = out.to(erp.dtype)
    return out.reshape(b, c, 6, face_size, face_size).transpose(1, 2).contiguous()


def _face_table(height: int, width: int, dtype: torch.dtype, rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Face index ``[r1 - r0, W]`` (long, 0-5 = F, R, B, L, U, D) of the ERP pixels of rows ``rows = (r0, r1)``
    (default: all) in the original's table."""
    r0, r1 = (0, height) if rows is None else rows
    q = width // 4
    shift = 3 * (width // 8)
    cols = torch.arange(width)
    within = torch.remainder(cols - shift, width)  # position in the un-rolled table
    face = (within // q).clamp(max=3).view(1, width).expand(r1 - r0, width).clone()
    t = torch.linspace(-math.pi, math.pi, q, dtype=dtype) / 4
    top_rows = torch.round(height / 2 - torch.atan(torch.cos(t)) * height / math.pi).to(torch.long)  # [q]
    limit = top_rows[torch.remainder(within, q)].view(1, width)  # [1, W]
    i = torch.arange(r0, r1).view(r1 - r0, 1)
    face[i < limit] = 4  # the rows above the limit
    face[(height - 1 - i) < limit] = 5  # their mirror image (the table flipped upside down)
    return face


def _c2e_band_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
                   rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    # Evaluated in ``dtype`` in the original's order of operations, so that its float32 rounding (about 1e-3
    # pixel at 768-pixel faces) and its nearest-neighbour ties are the same. Per pixel only: a band of rows
    # gets the rows of the whole grid.
    r0, r1 = (0, height) if rows is None else rows
    n = r1 - r0
    face = _face_table(height, width, dtype, rows)
    u = torch.linspace(-math.pi, math.pi, width, dtype=dtype).view(1, width).expand(n, width)
    v = (torch.linspace(math.pi, -math.pi, height, dtype=dtype) / 2)[r0:r1].view(n, 1).expand(n, width)
    x = torch.zeros(n, width, dtype=dtype)
    y = torch.zeros(n, width, dtype=dtype)
    for k in range(4):
        m = face == k
        a = u[m] - math.pi * k / 2
        x[m] = 0.5 * torch.tan(a)
        y[m] = -0.5 * torch.tan(v[m]) / torch.cos(a)
    m = face == 4
    c = 0.5 * torch.tan(math.pi / 2 - v[m])
    x[m], y[m] = c * torch.sin(u[m]), c * torch.cos(u[m])
    m = face == 5
    c = 0.5 * torch.tan(math.pi / 2 - torch.abs(v[m]))
    x[m], y[m] = c * torch.sin(u[m]), -c * torch.cos(u[m])
    fp = face_size + 2  # padded face
    col = (torch.clamp(x, -0.5, 0.5) + 0.5) * face_size + 1  # in the padded face
    row = (torch.clamp(y, -0.5, 0.5) + 0.5) * face_size + 1
    col = col + face.to(dtype) * fp  # in the strip of padded faces
    gx = (torch.remainder(col, 6 * fp) / (6 * fp - 1)) * 2 - 1  # align_corners=True
    gy = (row.clamp(0, fp - 1) / (fp - 1)) * 2 - 1
    return torch.stack((gx, gy), dim=-1).unsqueeze(0).to(device).contiguous()


@functools.lru_cache(maxsize=32)
def _c2e_grid_cached(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    from pager.geometry.cubemap import STITCH_BAND_PIXELS, stitch_bands

    grid = torch.empty((1, height, width, 2), dtype=dtype, device=device)
    for r0, r1 in stitch_bands(height, width, STITCH_BAND_PIXELS):  # no whole-image intermediates
        grid[:, r0:r1] = _c2e_band_grid(height, width, face_size, device, dtype, (r0, r1))
    return grid


def reference_c2e_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
                       rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """``grid_sample`` grid ``[1, H, W, 2]`` (``align_corners=True``) of the original's cube->ERP into the strip
    of the six one-pixel-padded faces laid side by side ``[F + 2, 6 (F + 2)]`` (see :func:`pad_faces_reference`).
    The whole grid is cached per arguments (do not modify it in place); ``rows = (r0, r1)``: only ERP rows
    ``r0 <= i < r1`` (``[1, r1 - r0, W, 2]``, the same values, not cached)."""
    check_reference_width(width)
    if height < 2:
        raise ValueError(f"stitching='reference' needs an ERP height >= 2, got {height}")
    if rows is None or tuple(rows) == (0, height):
        return _c2e_grid_cached(int(height), int(width), int(face_size), device, dtype)
    r0, r1 = int(rows[0]), int(rows[1])
    if not 0 <= r0 < r1 <= height:
        raise ValueError(f"rows must satisfy 0 <= first < end <= height ({height}), got {rows!r}")
    return _c2e_band_grid(int(height), int(width), int(face_size), device, dtype, (r0, r1))


def pad_faces_reference(cube: torch.Tensor) -> torch.Tensor:
    """One-pixel neighbour padding of the original's cube->ERP, as a strip: ``[B, 6, C, F, F] -> [B, C, F+2, 6(F+2)]``.

    Edges hold the neighbouring faces' border rows (:func:`pager.geometry.cube_pad` in ``reference`` mode) and the
    four corner pixels of every padded face are 0. Any dtype (integers and bools are padded exactly).
    """
    from pager.geometry.cube_padding import cube_pad

    b, six, c, fs, _ = cube.shape
    src = cube if cube.dtype.is_floating_point else cube.to(torch.float64)
    padded = cube_pad(src.reshape(b * six, c, fs, fs), 1, mode="reference")  # [B*6, C, F+2, F+2]
    padded = padded.clone()
    for r in (0, -1):
        for col in (0, -1):
            padded[:, :, r, col] = 0
    strip = padded.view(b, six, c, fs + 2, fs + 2).permute(0, 2, 3, 1, 4).reshape(b, c, fs + 2, six * (fs + 2))
    return strip if cube.dtype.is_floating_point else strip.to(cube.dtype)


def reference_cubemap_to_erp(cube: torch.Tensor, height: int, width: int, mode: str, sampling_dtype: torch.dtype) -> torch.Tensor:
    """The original's cube->ERP of ``cube [B, 6, C, F, F]`` -> ``[B, C, H, W]`` (bilinear or nearest; sampled in
    ``sampling_dtype``, float64 for float64 cubes and float32 otherwise). Same as
    :func:`pager.geometry.cubemap_to_erp` with ``stitching="reference"`` (large outputs band by band)."""
    from pager.geometry.cubemap import _sampling_dtype, cubemap_to_erp

    if sampling_dtype != _sampling_dtype(cube.dtype):
        raise ValueError(f"sampling_dtype must be {_sampling_dtype(cube.dtype)} for a {cube.dtype} cube, got {sampling_dtype}")
    return cubemap_to_erp(cube, height, width, mode=mode, stitching="reference")
