"""ERP <-> cubemap resampling (faces F, R, B, L, U, D; pytorch360convert ``stack`` orientation).

Face pixel ``(r, c)`` of a face of size ``F`` lies at face coordinates ``a = -1/2 + c/(F-1)``,
``b = 1/2 - r/(F-1)`` (edge to edge), i.e. at the 3-D point ``n/2 + a*right + b*up`` of the unit cube
with the per-face frames below (derived from the package docstring). ``erp_to_cubemap`` samples the
ERP at exactly pytorch360convert's positions; ``cubemap_to_erp`` is the exact inverse of that grid
(an ERP pixel centre is projected onto its face and the face grid is interpolated there), so that a
round trip only costs two interpolations. pytorch360convert's own ``c2e`` is *not* the inverse of its
``e2c`` (it maps face pixel ``k`` to ``k/F - 1/2`` and the ERP row/column ``k`` to ``k/(H-1)``,
``k/(W-1)``); its output therefore differs from ours by up to a pixel's worth of interpolation.

Sampling grids (float32 for float16/bfloat16/float32 data, float64 for float64 data) and nearest
indices are computed in float64 per band of ERP rows (per-pixel arithmetic, so a band's grid is those rows of the
whole grid) and cast; whole-image grids of outputs up to :data:`C2E_CACHE_PIXELS` pixels and every ERP->cube grid
are cached per (sizes, device, dtype). Larger panoramas are resampled band by band straight into the output
(:data:`STITCH_BAND_PIXELS` pixels per band), and ERP->cube sampling gathers the 4 neighbours of each face pixel
from the panorama as it is (uint8 images included), so memory follows the outputs, not the float64 grids.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from pager.geometry.caching import cached_tensors
import torch.nn.functional as F

from pager.geometry.sphere import DeviceLike, _normalize_device, _resolve_dtype, directions_to_angles

__all__ = [
    "FACE_NAMES",
    "STITCHING_MODES",
    "check_stitching",
    "erp_to_cubemap",
    "cubemap_to_erp",
    "cubemap_directions",
    "cubemap_angles",
    "uv_positional_encoding",
    "stitch_bands",
    "STITCH_BAND_PIXELS",
]

FACE_NAMES: Tuple[str, ...] = ("F", "R", "B", "L", "U", "D")

# Per face: (normal n, right r, up u) in the world frame (x forward, y up, z right); the face point of
# face coordinates (a, b) is n/2 + a*r + b*u. From the package docstring:
# F: (1/2, b, a)  R: (-a, b, 1/2)  B: (-1/2, b, -a)  L: (a, b, -1/2)  U: (-b, 1/2, a)  D: (b, -1/2, a)
_FACE_FRAMES = torch.tensor(
    [
        [[1, 0, 0], [0, 0, 1], [0, 1, 0]],  # F
        [[0, 0, 1], [-1, 0, 0], [0, 1, 0]],  # R
        [[-1, 0, 0], [0, 0, -1], [0, 1, 0]],  # B
        [[0, 0, -1], [1, 0, 0], [0, 1, 0]],  # L
        [[0, 1, 0], [0, 0, 1], [-1, 0, 0]],  # U
        [[0, -1, 0], [0, 0, 1], [1, 0, 0]],  # D
    ],
    dtype=torch.float64,
)  # [6 faces, (n, r, u), xyz]

_MODES = ("bilinear", "nearest")

#: ``"exact"``: our resampling (cube->ERP is the exact inverse of ERP->cube, and ERP->cube interpolates across
#: the +-180 degree seam). ``"reference"``: the original PaGeR project's (pytorch360convert 0.2.3 ``e2c``/``c2e``;
#: see :mod:`pager.geometry.reference_stitching`), for reproducing its published numbers.
STITCHING_MODES: Tuple[str, ...] = ("exact", "reference")


def check_stitching(stitching: str, width: Optional[int] = None) -> str:
    """Validate a ``stitching`` name (and, for ``"reference"``, an ERP ``width``: a multiple of 4); returns it."""
    if stitching not in STITCHING_MODES:
        raise ValueError(f"stitching must be one of {STITCHING_MODES}, got {stitching!r}")
    if stitching == "reference" and width is not None:
        from pager.geometry.reference_stitching import check_reference_width

        check_reference_width(int(width))
    return stitching


def _check_face_size(face_size: int, name: str = "face_size") -> None:
    if not isinstance(face_size, int) or face_size < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {face_size!r}")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _sampling_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _face_points64(face_size: int) -> torch.Tensor:
    """Cube-surface points of all face pixels, float64 ``[6, 3, F, F]`` (not normalised)."""
    k = torch.arange(face_size, dtype=torch.float64) / (face_size - 1)
    a = (k - 0.5).view(1, face_size)  # columns, left to right
    b = (0.5 - k).view(face_size, 1)  # rows, top to bottom
    n, r, u = _FACE_FRAMES[:, 0], _FACE_FRAMES[:, 1], _FACE_FRAMES[:, 2]  # [6, 3]
    pts = 0.5 * n[:, :, None, None] + a[None, None] * r[:, :, None, None] + b[None, None] * u[:, :, None, None]
    return pts


@cached_tensors(maxsize=32)
def _cube_dirs_cached(face_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    pts = _face_points64(face_size)
    dirs = pts / pts.norm(dim=1, keepdim=True)
    return dirs.to(dtype).to(device).contiguous()


def cubemap_directions(face_size: int, device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Unit world-frame ray of every cubemap pixel: ``[6, 3, F, F]`` (faces F, R, B, L, U, D)."""
    _check_face_size(face_size)
    return _cube_dirs_cached(face_size, _normalize_device(device), _resolve_dtype(dtype)).clone()


