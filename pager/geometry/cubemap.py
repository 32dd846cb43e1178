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
indices are computed once per (sizes, device, dtype) in float64 and cached.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

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


def erp_to_cubemap(erp: torch.Tensor, face_size: int, mode: str = "bilinear", stitching: str = "exact",
                   rotation: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Resample an ERP panorama onto the 6 cube faces: ``[B, C, H, W] -> [B, 6, C, F, F]``.

    Sampling positions are exactly pytorch360convert's ``e2c`` (``stack`` format). ``stitching="exact"``
    interpolates across the longitude seam (pytorch360convert clamps there); ``"reference"`` clamps like it
    (the original PaGeR code, see :mod:`pager.geometry.reference_stitching`; it matters only next to the
    seam). ``mode="bilinear"`` (float tensors, differentiable; float16/bfloat16 are sampled in float32) or
    ``"nearest"`` (any dtype, bool and integer masks stay exact). One ``grid_sample`` / one gather over the
    whole batch. Raises ``ValueError`` for a bad shape, face size, mode, stitching or rotation.

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
    b, c, h, w = erp.shape
    device = _normalize_device(erp.device)
    if stitching == "reference":
        from pager.geometry.reference_stitching import reference_erp_to_cubemap

        if mode == "bilinear" and not erp.dtype.is_floating_point:
            raise ValueError(f"mode='bilinear' needs a floating point erp, got {erp.dtype}; use mode='nearest' for masks")
        return reference_erp_to_cubemap(erp.to(device), face_size, mode, _sampling_dtype(erp.dtype))
    if mode == "nearest":
        idx = _e2c_nearest_index(h, w, face_size, device, rot)
        out = erp.reshape(b * c, h * w).index_select(1, idx)
    else:
        if not erp.dtype.is_floating_point:
            raise ValueError(f"mode='bilinear' needs a floating point erp, got {erp.dtype}; use mode='nearest' for masks")
        sdt = _sampling_dtype(erp.dtype)
        x = erp.to(sdt).reshape(1, b * c, h, w)
        x = torch.cat((x[..., -1:], x, x[..., :1]), dim=-1)  # circular longitude padding
        grid = _e2c_grid(h, w, face_size, device, sdt, rot)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.to(erp.dtype)
    return out.reshape(b, c, 6, face_size, face_size).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# cubemap -> ERP
# --------------------------------------------------------------------------------------------------
@cached_tensors(maxsize=2)  # float64 intermediates: only the final grids/indices are kept long
def _c2e_face_coords(height: int, width: int, face_size: int, rotation: RotationKey = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every ERP pixel centre: face index ``[H, W]`` (long) and continuous face pixel coordinates
    (column, row) in ``[0, F-1]`` (float64), the exact inverse of the ``e2c`` face grid (for a rotated cube:
    of the ray ``R^T d`` in the cube's frame)."""
    from pager.geometry.sphere import _angles_cached, angles_to_directions

    theta, phi = _angles_cached.__wrapped__(height, width, torch.device("cpu"), torch.float64)
    d = angles_to_directions(theta, phi, dim=0)  # [3, H, W] float64, not cached
    flat = d.reshape(3, -1)
    if rotation is not None:
        flat = _rotation64(rotation).T @ flat
    proj = _FACE_FRAMES[:, 0] @ flat  # [6, HW]: d . n_f
    dn, face = proj.max(dim=0)  # the face whose axis is closest to the ray
    t = 0.5 / dn  # ray parameter to hit the face plane
    a = t * (_FACE_FRAMES[:, 1] @ flat).gather(0, face[None])[0]
    bcoord = t * (_FACE_FRAMES[:, 2] @ flat).gather(0, face[None])[0]
    face = face.view(height, width)
    a = a.view(height, width)
    bcoord = bcoord.view(height, width)
    col = ((a + 0.5) * (face_size - 1)).clamp(0, face_size - 1)
    row = ((0.5 - bcoord) * (face_size - 1)).clamp(0, face_size - 1)
    return face, col, row


@cached_tensors(maxsize=32)
def _c2e_grid(height: int, width: int, face_size: int, device: torch.device, dtype: torch.dtype,
              rotation: RotationKey = None) -> torch.Tensor:
    """grid_sample grid ``[1, H, W, 2]`` (align_corners=False) into the vertical strip of the 6 faces ``[6*F, F]``.

    With the edge-to-edge face grid every ray lands inside ``[0, F-1]`` of its face, so no padding is needed;
    rows are kept ``margin`` pixels inside the face so that rounding of the grid in ``dtype`` never gives
    weight to the unrelated face next in the strip (columns are clamped by ``padding_mode="border"``).
    """
    face, col, row = _c2e_face_coords(height, width, face_size, rotation)
    margin = min(16.0 * torch.finfo(dtype).eps * 6 * face_size, 0.01)  # pixels
    row = row.clamp(margin, face_size - 1 - margin)
    y = face.to(torch.float64) * face_size + row
    gx = (2.0 * col + 1.0) / face_size - 1.0
    gy = (2.0 * y + 1.0) / (6 * face_size) - 1.0
    return torch.stack((gx, gy), dim=-1).unsqueeze(0).to(dtype).to(device).contiguous()


@cached_tensors(maxsize=32)
def _c2e_nearest_index(height: int, width: int, face_size: int, device: torch.device, rotation: RotationKey = None) -> torch.Tensor:
    face, col, row = _c2e_face_coords(height, width, face_size, rotation)
    c = torch.round(col).long()
    r = torch.round(row).long()
    return (face * face_size * face_size + r * face_size + c).reshape(-1).to(device)


def cubemap_to_erp(cube: torch.Tensor, height: int, width: int, mode: str = "bilinear",
                   stitching: str = "exact", rotation: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Resample a cubemap onto an ERP panorama: ``[B, 6, C, F, F] -> [B, C, H, W]``.

    ``stitching="exact"`` (default): the exact inverse of :func:`erp_to_cubemap`'s grid: each ERP pixel centre
    is projected onto the face its ray hits and the face grid is interpolated there (one ``grid_sample`` over
    the faces stacked in a strip; every sample stays inside its own face). ``"reference"``: the original PaGeR
    code's cube->ERP (pytorch360convert 0.2.3 ``c2e``: its own ERP grid, face table and one-pixel padding with
    zero corners; off by up to a face pixel, see :mod:`pager.geometry.reference_stitching`), to reproduce its
    numbers; ``width`` must then be a multiple of 4. Nearest mode is a pure gather (bool and integer masks
    stay exact). ``rotation`` (exact stitching only): the cube's rotation ``R`` as in :func:`erp_to_cubemap`
    (the ERP pixel of world ray ``d`` reads the cube at ``R^T d``); the values are resampled, not rotated
    (rotate vector fields such as normals with ``R`` yourself). Raises ``ValueError`` for a bad shape, size,
    mode, stitching or rotation.
    """
    if not isinstance(cube, torch.Tensor) or cube.dim() != 5 or cube.shape[1] != 6 or cube.shape[-1] != cube.shape[-2]:
        shape = tuple(cube.shape) if isinstance(cube, torch.Tensor) else type(cube).__name__
        raise ValueError(f"cube must be a tensor [B, 6, C, F, F], got {shape}")
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 2:
        raise ValueError(f"height and width must be positive integers (width >= 2), got {height!r}, {width!r}")
    _check_mode(mode)
    check_stitching(stitching, width)
    b, _, c, fs, _ = cube.shape
    _check_face_size(fs, "cube face size")
    rot = _rotation_key(rotation)
    if rot is not None and stitching != "exact":
        raise ValueError("a rotated cube (rotation=...) needs stitching='exact'")
    device = _normalize_device(cube.device)
    if stitching == "reference":
        from pager.geometry.reference_stitching import reference_cubemap_to_erp

        if mode == "bilinear" and not cube.dtype.is_floating_point:
            raise ValueError(f"mode='bilinear' needs a floating point cube, got {cube.dtype}; use mode='nearest' for masks")
        return reference_cubemap_to_erp(cube.to(device), height, width, mode, _sampling_dtype(cube.dtype))
    if mode == "nearest":
        idx = _c2e_nearest_index(height, width, fs, device, rot)
        src = cube.transpose(1, 2).reshape(b * c, 6 * fs * fs)
        out = src.index_select(1, idx)
    else:
        if not cube.dtype.is_floating_point:
            raise ValueError(f"mode='bilinear' needs a floating point cube, got {cube.dtype}; use mode='nearest' for masks")
        sdt = _sampling_dtype(cube.dtype)
        strip = cube.to(sdt).transpose(1, 2).reshape(1, b * c, 6 * fs, fs)  # faces stacked vertically
        grid = _c2e_grid(height, width, fs, device, sdt, rot)
        out = F.grid_sample(strip, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.to(cube.dtype)
    return out.reshape(b, c, height, width)
