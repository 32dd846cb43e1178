"""Horizontal roll augmentation of ERP panoramas (a rotation of the scene about the up axis).

Rolling an ERP right by ``s`` pixels (``out[..., j] = x[..., (j - s) mod W]``, like ``torch.roll``)
moves the content at longitude ``theta`` to ``theta + alpha`` with ``alpha = 2*pi*s/W``. With the
ray ``(cos(phi) cos(theta), sin(phi), cos(phi) sin(theta))`` that is the rotation about +y

    x' = x cos(alpha) - z sin(alpha),   y' = y,   z' = x sin(alpha) + z cos(alpha),

which must also be applied to the normal vectors (they are world-frame vectors, not colours).
"""

from __future__ import annotations

import math
import numbers
from typing import Union

import torch

__all__ = ["roll_erp", "rotate_normals_yaw", "roll_normals"]

ShiftLike = Union[int, torch.Tensor]


def _check_bchw(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [B, C, H, W], got {shape}")


def roll_erp(x: torch.Tensor, shift_px: ShiftLike) -> torch.Tensor:
    """Roll ERP tensors ``[B, C, H, W]`` horizontally by ``shift_px`` pixels (positive = to the right).

    ``shift_px`` is an int (same for all samples) or an integer tensor ``[B]`` (one shift per sample).
    Works for any dtype (images, depth, bool masks); differentiable.
    """
    _check_bchw(x, "x")
    if isinstance(shift_px, torch.Tensor):
        if shift_px.dim() == 0:
            return torch.roll(x, int(shift_px.item()), dims=-1)
        if shift_px.shape != (x.shape[0],) or shift_px.dtype.is_floating_point or shift_px.dtype == torch.bool:
            raise ValueError(f"shift_px must be an int or an integer tensor [B={x.shape[0]}], got {shift_px.dtype} {tuple(shift_px.shape)}")
        b, c, h, w = x.shape
        cols = torch.arange(w, device=x.device).view(1, w)
        src = torch.remainder(cols - shift_px.to(x.device).view(b, 1).long(), w)  # [B, W]
        return torch.gather(x, -1, src.view(b, 1, 1, w).expand(b, c, h, w))
    if isinstance(shift_px, bool) or not isinstance(shift_px, numbers.Integral):
        raise ValueError(f"shift_px must be an int or an integer tensor [B], got {type(shift_px).__name__}")
    return torch.roll(x, int(shift_px), dims=-1)


def rotate_normals_yaw(normals: torch.Tensor, angle: Union[float, torch.Tensor]) -> torch.Tensor:
    """Rotate world-frame vectors ``[B, 3, H, W]`` about the up axis (+y) by ``angle`` radians (a float or
    a tensor ``[B]``), positive = the rotation that moves longitude ``theta`` to ``theta + angle``
    (content turning right in the ERP): ``x' = x cos - z sin``, ``z' = x sin + z cos``."""
    _check_bchw(normals, "normals")
    if normals.shape[1] != 3:
        raise ValueError(f"normals must have 3 channels, got {tuple(normals.shape)}")
    ang = torch.as_tensor(angle, device=normals.device, dtype=torch.float64 if normals.dtype == torch.float64 else torch.float32)
    if ang.dim() == 1:
        if ang.shape[0] != normals.shape[0]:
            raise ValueError(f"angle must be a scalar or [B={normals.shape[0]}], got {tuple(ang.shape)}")
        ang = ang.view(-1, 1, 1)
    elif ang.dim() != 0:
        raise ValueError(f"angle must be a scalar or [B], got {tuple(ang.shape)}")
    c, s = torch.cos(ang).to(normals.dtype), torch.sin(ang).to(normals.dtype)
    x, y, z = normals.unbind(1)
    return torch.stack((x * c - z * s, y, x * s + z * c), dim=1)


def roll_normals(normals: torch.Tensor, shift_px: ShiftLike) -> torch.Tensor:
    """Roll an ERP normal map ``[B, 3, H, W]`` like :func:`roll_erp` and rotate the vectors with it by
    ``2*pi*shift_px/W`` about the up axis, so that ``depth_to_normals(roll_erp(d, s)) ==
    roll_normals(depth_to_normals(d), s)``."""
    _check_bchw(normals, "normals")
    w = normals.shape[-1]
    rolled = roll_erp(normals, shift_px)
    if isinstance(shift_px, torch.Tensor):
        adt = torch.float64 if normals.dtype == torch.float64 else torch.float32  # MPS has no float64
        angle = shift_px.to(device=normals.device, dtype=adt) * (2.0 * math.pi / w)
    else:
        angle = 2.0 * math.pi * int(shift_px) / w
    return rotate_normals_yaw(rolled, angle)