def cubemap_angles(
    face_size: int, device: DeviceLike = None, dtype: Optional[torch.dtype] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Longitude ``theta`` and latitude ``phi`` (radians, our convention: phi > 0 up) of every cubemap
    pixel: two ``[6, F, F]`` tensors, computed in float64 then cast."""
    _check_face_size(face_size)
    theta, phi = directions_to_angles(_face_points64(face_size), dim=1)
    dev, dt = _normalize_device(device), _resolve_dtype(dtype)
    return theta.to(dt).to(dev), phi.to(dt).to(dev)


def uv_positional_encoding(face_size: int, device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """ERP coordinates of every cubemap pixel as 2 channels: ``[6, 2, F, F]`` in ``[-1, 1]``.

    ``u = theta / pi`` (-1 at the left edge of the ERP, +1 at the right edge) and
    ``v = -phi / (pi/2)`` (-1 at the top, +1 at the bottom), i.e. the ERP image whose pixel
    ``(i, j)`` holds ``(2(j+0.5)/W - 1, 2(i+0.5)/H - 1)`` resampled onto the cube, which is how the
    reference builds its ``uv`` encoding (``e2c`` of that image). The closed form equals that resampling
    up to float error wherever bilinear interpolation of the linear ramps is exact, i.e. away from the
    longitude seam and the outermost half ERP row at the poles (always the case for even face sizes such
    as the 96/48/24/12 latent grids; for odd sizes the back-face centre column sits exactly on the seam,
    where we return ``u = -1``, and the U/D centre pixels on the poles, ``v = -1``/``+1``).
    """
    _check_face_size(face_size)
    theta, phi = directions_to_angles(_face_points64(face_size), dim=1)
    uv = torch.stack((theta / math.pi, -phi / (math.pi / 2.0)), dim=1)
    return uv.to(_resolve_dtype(dtype)).to(_normalize_device(device)).contiguous()


# --------------------------------------------------------------------------------------------------
# ERP -> cubemap
# --------------------------------------------------------------------------------------------------
RotationKey = Optional[Tuple[float, ...]]


def _rotation_key(rotation: Optional[torch.Tensor]) -> RotationKey:
    """A hashable float64 copy of a ``[3, 3]`` rotation (cache key), None for the identity / None."""
    if rotation is None:
        return None
    r = torch.as_tensor(rotation).detach().to("cpu", torch.float64)
    if r.shape != (3, 3):
        raise ValueError(f"rotation must be a [3, 3] matrix, got shape {tuple(r.shape)}")
    if not torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6) or torch.det(r) < 0:
        raise ValueError("rotation must be a proper rotation matrix (orthonormal, determinant +1)")
    if torch.equal(r, torch.eye(3, dtype=torch.float64)):
        return None
    return tuple(float(v) for v in r.reshape(-1))


def _rotation64(key: RotationKey) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64) if key is None else torch.tensor(key, dtype=torch.float64).view(3, 3)


@cached_tensors(maxsize=2)  # float64 intermediates: only the final grids/indices are kept long
def _e2c_pixel_coords(height: int, width: int, face_size: int, rotation: RotationKey = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Float64 ERP pixel coordinates (x in [-0.5, W-0.5], y in [-0.5, H-0.5]) of every face pixel,
    each ``[6*F, F]`` (faces stacked vertically), exactly pytorch360convert's ``e2c`` positions (for a
    rotated cube, of the world directions ``R d`` of the cube's rays ``d``)."""
    pts = _face_points64(face_size)
    if rotation is not None:
        pts = torch.einsum("ij,fjhw->fihw", _rotation64(rotation), pts)
    theta, phi = directions_to_angles(pts, dim=1)  # [6, F, F]
    x = (theta / (2.0 * math.pi) + 0.5) * width - 0.5
    y = (0.5 - phi / math.pi) * height - 0.5
    return x.reshape(6 * face_size, face_size), y.reshape(6 * face_size, face_size)


@cached_tensors(maxsize=32)
def _e2c_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
              rotation: RotationKey = None) -> torch.Tensor:
    """grid_sample grid ``[1, 6F, F, 2]`` (align_corners=False) into the ERP padded by one column on
    each side (circular), so that the longitude seam interpolates across the wrap."""
    x, y = _e2c_pixel_coords(height, width, face_size, rotation)
    gx = (2.0 * (x + 1.0) + 1.0) / (width + 2) - 1.0
    gy = (2.0 * y + 1.0) / height - 1.0  # rows beyond the outermost centres are clamped (border)
    return torch.stack((gx, gy), dim=-1).unsqueeze(0).to(dtype).to(device).contiguous()


