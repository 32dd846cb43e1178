"""Reprojection of ERP range-depth maps between two camera poses (pure tensor math, no I/O).

Poses are ``[B, 4, 4]`` (or ``[4, 4]``) rigid camera-to-world matrices ``T = [[R, c], [0, 1]]``: a point
``X_cam`` in the camera frame of ``pager.geometry`` (x forward, y up, z right, metres) is at
``R X_cam + c`` in the world (scene) frame, ``c`` being the camera centre. The transform taking points
of a *target* camera into a *source* camera is ``T_src^-1 T_tgt`` (:func:`relative_pose`).

Backward warping (used to compare frame ``t`` with frame ``t+1`` of a video): every target pixel ``p``
with range ``D_tgt(p)`` is lifted to ``X = D_tgt(p) ray(p)``, moved into the source camera,
``X_src = R_rel X + t_rel``, and projected: its source longitude / latitude give where to sample the
source maps (:func:`erp_sample`) and ``|X_src|`` is the range the source camera sees that same
surface point at. A pixel is *visible in both* frames when the source's own range at that position
agrees with ``|X_src|`` (no occluder in front of it; :func:`reproject_visibility`). This is the
standard depth-based view synthesis of e.g. Zhou et al., "Unsupervised Learning of Depth and
Ego-Motion from Video" (CVPR 2017), written for the sphere instead of a pinhole.

A pure rotation about the up axis by ``alpha`` (``R_rel`` of :func:`yaw_pose`, no translation) moves
every pixel by ``alpha W / (2 pi)`` columns and leaves ranges unchanged: an ERP column roll.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F

from pager.geometry.sphere import _directions_cached, _normalize_device, directions_to_angles

__all__ = [
    "yaw_pose",
    "relative_pose",
    "erp_reproject",
    "erp_sample",
    "reproject_visibility",
]


def _as_poses(pose: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(pose, torch.Tensor) or pose.shape[-2:] != (4, 4) or pose.dim() not in (2, 3):
        shape = tuple(pose.shape) if isinstance(pose, torch.Tensor) else type(pose).__name__
        raise ValueError(f"{name} must be a camera-to-world matrix [4, 4] or [B, 4, 4], got {shape}")
    return pose if pose.dim() == 3 else pose.unsqueeze(0)


def yaw_pose(yaw: Union[float, torch.Tensor], position=(0.0, 0.0, 0.0), dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Camera-to-world pose ``[4, 4]`` (or ``[B, 4, 4]`` for a tensor ``yaw [B]``) of a camera at ``position``
    (metres, world frame) turned by ``yaw`` radians about the up axis (+y).

    ``R = [[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]]`` maps the camera ray ``(x, y, z)`` to the world ray
    ``(cos x + sin z, y, -sin x + cos z)``: the convention of :class:`pager.data.synthetic.scene.Scene`
    (``Scene.yaw``, ``Scene.camera``). Increasing ``yaw`` by ``alpha`` (same position) shifts the ERP
    content by ``alpha W / (2 pi)`` columns to the right (``roll_erp`` with a positive shift).
    """
    y = torch.as_tensor(yaw, dtype=dtype)
    batched = y.dim() == 1
    y = y.reshape(-1)
    c, s = torch.cos(y), torch.sin(y)
    pose = torch.zeros(y.shape[0], 4, 4, dtype=dtype)
    pose[:, 0, 0], pose[:, 0, 2] = c, s
    pose[:, 1, 1] = 1.0
    pose[:, 2, 0], pose[:, 2, 2] = -s, c
    pose[:, :3, 3] = torch.as_tensor(position, dtype=dtype).reshape(-1, 3)
    pose[:, 3, 3] = 1.0
    return pose if batched else pose[0]


def relative_pose(pose_src: torch.Tensor, pose_tgt: torch.Tensor) -> torch.Tensor:
    """``T_src^-1 T_tgt`` ``[B, 4, 4]``: maps points of the target camera frame into the source camera frame.

    The inverse of a rigid ``[[R, c], [0, 1]]`` is ``[[R^T, -R^T c], [0, 1]]`` (computed so, not by a
    general matrix inverse). Raises ``ValueError`` for shapes other than ``[4, 4]`` / ``[B, 4, 4]``.
    """
    src = _as_poses(pose_src, "pose_src")
    tgt = _as_poses(pose_tgt, "pose_tgt")
    r_t = src[:, :3, :3].transpose(1, 2)
    inv = torch.zeros_like(src)
    inv[:, :3, :3] = r_t
    inv[:, :3, 3] = -(r_t @ src[:, :3, 3:4])[..., 0]
    inv[:, 3, 3] = 1.0
    return inv @ tgt.to(src.dtype)


