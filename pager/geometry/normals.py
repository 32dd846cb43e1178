"""Points and surface normals from ERP range depth (world frame of ``pager.geometry``)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pager.geometry.sphere import _directions_cached, _normalize_device

__all__ = ["depth_to_points", "depth_to_normals", "normals_angle_error"]


def _check_depth(depth: torch.Tensor, name: str = "depth") -> None:
    if not isinstance(depth, torch.Tensor) or depth.dim() != 4 or depth.shape[1] != 1:
        shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise ValueError(f"{name} must be a tensor [B, 1, H, W], got {shape}")
    if not depth.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating point tensor, got {depth.dtype}")


def _rays(depth: torch.Tensor) -> torch.Tensor:
    h, w = depth.shape[-2:]
    return _directions_cached(h, w, _normalize_device(depth.device), depth.dtype)


def depth_to_points(depth: torch.Tensor) -> torch.Tensor:
    """3-D points of an ERP range-depth map: ``[B, 1, H, W]`` (metres) -> ``[B, 3, H, W]`` (metres),
    ``point = depth * ray(theta, phi)`` in the world frame (x forward, y up, z right)."""
    _check_depth(depth)
    return depth * _rays(depth).unsqueeze(0)


def depth_to_normals(depth: torch.Tensor, mask: Optional[torch.Tensor] = None, eps: float = 1e-12) -> torch.Tensor:
    """Unit surface normals of an ERP range-depth map: ``[B, 1, H, W]`` -> ``[B, 3, H, W]``.

    Points ``P = depth * ray`` are differentiated with central differences along longitude (wrapping
    around the seam) and latitude (one-sided in the first and last row, so the poles need no
    neighbour beyond them); the normal is the normalised cross product, oriented towards the camera
    (``dot(n, ray) <= 0``). With ``mask`` (``[B, 1, H, W]`` bool, True = valid), differences only use
    valid neighbours (one-sided where one side is invalid); pixels that are invalid, or have no valid
    neighbour along one of the two directions, get the zero vector. Never NaN for finite input.
    """
    _check_depth(depth)
    if mask is not None:
        if mask.shape != depth.shape:
            raise ValueError(f"mask must have the shape of depth {tuple(depth.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(torch.bool)
    p = depth_to_points(depth)  # [B, 3, H, W]
    h = p.shape[-2]
    # longitude: wrap around
    p_r = torch.roll(p, -1, dims=-1)
    p_l = torch.roll(p, 1, dims=-1)
    # latitude: clamp at the first/last row (one-sided difference there)
    if h > 1:
        p_d = torch.cat((p[..., 1:, :], p[..., -1:, :]), dim=-2)
        p_u = torch.cat((p[..., :1, :], p[..., :-1, :]), dim=-2)
    else:
        p_d = p_u = p
    if mask is None:
        d_theta = p_r - p_l
        d_phi = p_d - p_u
        valid = None
    else:
        m_r = torch.roll(mask, -1, dims=-1)
        m_l = torch.roll(mask, 1, dims=-1)
        if h > 1:
            m_d = torch.cat((mask[..., 1:, :], torch.zeros_like(mask[..., -1:, :])), dim=-2)
            m_u = torch.cat((torch.zeros_like(mask[..., :1, :]), mask[..., :-1, :]), dim=-2)
        else:
            m_d = m_u = torch.zeros_like(mask)
        # pick forward/backward ends: the neighbour if valid, else the pixel itself
        d_theta = torch.where(m_r, p_r, p) - torch.where(m_l, p_l, p)
        d_phi = torch.where(m_d, p_d, p) - torch.where(m_u, p_u, p)
        valid = mask & (m_r | m_l) & (m_d | m_u)
    n = torch.linalg.cross(d_theta, d_phi, dim=1)
    rays = _rays(depth).unsqueeze(0)
    facing = (n * rays).sum(dim=1, keepdim=True)
    n = torch.where(facing > 0, -n, n)
    norm = n.norm(dim=1, keepdim=True)
    n = n / norm.clamp_min(eps)
    if valid is not None:
        n = n * valid.to(n.dtype)
    return n


def normals_angle_error(a: torch.Tensor, b: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Angle in degrees between normal fields ``a`` and ``b`` (components along ``dim``, default the
    channel of ``[B, 3, H, W]``); inputs need not be unit length. ``atan2(|a x b|, a.b)``, stable at
    0 and 180 degrees. Returns the input shape without ``dim``."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[dim] != 3:
        raise ValueError(f"normals must have 3 components along dim {dim}, got shape {tuple(a.shape)}")
    cross = torch.linalg.cross(a, b, dim=dim).norm(dim=dim)
    dot = (a * b).sum(dim=dim)
    return torch.atan2(cross, dot) * (180.0 / math.pi)