@cached_tensors(maxsize=32)
def _e2c_nearest_index(height: int, width: int, face_size: int, device: torch.device, rotation: RotationKey = None) -> torch.Tensor:
    x, y = _e2c_pixel_coords(height, width, face_size, rotation)
    col = torch.remainder(torch.round(x), width).long()
    row = torch.round(y).clamp(0, height - 1).long()
    return (row * width + col).reshape(-1).to(device)


def _check_erp_input(erp: torch.Tensor) -> None:
    if not isinstance(erp, torch.Tensor) or erp.dim() != 4:
        shape = tuple(erp.shape) if isinstance(erp, torch.Tensor) else type(erp).__name__
        raise ValueError(f"erp must be a tensor [B, C, H, W], got {shape}")
    if erp.shape[-2] < 1 or erp.shape[-1] < 2:
        raise ValueError(f"erp must have H >= 1 and W >= 2, got {tuple(erp.shape)}")


def _bilinear_gather(erp: torch.Tensor, grid: torch.Tensor, align_corners: bool, wrap: bool,
                     uint8_to: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """``F.grid_sample(erp, grid, "bilinear", padding_mode="border", align_corners)`` for a small grid, reading
    ``erp [B, C, H, W]`` in place: only the 4 neighbours of every sample are gathered (any dtype, any strides
    that flatten ``H, W``: NCHW or channels-last) and converted to the grid's dtype, so a large panorama is
    never copied, padded or converted as a whole. ``grid [1, ..., 2]`` as grid_sample's (x, y in [-1, 1]);
    ``wrap``: the grid addresses the ERP padded circularly by one column on each side (``W + 2`` columns).
    Returns ``[B, C, N]`` (``N`` grid points) in the grid's dtype; same formula as grid_sample (un-normalise,
    clamp to the border, floor, weights ``(1 - wx)(1 - wy)``, ...), equal to it up to float rounding.
    ``uint8_to = (lo, hi)``: gathered values ``v`` become ``(v / 255) * (hi - lo) + lo`` before interpolation."""
    b, c, h, w = erp.shape
    gx, gy = grid[0, ..., 0].reshape(-1), grid[0, ..., 1].reshape(-1)
    wp = w + 2 if wrap else w
    if align_corners:  # un-normalised as grid_sample's CPU kernel does: (g + 1) * scale - shift
        ix, iy = (gx + 1) * ((wp - 1) / 2), (gy + 1) * ((h - 1) / 2)
    else:
        ix, iy = (gx + 1) * (wp / 2) - 0.5, (gy + 1) * (h / 2) - 0.5
    ix, iy = ix.clamp(0, wp - 1), iy.clamp(0, h - 1)
    x0, y0 = ix.floor(), iy.floor()
    wx, wy = ix - x0, iy - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=wp - 1), (y0 + 1).clamp(max=h - 1)  # weight 0 where clamped
    if wrap:  # padded column p is column (p - 1) mod W
        x0, x1 = torch.remainder(x0 - 1, w), torch.remainder(x1 - 1, w)
    idx = torch.stack((y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1)).reshape(-1)  # [4N]
    pixels = erp.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view for NCHW and channels-last layouts
    v = pixels.index_select(1, idx.to(erp.device)).to(grid.dtype).view(b, 4, -1, c)  # [B, 4, N, C]
    if uint8_to is not None:
        v = (v / 255.0) * (uint8_to[1] - uint8_to[0]) + uint8_to[0]
    wts = torch.stack(((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy)).view(1, 4, -1, 1)
    out = v[:, 0] * wts[:, 0] + v[:, 1] * wts[:, 1] + v[:, 2] * wts[:, 2] + v[:, 3] * wts[:, 3]
    return out.permute(0, 2, 1)


def erp_to_cubemap(erp: torch.Tensor, face_size: int, mode: str = "bilinear", stitching: str = "exact",
                   rotation: Optional[torch.Tensor] = None, uint8_to: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """Resample an ERP panorama onto the 6 cube faces: ``[B, C, H, W] -> [B, 6, C, F, F]``.

    Sampling positions are exactly pytorch360convert's ``e2c`` (``stack`` format). ``stitching="exact"``
    interpolates across the longitude seam (pytorch360convert clamps there); ``"reference"`` clamps like it
    (the original PaGeR code, see :mod:`pager.geometry.reference_stitching`; it matters only next to the
    seam). ``mode="bilinear"``: float tensors (float16/bfloat16 are sampled in float32 and returned in their
    dtype; differentiable) or integer ones such as uint8 images, sampled as float32 values (not rescaled) and
    returned as float32; ``"nearest"``: any dtype, bool and integer masks stay exact. Bilinear sampling gathers
    the 4 neighbours of every face pixel from ``erp`` as it is (NCHW or channels-last), so a large panorama is
    never copied, padded or converted to float whole: memory is that of the faces. ``uint8_to = (lo, hi)``
    (bilinear, uint8 ``erp``, e.g. ``(-1, 1)`` for the model's input): every value read is first mapped to
    ``(v / 255) * (hi - lo) + lo`` in float32, so the faces are those of the float panorama mapped the same way
    (bit for bit the values it would hold), without ever building it. Raises ``ValueError`` for a bad shape,
    face size, mode, stitching, rotation or ``uint8_to``.

    ``rotation`` (``stitching="exact"`` only): a ``[3, 3]`` rotation ``R`` of the cube
    (:func:`pager.geometry.seam_blend.rotation_matrix`): the cube pixel whose ray is ``d`` in the cube's own
    frame looks at the world direction ``R d``, i.e. the faces are those of the panorama rotated by ``R^T``.
    Vectors measured on such a cube (normals) are in the cube's frame; ``R v`` brings them to the world frame.
    None: the identity.
    """
    _check_erp_input(erp)
    _check_face_size(face_size)
    _check_mode(mode)
    check_stitching(stitching)
    rot = _rotation_key(rotation)
    if rot is not None and stitching != "exact":
        raise ValueError("a rotated cube (rotation=...) needs stitching='exact'")
    if mode == "bilinear" and erp.dtype == torch.bool:
        raise ValueError("mode='bilinear' needs a numeric erp, got bool; use mode='nearest' for masks")
    if uint8_to is not None and (erp.dtype != torch.uint8 or mode != "bilinear" or len(uint8_to) != 2):
        raise ValueError(f"uint8_to=(lo, hi) maps a uint8 erp in bilinear mode, got {erp.dtype}, mode={mode!r}, "
                         f"uint8_to={uint8_to!r}")
    b, c, h, w = erp.shape
    device = _normalize_device(erp.device)
    erp = erp.to(device)
    if stitching == "reference":
        from pager.geometry.reference_stitching import reference_erp_to_cubemap

        return reference_erp_to_cubemap(erp, face_size, mode, _sampling_dtype(erp.dtype), uint8_to=uint8_to)
    if mode == "nearest":
        idx = _e2c_nearest_index(h, w, face_size, device, rot)
        out = erp.reshape(b * c, h * w).index_select(1, idx)
        return out.reshape(b, c, 6, face_size, face_size).transpose(1, 2).contiguous()
    sdt = _sampling_dtype(erp.dtype)
    grid = _e2c_grid(h, w, face_size, device, sdt, rot)
    out = _bilinear_gather(erp, grid, align_corners=False, wrap=True, uint8_to=uint8_to)  # circular longitude padding
    if erp.dtype.is_floating_point:
        out = out.to(erp.dtype)
    return out.reshape(b, c, 6, face_size, face_size).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# cubemap -> ERP
# --------------------------------------------------------------------------------------------------
#: ERP pixels resampled per band by :func:`cubemap_to_erp` (and per band of the per-pixel work that follows it in
#: ``Pager.predict``): the float64 grid of a band (about 150 bytes per pixel while it is built) is what bounds the
#: memory, not the output size. Grids of outputs up to :data:`C2E_CACHE_PIXELS` pixels are built whole and cached.
STITCH_BAND_PIXELS = 1 << 19
#: largest ERP (pixels) whose cube->ERP grid is cached whole (training and evaluation sizes); larger outputs are
#: resampled band by band with grids built for each band and dropped
C2E_CACHE_PIXELS = 1 << 22


def stitch_bands(height: int, width: int, band_pixels: Optional[int] = None) -> List[Tuple[int, int]]:
    """Row bands ``[(r0, r1), ...]`` covering an ``height x width`` ERP with about ``band_pixels`` pixels each
    (default :data:`STITCH_BAND_PIXELS`, read at call time; at least one row per band)."""
    rows = max(1, int(band_pixels or STITCH_BAND_PIXELS) // max(int(width), 1))
    return [(r, min(int(height), r + rows)) for r in range(0, int(height), rows)]


def _check_rows(rows: Optional[Tuple[int, int]], height: int) -> Tuple[int, int]:
    if rows is None:
        return 0, height
    try:
        r0, r1 = (int(r) for r in rows)
    except (TypeError, ValueError):
        raise ValueError(f"rows must be a pair (first, end) of ERP row indices, got {rows!r}") from None
    if not 0 <= r0 < r1 <= height:
        raise ValueError(f"rows must satisfy 0 <= first < end <= height ({height}), got {rows!r}")
    return r0, r1


def _axis_sign(vectors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Axis index and sign of axis-aligned unit vectors ``[..., 3]`` (the face frames): ``v = sign * e_axis``."""
    axis = vectors.abs().argmax(dim=-1)
    return axis, vectors.gather(-1, axis[..., None])[..., 0]


def _c2e_face_coords(height: int, width: int, face_size: int, rotation: RotationKey = None,
                     rows: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every ERP pixel centre of rows ``rows = (r0, r1)`` (default: all): face index ``[r1 - r0, W]`` (long)
    and continuous face pixel coordinates (column, row) in ``[0, F-1]`` (float64), the exact inverse of the ``e2c``
    face grid (for a rotated cube: of the ray ``R^T d`` in the cube's frame).

    Pure per-pixel arithmetic (trigonometry of the 1-D longitude/latitude vectors, products, the face of the largest
    component), so a band of rows gets the values of the whole image's grid at those rows; float64 arrays of the
    band only (about 100 bytes per pixel)."""
    r0, r1 = _check_rows(rows, height)
    j = torch.arange(width, dtype=torch.float64)
    i = torch.arange(r0, r1, dtype=torch.float64)
    theta = 2.0 * math.pi * (j + 0.5) / width - math.pi  # as pager.geometry.sphere.erp_angles
    phi = math.pi / 2.0 - math.pi * (i + 0.5) / height
    cos_phi, sin_phi = torch.cos(phi).view(-1, 1), torch.sin(phi).view(-1, 1)
    comp = torch.stack((cos_phi * torch.cos(theta).view(1, -1), sin_phi.expand(-1, width),
                        cos_phi * torch.sin(theta).view(1, -1)))  # [3, h, W]: the unit ray (x, y, z)
    if rotation is not None:
        r = _rotation64(rotation)  # (R^T d)_k = sum_i R[i, k] d_i
        comp = torch.stack([r[0, k] * comp[0] + r[1, k] * comp[1] + r[2, k] * comp[2] for k in range(3)])
    n_axis, n_sign = _axis_sign(_FACE_FRAMES[:, 0])
    r_axis, r_sign = _axis_sign(_FACE_FRAMES[:, 1])
    u_axis, u_sign = _axis_sign(_FACE_FRAMES[:, 2])
    proj = comp[n_axis] * n_sign.view(6, 1, 1)  # [6, h, W]: d . n_f
    dn, face = proj.max(dim=0)  # the face whose axis is closest to the ray (first of equal ones)
    del proj
    t = 0.5 / dn  # ray parameter to hit the face plane
    a = t * (comp.gather(0, r_axis[face][None])[0] * r_sign[face])  # d . r_f, exact: a signed component
    bcoord = t * (comp.gather(0, u_axis[face][None])[0] * u_sign[face])
    col = ((a + 0.5) * (face_size - 1)).clamp(0, face_size - 1)
    row = ((0.5 - bcoord) * (face_size - 1)).clamp(0, face_size - 1)
    return face, col, row


def _c2e_band_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
                   rotation: RotationKey = None, rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """grid_sample grid ``[1, r1 - r0, W, 2]`` (align_corners=False) of ERP rows ``rows`` (default: all) into the
    vertical strip of the 6 faces ``[6*F, F]``; not cached.

    With the edge-to-edge face grid every ray lands inside ``[0, F-1]`` of its face, so no padding is needed;
    rows are kept ``margin`` pixels inside the face so that rounding of the grid in ``dtype`` never gives
    weight to the unrelated face next in the strip (columns are clamped by ``padding_mode="border"``).
    """
    face, col, row = _c2e_face_coords(height, width, face_size, rotation, rows)
    margin = min(16.0 * torch.finfo(dtype).eps * 6 * face_size, 0.01)  # pixels
    row = row.clamp(margin, face_size - 1 - margin)
    y = face.to(torch.float64) * face_size + row
    gx = (2.0 * col + 1.0) / face_size - 1.0
    gy = (2.0 * y + 1.0) / (6 * face_size) - 1.0
    return torch.stack((gx, gy), dim=-1).unsqueeze(0).to(dtype).to(device).contiguous()


@cached_tensors(maxsize=32)
def _c2e_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
              rotation: RotationKey = None) -> torch.Tensor:
    """:func:`_c2e_band_grid` of the whole ERP, built band by band (no whole-image float64 intermediates) and
    cached (used up to :data:`C2E_CACHE_PIXELS` pixels: 8 bytes per pixel in float32)."""
    grid = torch.empty((1, height, width, 2), dtype=dtype, device=device)
    for r0, r1 in stitch_bands(height, width, STITCH_BAND_PIXELS):
        grid[:, r0:r1] = _c2e_band_grid(height, width, face_size, device, dtype, rotation, (r0, r1))
    return grid


def _c2e_nearest_band(height: int, width: int, face_size: int, device: torch.device, rotation: RotationKey = None,
                      rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    face, col, row = _c2e_face_coords(height, width, face_size, rotation, rows)
    c = torch.round(col).long()
    r = torch.round(row).long()
    return (face * face_size * face_size + r * face_size + c).reshape(-1).to(device)


@cached_tensors(maxsize=32)
def _c2e_nearest_index(height: int, width: int, face_size: int, device: torch.device, rotation: RotationKey = None) -> torch.Tensor:
    return torch.cat([_c2e_nearest_band(height, width, face_size, device, rotation, rows)
                      for rows in stitch_bands(height, width, STITCH_BAND_PIXELS)])


def cubemap_to_erp(cube: torch.Tensor, height: int, width: int, mode: str = "bilinear",
                   stitching: str = "exact", rotation: Optional[torch.Tensor] = None,
                   rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resample a cubemap onto an ERP panorama: ``[B, 6, C, F, F] -> [B, C, H, W]``.

    ``stitching="exact"`` (default): the exact inverse of :func:`erp_to_cubemap`'s grid: each ERP pixel centre
    is projected onto the face its ray hits and the face grid is interpolated there (one ``grid_sample`` over
    the faces stacked in a strip; every sample stays inside its own face). ``"reference"``: the original PaGeR
    code's cube->ERP (pytorch360convert 0.2.3 ``c2e``: its own ERP grid, face table and one-pixel padding with
    zero corners; off by up to a face pixel, see :mod:`pager.geometry.reference_stitching`), to reproduce its
    numbers; ``width`` must then be a multiple of 4. Nearest mode is a pure gather (bool and integer masks
    stay exact). ``rotation`` (exact stitching only): the cube's rotation ``R`` as in :func:`erp_to_cubemap`
    (the ERP pixel of world ray ``d`` reads the cube at ``R^T d``); the values are resampled, not rotated
    (rotate vector fields such as normals with ``R`` yourself).

    ``rows = (r0, r1)``: only ERP rows ``r0 <= i < r1`` of the ``height x width`` panorama, ``[B, C, r1 - r0, W]``
    (the same values as those rows of the whole output), so that a caller can process a large panorama band by
    band. Memory: the output plus one band's grid (:data:`STITCH_BAND_PIXELS` pixels: ERPs larger than
    :data:`C2E_CACHE_PIXELS` are resampled band by band straight into the output, with no full-size grid);
    float16/bfloat16 cubes are sampled in float32 one band at a time. Raises ``ValueError`` for a bad shape,
    size, rows, mode, stitching or rotation.
    """
    if not isinstance(cube, torch.Tensor) or cube.dim() != 5 or cube.shape[1] != 6 or cube.shape[-1] != cube.shape[-2]:
        shape = tuple(cube.shape) if isinstance(cube, torch.Tensor) else type(cube).__name__
        raise ValueError(f"cube must be a tensor [B, 6, C, F, F], got {shape}")
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 2:
        raise ValueError(f"height and width must be positive integers (width >= 2), got {height!r}, {width!r}")
    _check_mode(mode)
    check_stitching(stitching, width)
    r0, r1 = _check_rows(rows, height)
    b, _, c, fs, _ = cube.shape
    _check_face_size(fs, "cube face size")
    rot = _rotation_key(rotation)
    if rot is not None and stitching != "exact":
        raise ValueError("a rotated cube (rotation=...) needs stitching='exact'")
    if mode == "bilinear" and not cube.dtype.is_floating_point:
        raise ValueError(f"mode='bilinear' needs a floating point cube, got {cube.dtype}; use mode='nearest' for masks")
    device = _normalize_device(cube.device)
    src = _c2e_source(cube.to(device), mode, stitching)
    if height * width <= C2E_CACHE_PIXELS:  # whole-image grids, cached: slices of them for a band
        return _c2e_rows(src, b, c, fs, cube.dtype, height, width, mode, stitching, rot, (r0, r1))
    out = torch.empty((b, c, r1 - r0, width), dtype=cube.dtype, device=device)
    for a0, a1 in stitch_bands(r1 - r0, width, STITCH_BAND_PIXELS):
        out[:, :, a0:a1] = _c2e_rows(src, b, c, fs, cube.dtype, height, width, mode, stitching, rot, (r0 + a0, r0 + a1))
    return out


def _c2e_source(cube: torch.Tensor, mode: str, stitching: str) -> torch.Tensor:
    """What :func:`_c2e_rows` samples, built once per call: the strip of faces (exact: ``[1, B*C, 6F, F]``;
    nearest: ``[B*C, 6 F F]``; reference: the strip of one-pixel-padded faces), cube-sized."""
    b, _, c, fs, _ = cube.shape
    if stitching == "reference":
        from pager.geometry.reference_stitching import pad_faces_reference

        if mode == "nearest":
            return pad_faces_reference(cube).reshape(b * c, -1)  # original dtype
        sdt = _sampling_dtype(cube.dtype)
        return pad_faces_reference(cube.to(sdt)).reshape(1, b * c, fs + 2, 6 * (fs + 2))
    if mode == "nearest":
        return cube.transpose(1, 2).reshape(b * c, 6 * fs * fs)
    return cube.to(_sampling_dtype(cube.dtype)).transpose(1, 2).reshape(1, b * c, 6 * fs, fs)  # faces stacked vertically


def _c2e_rows(src: torch.Tensor, b: int, c: int, fs: int, dtype: torch.dtype, height: int, width: int, mode: str,
              stitching: str, rot: RotationKey, rows: Tuple[int, int]) -> torch.Tensor:
    """:func:`cubemap_to_erp` of ERP rows ``rows`` from :func:`_c2e_source`'s ``src`` (arguments already checked):
    rows of the cached whole-image grid up to :data:`C2E_CACHE_PIXELS` pixels, else a grid built for these rows
    alone. Returns ``[B, C, r1 - r0, W]`` in ``dtype``."""
    device = src.device
    r0, r1 = rows
    cached = height * width <= C2E_CACHE_PIXELS
    if stitching == "reference":
        from pager.geometry.reference_stitching import _nearest_index, reference_c2e_grid

        grid = (reference_c2e_grid(height, width, fs, device, _sampling_dtype(dtype))[:, r0:r1] if cached
                else reference_c2e_grid(height, width, fs, device, _sampling_dtype(dtype), rows=rows))
        if mode == "nearest":
            fp = fs + 2
            out = src.index_select(1, _nearest_index(grid, fp, 6 * fp))
        else:
            out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True).to(dtype)
    elif mode == "nearest":
        idx = (_c2e_nearest_index(height, width, fs, device, rot)[r0 * width:r1 * width] if cached
               else _c2e_nearest_band(height, width, fs, device, rot, rows))
        out = src.index_select(1, idx)
    else:
        sdt = _sampling_dtype(dtype)
        grid = (_c2e_grid(height, width, fs, device, sdt, rot)[:, r0:r1] if cached
                else _c2e_band_grid(height, width, fs, device, sdt, rot, rows))
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False).to(dtype)
    return out.reshape(b, c, r1 - r0, width)
