"""ERP sphere grids: per-pixel longitude/latitude and unit rays (conventions: see ``pager.geometry``).

Grids are built once per (size, device, dtype) in float64 on the CPU, cast, moved and cached; the
public functions return fresh copies so callers may modify them in place.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from pager.geometry.caching import cached_tensors

DeviceLike = Union[str, torch.device, None]

__all__ = [
    "erp_angles",
    "erp_directions",
    "directions_to_angles",
    "angles_to_directions",
]


def _normalize_device(device: DeviceLike) -> torch.device:
    """A hashable, canonical device (``cuda`` becomes ``cuda:<current>``) for cache keys."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _resolve_dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    dt = torch.get_default_dtype() if dtype is None else dtype
    if not dt.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dt}")
    return dt


def _check_erp_size(height: int, width: int) -> None:
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"ERP size must be positive integers, got height={height!r}, width={width!r}")


def _to(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Cast on the CPU first: MPS has no float64.
    return t.to(dtype).to(device).contiguous()


@cached_tensors(maxsize=64)
def _angles_cached(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    j = torch.arange(width, dtype=torch.float64)
    i = torch.arange(height, dtype=torch.float64)
    theta = 2.0 * math.pi * (j + 0.5) / width - math.pi  # (-pi, pi), 0 at the image centre
    phi = math.pi / 2.0 - math.pi * (i + 0.5) / height  # (-pi/2, pi/2), positive at the top
    theta_hw = theta.view(1, width).expand(height, width)
    phi_hw = phi.view(height, 1).expand(height, width)
    return _to(theta_hw, device, dtype), _to(phi_hw, device, dtype)


@cached_tensors(maxsize=64)
def _directions_cached(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    theta, phi = _angles_cached.__wrapped__(height, width, torch.device("cpu"), torch.float64)  # uncached
    dirs = angles_to_directions(theta, phi, dim=0)
    return _to(dirs, device, dtype)


def erp_angles(
    height: int, width: int, device: DeviceLike = None, dtype: Optional[torch.dtype] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Longitude and latitude of every ERP pixel centre.

    Returns ``(theta, phi)``, each ``[H, W]`` in radians: ``theta = 2*pi*(j+0.5)/W - pi`` (0 at the
    image centre, increasing to the right), ``phi = pi/2 - pi*(i+0.5)/H`` (positive at the top).
    """
    _check_erp_size(height, width)
    theta, phi = _angles_cached(height, width, _normalize_device(device), _resolve_dtype(dtype))
    return theta.clone(), phi.clone()


def erp_directions(height: int, width: int, device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Unit ray of every ERP pixel centre in the world frame (x forward, y up, z right): ``[3, H, W]``.

    ``ray = (cos(phi) cos(theta), sin(phi), cos(phi) sin(theta))``, computed in float64 then cast.
    """
    _check_erp_size(height, width)
    return _directions_cached(height, width, _normalize_device(device), _resolve_dtype(dtype)).clone()


def angles_to_directions(theta: torch.Tensor, phi: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Unit rays from longitude/latitude (radians, same shape): components stacked along ``dim``."""
    if theta.shape != phi.shape:
        raise ValueError(f"theta and phi must have the same shape, got {tuple(theta.shape)} and {tuple(phi.shape)}")
    cos_phi = torch.cos(phi)
    return torch.stack((cos_phi * torch.cos(theta), torch.sin(phi), cos_phi * torch.sin(theta)), dim=dim)


def directions_to_angles(directions: torch.Tensor, dim: int = -3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Longitude ``theta`` in ``[-pi, pi]`` and latitude ``phi`` in ``[-pi/2, pi/2]`` of (not necessarily
    unit) direction vectors whose 3 components lie along ``dim`` (default: channels of ``[..., 3, H, W]``).

    ``theta = atan2(z, x)``, ``phi = atan2(y, hypot(x, z))``; ``dim`` is removed from the outputs.
    """
    if directions.shape[dim] != 3:
        raise ValueError(f"directions must have 3 components along dim {dim}, got shape {tuple(directions.shape)}")
    x, y, z = directions.unbind(dim)
    theta = torch.atan2(z, x)
    phi = torch.atan2(y, torch.hypot(x, z))
    return theta, phi
