"""Seam suppression by blending two cubemap passes (pure tensor math; the model side is ``Pager.predict``).

A network run on the six faces of a cube can disagree with itself along the face borders (the released
checkpoints were trained with a cube padding that duplicates the shared edge, so their predictions step
there). A second pass on a cube rotated by ``R`` (:data:`SEAM_BLEND_ROTATION`: 45 deg of yaw, so its side
borders fall on the middle of the first cube's side faces) sees the borders of the first pass from the inside of
a face, and vice versa. No tilt: a tilted cube would also move its top/bottom borders away from the first cube's
(:func:`border_coverage` 0.28 -> 0.54 at 45 deg), but the networks were trained on upright panoramas only: a 45 deg
tilt doubled the depth error of the default model v1 and raised v2's by 40 % (``benchmarks/seam_blend.py``). Both
passes are brought back to the ERP and blended with weights that vanish on each pass's own face borders:

* weight of a pass at a pixel: ``w = smoothstep(t)`` with ``t = 1 - |second largest| / |largest|`` component
  of the pixel's ray in that cube's frame (:func:`face_border_distance`; ``t`` is 1 at a face centre, 0 on a
  border, linear in the face-plane coordinates) and ``smoothstep(t) = t^2 (3 - 2 t)`` (zero slope at the
  border, so the blend has no kink there);
* depth: relative (non-metric) checkpoints are defined up to a scale, so every pass is scaled to the first by
  the median of the log ratio over the pixels valid in both (:func:`align_log_scale`; metric checkpoints are
  not rescaled: both passes are already in metres, and a disagreement is not ours to hide); the passes are then
  averaged in log depth with the weights times the validity masks;
* normals: rotated back to the world frame (``n_world = R n_cube``), averaged with the same weights and
  renormalised;
* validity: the weighted vote of the passes' masks (valid when at least half of the weight says so).

Two cube edge networks on the sphere must cross somewhere (each is connected and spans the sphere), so at a
few isolated points both weights vanish; there a small floor ``eps`` on the weights averages the passes.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from pager.geometry.caching import cached_tensors
from pager.geometry.sphere import DeviceLike, _normalize_device, _resolve_dtype

__all__ = [
    "SEAM_BLEND_YAW_DEG",
    "SEAM_BLEND_PITCH_DEG",
    "SEAM_BLEND_ROTATION",
    "rotation_matrix",
    "rotate_vectors",
    "face_border_distance",
    "smoothstep",
    "erp_seam_weights",
    "border_coverage",
    "align_log_scale",
    "log_ratios",
    "lower_median",
    "blend_depth",
    "blend_normals",
    "blend_masks",
]

#: yaw of the second pass (degrees): its side borders fall on the first pass's side-face centres
SEAM_BLEND_YAW_DEG = 45.0
#: tilt of the second pass (degrees, about the right axis z): none, see the module docstring
SEAM_BLEND_PITCH_DEG = 0.0
#: default eps: floor on each pass weight (where two borders cross, both weights vanish)
WEIGHT_FLOOR = 1e-3
#: exponent p of the pass weight ``smoothstep(t)^p``: larger p lets the pass whose face is deeper dominate
#: (less averaging of the two passes' textures away from the borders)
SEAM_BLEND_POWER = 1.0


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``R = R_yaw @ R_pitch`` ``[3, 3]`` in the world frame (x forward, y up, z right).

    ``R_pitch`` turns about +z (right) by ``pitch_deg`` (forward tilts up: ``x' = x cos - y sin``,
    ``y' = x sin + y cos``); ``R_yaw`` turns about +y by ``yaw_deg`` in the sense that moves longitude
    ``theta`` to ``theta + yaw`` (``x' = x cos - z sin``, ``z' = x sin + z cos``, as
    :func:`pager.geometry.augment.rotate_normals_yaw`). Used as the cube rotation of
    :func:`pager.geometry.erp_to_cubemap`: cube ray ``d`` looks at world ``R d``.
    """
    y, p = math.radians(float(yaw_deg)), math.radians(float(pitch_deg))
    cy, sy, cp, sp = math.cos(y), math.sin(y), math.cos(p), math.sin(p)
    r_yaw = torch.tensor([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]], dtype=torch.float64)
    r_pitch = torch.tensor([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return (r_yaw @ r_pitch).to(dtype)


#: the second pass's cube rotation
SEAM_BLEND_ROTATION = rotation_matrix(SEAM_BLEND_YAW_DEG, SEAM_BLEND_PITCH_DEG)


def rotate_vectors(vectors: torch.Tensor, rotation: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``R v`` for vectors whose 3 components lie along ``dim`` (default: channels of ``[B, 3, H, W]``)."""
    if vectors.shape[dim] != 3:
        raise ValueError(f"vectors must have 3 components along dim {dim}, got shape {tuple(vectors.shape)}")
    r = torch.as_tensor(rotation).to(device=vectors.device, dtype=vectors.dtype)
    if r.shape != (3, 3):
        raise ValueError(f"rotation must be [3, 3], got {tuple(r.shape)}")
    v = vectors.movedim(dim, -1)
    return (v @ r.T).movedim(-1, dim)


def face_border_distance(directions: torch.Tensor, rotation: Optional[torch.Tensor] = None, dim: int = 0) -> torch.Tensor:
    """How deep inside its cube face each ray lies: ``t`` in [0, 1], 1 at a face centre, 0 on a face border.

    ``directions``: rays (any length > 0) with 3 components along ``dim``, world frame; ``rotation``: the
    cube's rotation ``R`` (the rays are taken to the cube frame as ``R^T d``). With ``|c1| >= |c2| >= |c3|``
    the sorted absolute components of the ray in the cube frame, the ray hits the face of ``c1`` at face
    coordinates ``(c2, c3) / (2 |c1|)`` in ``[-1/2, 1/2]``, so ``t = 1 - 2 max(|a|, |b|) = 1 - |c2| / |c1|``
    (linear in the face-plane distance to the nearest border; the same on every face).
    Returns the input shape without ``dim``.
    """
    d = directions.movedim(dim, -1)
    if d.shape[-1] != 3:
        raise ValueError(f"directions must have 3 components along dim {dim}, got shape {tuple(directions.shape)}")
    if rotation is not None:
        d = d @ torch.as_tensor(rotation).to(device=d.device, dtype=d.dtype)  # (R^T d) as rows: d R
    a = d.abs().sort(dim=-1, descending=True).values
    return (1.0 - a[..., 1] / a[..., 0].clamp_min(torch.finfo(a.dtype).tiny)).clamp(0.0, 1.0)


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    """``t^2 (3 - 2 t)`` on ``t`` clamped to [0, 1]: 0 and 1 at the ends, zero slope at both."""
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _erp_weights_rows(height: int, width: int, rotation: Optional[Tuple[float, ...]], power: float,
                      rows: Tuple[int, int]) -> torch.Tensor:
    """float64 weights ``[r1 - r0, W]`` of ERP rows ``rows``: per-pixel arithmetic on the rays of those rows only."""
    import math

    r0, r1 = rows
    j = torch.arange(width, dtype=torch.float64)
    i = torch.arange(r0, r1, dtype=torch.float64)
    theta = 2.0 * math.pi * (j + 0.5) / width - math.pi  # as pager.geometry.sphere.erp_angles
    phi = math.pi / 2.0 - math.pi * (i + 0.5) / height
    cos_phi = torch.cos(phi).view(-1, 1)
    d = torch.stack((cos_phi * torch.cos(theta).view(1, -1), torch.sin(phi).view(-1, 1).expand(-1, width),
                     cos_phi * torch.sin(theta).view(1, -1)))  # [3, h, W] unit rays
    rot = None if rotation is None else torch.tensor(rotation, dtype=torch.float64).view(3, 3)
    return smoothstep(face_border_distance(d, rot, dim=0)) ** power


@cached_tensors(maxsize=16)
def _erp_weights_cached(height: int, width: int, rotation: Optional[Tuple[float, ...]], power: float,
                        device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _erp_weights_rows(height, width, rotation, power, (0, height)).to(dtype).to(device)


def erp_seam_weights(height: int, width: int, rotation: Optional[torch.Tensor] = None, device: DeviceLike = None,
                     dtype: Optional[torch.dtype] = None, power: Optional[float] = None,
                     rows: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Blend weight ``smoothstep(face_border_distance)^power`` (default :data:`SEAM_BLEND_POWER`) of every ERP
    pixel centre for a cube rotated by ``rotation`` (None: the unrotated cube): ``[H, W]``, 0 on that cube's
    face borders, 1 at face centres. Computed in float64, cached per size, rotation, power, device and dtype.
    ``rows = (r0, r1)``: only ERP rows ``r0 <= i < r1`` (``[r1 - r0, W]``, the same values; not cached, float64
    intermediates of those rows only), for panoramas processed band by band."""
    from pager.geometry.cubemap import _check_rows, _rotation_key

    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"ERP size must be positive integers, got height={height!r}, width={width!r}")
    power = float(SEAM_BLEND_POWER if power is None else power)
    if not power > 0:
        raise ValueError(f"power must be positive, got {power}")
    r0, r1 = _check_rows(rows, height)
    if (r0, r1) != (0, height):
        w = _erp_weights_rows(height, width, _rotation_key(rotation), power, (r0, r1))
        return w.to(_resolve_dtype(dtype)).to(_normalize_device(device))
    return _erp_weights_cached(height, width, _rotation_key(rotation), power, _normalize_device(device),
                               _resolve_dtype(dtype)).clone()


def border_coverage(rotation: torch.Tensor, samples: int = 4096) -> Tuple[float, float]:
    """How well a second cube rotated by ``rotation`` covers the first cube's face borders, and vice versa.

    Points are spread along the 12 edges of each cube (``samples`` per edge); returns the 5th percentile and
    the mean of the *other* pass's weight there (1 would be perfect; the crossings of the two edge
    networks make the minimum 0 for any rotation).
    """
    t = torch.linspace(-1.0, 1.0, samples, dtype=torch.float64)
    edges = []
    for axis in range(3):  # edges parallel to `axis`: the other two coordinates are +-1
        others = [a for a in range(3) if a != axis]
        for s1 in (-1.0, 1.0):
            for s2 in (-1.0, 1.0):
                p = torch.zeros(samples, 3, dtype=torch.float64)
                p[:, axis] = t
                p[:, others[0]] = s1
                p[:, others[1]] = s2
                edges.append(p)
    pts = torch.cat(edges)  # [12 * samples, 3] on the unit cube's edges (cube frame)
    r = torch.as_tensor(rotation, dtype=torch.float64)
    w_other_1 = smoothstep(face_border_distance(pts, r, dim=-1))  # first cube's edges, seen by the second
    w_other_2 = smoothstep(face_border_distance(pts @ r.T, None, dim=-1))  # second cube's edges, by the first
    w = torch.cat([w_other_1, w_other_2])
    return float(torch.quantile(w, 0.05)), float(w.mean())


# ------------------------------------------------------------------------------------------------
# blending the passes (all per image; tensors [P, B, ...] with P passes)
# ------------------------------------------------------------------------------------------------
def _check_passes(x: torch.Tensor, weights: torch.Tensor, name: str, channels: bool = False) -> None:
    need = 5 if channels else 4
    if x.dim() != need:
        raise ValueError(f"{name} must be [P, B, {'3, ' if channels else ''}H, W], got {tuple(x.shape)}")
    if weights.dim() != 3 or weights.shape[0] != x.shape[0] or weights.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"weights must be [P={x.shape[0]}, H, W] like {name}, got {tuple(weights.shape)}")


def _effective_weights(weights: torch.Tensor, masks: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """``[P, B, H, W]`` weights: the pass weights (floored at eps) times validity; where no valid pass has
    weight, the plain floored weights (so every pixel gets a value)."""
    w = (weights.clamp_min(0.0) + eps)[:, None]  # [P, 1, H, W]
    if masks is None:
        return w
    wm = w * masks.to(w.dtype)
    return torch.where(wm.sum(0, keepdim=True) > 0, wm, w.expand_as(wm))


def log_ratios(depths: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``log d_0 - log d_p`` of passes ``depths [P, B, ...]`` at the pixels valid (finite, > 0, and in ``masks``) in
    both, NaN elsewhere: ``[P, B, N]`` (pixels flattened). Per pixel, so bands of rows can be taken separately."""
    ok = torch.isfinite(depths) & (depths > 0)
    if masks is not None:
        ok = ok & masks
    ld = torch.log(torch.where(ok, depths, torch.ones_like(depths)))
    both = ok & ok[:1]
    return torch.where(both, ld[:1] - ld, torch.full_like(ld, float("nan"))).flatten(2)


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """Median of the non-NaN entries of a 1-D tensor as :func:`torch.nanmedian` defines it (the lower of the two
    middle values for an even count; NaN when there is none), by partial sorting of a NaN-free copy."""
    v = values[~torch.isnan(values)]
    if v.numel() == 0:
        return torch.full((), float("nan"), dtype=values.dtype, device=values.device)
    k = (v.numel() - 1) // 2
    if v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64):
        import numpy as np

        a = v.numpy()
        a.partition(k)  # in place on the copy above: no index array
        return torch.tensor(a[k], dtype=values.dtype)
    return torch.kthvalue(v.float() if v.dtype in (torch.float16, torch.bfloat16) else v, k + 1).values.to(values.dtype)


def align_log_scale(depths: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scale factors ``[P, B]`` that align every pass to the first: ``exp(median(log d_0 - log d_p))`` over the
    pixels valid (finite, > 0, and in ``masks``) in both; 1 where no pixel is. ``depths [P, B, H, W]``."""
    diff = log_ratios(depths, masks)
    med = torch.nanmedian(diff.float() if diff.dtype in (torch.float16, torch.bfloat16) else diff, dim=-1).values
    return torch.exp(torch.nan_to_num(med, nan=0.0)).to(depths.dtype)


def blend_depth(depths: torch.Tensor, weights: torch.Tensor, masks: Optional[torch.Tensor] = None,
                align: bool = True, eps: float = WEIGHT_FLOOR) -> torch.Tensor:
    """Blend ``P`` depth passes ``[P, B, H, W]`` (positive, metres or relative) into ``[B, H, W]``.

    ``align``: first scale every pass to the first with :func:`align_log_scale` (relative depth; pass False
    for metric depth). Then the weighted mean of ``log d`` with weights ``weights [P, H, W]`` (+ ``eps``)
    times ``masks [P, B, H, W]`` (where no valid pass has weight: all passes).
    """
    _check_passes(depths, weights, "depths")
    if align:
        depths = depths * align_log_scale(depths, masks)[:, :, None, None]
    w = _effective_weights(weights.to(depths.dtype), masks, eps)
    ld = torch.log(depths.clamp_min(torch.finfo(depths.dtype).tiny))
    return torch.exp((w * ld).sum(0) / w.sum(0))


def blend_normals(normals: torch.Tensor, weights: torch.Tensor, masks: Optional[torch.Tensor] = None,
                  rotations: Optional[Sequence[Optional[torch.Tensor]]] = None, eps: float = WEIGHT_FLOOR) -> torch.Tensor:
    """Blend ``P`` normal passes ``[P, B, 3, H, W]`` into unit normals ``[B, 3, H, W]`` (world frame).

    ``rotations[p]`` (or None) is pass ``p``'s cube rotation ``R``; its normals are in the cube's frame and are
    rotated to the world first (``R n``). Then the weighted sum (weights as :func:`blend_depth`), renormalised
    (a zero sum stays zero).
    """
    _check_passes(normals, weights, "normals", channels=True)
    if rotations is not None:
        if len(rotations) != normals.shape[0]:
            raise ValueError(f"rotations: one per pass ({normals.shape[0]}), got {len(rotations)}")
        normals = torch.stack([n if r is None else rotate_vectors(n, r, dim=1) for n, r in zip(normals, rotations)])
    w = _effective_weights(weights.to(normals.dtype), masks, eps)[:, :, None]  # [P, B, 1, H, W]
    n = (w * normals).sum(0)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)


def blend_masks(masks: torch.Tensor, weights: torch.Tensor, eps: float = WEIGHT_FLOOR) -> torch.Tensor:
    """Weighted vote of ``P`` validity masks ``[P, B, H, W]``: valid where at least half of the weight is."""
    _check_passes(masks, weights, "masks")
    w = (weights.clamp_min(0.0) + eps)[:, None].to(torch.float32)
    return (w * masks.to(torch.float32)).sum(0) >= 0.5 * w.sum(0)
