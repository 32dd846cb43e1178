"""Mapping between depth in metres and the network's value range [-1, 1].

``log_scale`` models store ``p = (x + 1) / 2`` as a position between ``log(min_depth)`` and
``log(max_depth)``; linear models between ``min_depth`` and ``max_depth``. Relative (non-metric)
log models are defined up to a shift in log space, i.e. a scale in metres.
"""
from __future__ import annotations

import math

import torch

#: Depth is valid strictly between ``VALID_MIN_FACTOR * min_depth`` and ``VALID_MAX_FACTOR * max_depth``
#: (the datasets' ground-truth masks, the prediction's ``depth_mask`` and the saturation loss of training
#: all use these factors; the reference masks ground truth the same way).
VALID_MIN_FACTOR = 1.01
VALID_MAX_FACTOR = 0.99


def _check_range(min_depth: float, max_depth: float) -> None:
    if not (min_depth > 0 and max_depth > min_depth):
        raise ValueError(f"expected 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")


def encode_depth(depth: torch.Tensor, min_depth: float, max_depth: float, log_scale: bool = True) -> torch.Tensor:
    """Depth in metres (any shape) -> values in [-1, 1]; depth is clamped to [min_depth, max_depth] first."""
    _check_range(min_depth, max_depth)
    d = depth.clamp(min_depth, max_depth)
    if log_scale:
        lo, hi = math.log(min_depth), math.log(max_depth)
        p = (torch.log(d) - lo) / (hi - lo)
    else:
        p = (d - min_depth) / (max_depth - min_depth)
    return p * 2.0 - 1.0


def decode_depth(values: torch.Tensor, min_depth: float, max_depth: float, log_scale: bool = True) -> torch.Tensor:
    """Network values (any shape; clamped to [-1, 1]) -> depth in metres within [min_depth, max_depth]."""
    _check_range(min_depth, max_depth)
    p = (values.clamp(-1.0, 1.0) + 1.0) * 0.5
    if log_scale:
        lo, hi = math.log(min_depth), math.log(max_depth)
        # exp in float32 at least: half precision loses ~0.1% per unit of log range.
        out = torch.exp(lo + p.float() * (hi - lo))
        return out.to(values.dtype) if values.dtype == torch.float64 else out
    return min_depth + p * (max_depth - min_depth)


def affine_normalize_depth(depth: torch.Tensor, mask: torch.Tensor, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """Per-image quantile normalisation of ``depth[B, 1, H, W]`` to [-1, 1] over ``mask`` (linear relative models).

    The ``low``/``high`` quantiles of the valid depth map to -1/+1 (values beyond are clamped).
    """
    if depth.shape != mask.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and mask {tuple(mask.shape)} must have the same shape")
    flat = depth.flatten(1).float()
    valid = mask.flatten(1)
    if not bool(valid.any(dim=1).all()):
        raise ValueError("affine_normalize_depth: an image has no valid pixel")
    filled = torch.where(valid, flat, torch.nan)
    lo = torch.nanquantile(filled, low, dim=1, keepdim=True)
    hi = torch.nanquantile(filled, high, dim=1, keepdim=True)
    scaled = (flat - lo) / (hi - lo).clamp_min(1e-6)
    return (scaled * 2.0 - 1.0).clamp(-1.0, 1.0).view_as(depth).to(depth.dtype)


def saturation_value(min_depth: float, max_depth: float, log_scale: bool = True) -> float:
    """The encoded value of ``VALID_MAX_FACTOR * max_depth``: a prediction at or above it decodes to a
    depth the prediction's ``depth_mask`` marks invalid (saturated at the far end of the range).

    Log models: ``1 - 2 log(1 / VALID_MAX_FACTOR) / log(max_depth / min_depth)`` (about 0.997 for
    0.1-75 m); linear models: ``1 - 2 (1 - VALID_MAX_FACTOR) max_depth / (max_depth - min_depth)``.
    """
    _check_range(min_depth, max_depth)
    d = VALID_MAX_FACTOR * max_depth
    if log_scale:
        p = (math.log(d) - math.log(min_depth)) / (math.log(max_depth) - math.log(min_depth))
    else:
        p = (d - min_depth) / (max_depth - min_depth)
    return 2.0 * p - 1.0