def erp_reproject(depth_tgt: torch.Tensor, src_from_tgt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where every target pixel's surface point lies in a source camera.

    Args:
        depth_tgt: ``[B, H, W]`` range depth of the target frame in metres (``W == 2 H`` not required).
        src_from_tgt: ``[B, 4, 4]`` (or ``[4, 4]``) target-to-source transform (:func:`relative_pose`), metres.

    Returns:
        ``(theta, phi, range_src)``, each ``[B, H, W]``: longitude / latitude (radians, conventions of
        ``pager.geometry``) of the point seen from the source camera and its range there (metres).
        Arithmetic in the dtype of ``depth_tgt`` (use float64 for analytic checks).
    """
    if not isinstance(depth_tgt, torch.Tensor) or depth_tgt.dim() != 3:
        shape = tuple(depth_tgt.shape) if isinstance(depth_tgt, torch.Tensor) else type(depth_tgt).__name__
        raise ValueError(f"depth_tgt must be [B, H, W], got {shape}")
    rel = _as_poses(src_from_tgt, "src_from_tgt").to(device=depth_tgt.device, dtype=depth_tgt.dtype)
    if rel.shape[0] not in (1, depth_tgt.shape[0]):
        raise ValueError(f"src_from_tgt has {rel.shape[0]} poses for {depth_tgt.shape[0]} depth maps")
    b, h, w = depth_tgt.shape
    rays = _directions_cached(h, w, _normalize_device(depth_tgt.device), depth_tgt.dtype)  # [3, H, W]
    pts = depth_tgt.unsqueeze(1) * rays.unsqueeze(0)  # [B, 3, H, W]
    moved = torch.einsum("bij,bjhw->bihw", rel[:, :3, :3].expand(b, 3, 3), pts) + rel[:, :3, 3].expand(b, 3)[:, :, None, None]
    theta, phi = directions_to_angles(moved, dim=1)
    return theta, phi, moved.norm(dim=1)


def erp_sample(src: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ERP maps ``src [B, C, H, W]`` at longitude / latitude ``[B, H', W']`` -> ``[B, C, H', W']``.

    Longitude wraps around (the column left of the first one is the last one); latitude is clamped to
    the first / last row centre (the poles have no neighbour beyond them). ``mode``: ``bilinear`` or
    ``nearest`` (of :func:`torch.nn.functional.grid_sample`). Pixel ``j`` of width ``W`` sits at
    ``theta = 2 pi (j + 0.5) / W - pi``, so a point on a pixel centre returns that pixel exactly.
    """
    if src.dim() != 4:
        raise ValueError(f"src must be [B, C, H, W], got {tuple(src.shape)}")
    if theta.shape != phi.shape or theta.dim() != 3 or theta.shape[0] != src.shape[0]:
        raise ValueError(f"theta/phi must both be [B={src.shape[0]}, H, W], got {tuple(theta.shape)}, {tuple(phi.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    h, w = src.shape[-2:]
    padded = torch.cat((src[..., -1:], src, src[..., :1]), dim=-1)  # wrap one column each side
    dt = theta.dtype
    col = (theta + math.pi) * (w / (2.0 * math.pi)) - 0.5  # fractional column of src, in [-0.5, W - 0.5)
    row = (math.pi / 2.0 - phi) * (h / math.pi) - 0.5
    col = torch.remainder(col + 0.5, float(w)) - 0.5  # wrap into [-0.5, W - 0.5)
    row = row.clamp(0.0, float(h - 1))
    # align_corners=True: -1 / +1 are the centres of the first / last column of the padded map
    gx = (col + 1.0) * (2.0 / (w + 1)) - 1.0
    gy = row * (2.0 / max(h - 1, 1)) - 1.0 if h > 1 else torch.zeros_like(row)
    grid = torch.stack((gx, gy), dim=-1).to(padded.dtype if padded.dtype.is_floating_point else dt)
    data = padded if padded.dtype.is_floating_point else padded.to(dt)
    return F.grid_sample(data, grid, mode=mode, padding_mode="border", align_corners=True)


def reproject_visibility(
    depth_tgt: torch.Tensor,
    depth_src: torch.Tensor,
    src_from_tgt: torch.Tensor,
    mask_tgt: torch.Tensor | None = None,
    mask_src: torch.Tensor | None = None,
    rel_tol: float = 0.03,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward-warp geometry between a target and a source frame, with the pixels visible in both.

    Args:
        depth_tgt, depth_src: ``[B, H, W]`` true range depth (metres) of the two frames.
        src_from_tgt: ``[B, 4, 4]`` target-to-source transform (:func:`relative_pose`).
        mask_tgt, mask_src: ``[B, H, W]`` bool valid pixels (default: depth > 0 and finite).
        rel_tol: occlusion tolerance: the source's bilinearly sampled range must be within
            ``rel_tol * range`` of the reprojected range.

    Returns:
        ``(theta, phi, range_src, visible)``: as :func:`erp_reproject`, and ``visible [B, H, W]`` bool:
        the target pixel is valid, its point lands where all four source neighbours are valid, and the
        source sees that point (not an occluder, not across a depth edge).
    """
    if depth_src.shape != depth_tgt.shape:
        raise ValueError(f"depth_src {tuple(depth_src.shape)} and depth_tgt {tuple(depth_tgt.shape)} must have the same shape")
    if mask_tgt is None:
        mask_tgt = torch.isfinite(depth_tgt) & (depth_tgt > 0)
    if mask_src is None:
        mask_src = torch.isfinite(depth_src) & (depth_src > 0)
    theta, phi, rng = erp_reproject(torch.where(mask_tgt, depth_tgt, torch.ones_like(depth_tgt)), src_from_tgt)
    valid_src = erp_sample(mask_src.unsqueeze(1).to(depth_src.dtype), theta, phi)[:, 0] > 1.0 - 1e-6
    seen = erp_sample(torch.where(mask_src, depth_src, torch.zeros_like(depth_src)).unsqueeze(1), theta, phi)[:, 0]
    visible = mask_tgt & valid_src & ((seen - rng).abs() <= rel_tol * rng)
    return theta, phi, rng, visible
