"""Masked, batched alignment of a depth prediction to a ground truth (per sample).

All functions take ``pred``, ``gt`` and ``mask`` of shape ``[B, 1, H, W]`` or ``[B, H, W]`` (mask: bool,
True = pixel used; ``None`` = all pixels) and return the aligned prediction in the shape and dtype of
``pred``; with ``return_coefficients=True`` they return ``(aligned, scale[B], shift[B])`` such that
``aligned = scale * pred + shift`` (``shift`` is zero except for ``scale_and_shift``). Sums are
accumulated in float64 (float32 on MPS). A sample with an empty mask raises ``ValueError`` naming it.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple, Union

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "ALIGNMENT_METHODS",
    "align_scale",
    "align_scale_shift",
    "align_median",
    "align_log_shift",
    "align_depth",
]

ALIGNMENT_METHODS = ("metric", "none", "scale", "scale_and_shift", "median", "log_shift")

Result = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _prepare(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor], fn: str):
    """Flatten to ``[B, N]`` in the accumulation dtype and check shapes / empty masks."""
    for name, t in (("pred", pred), ("gt", gt)):
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4) or (t.dim() == 4 and t.shape[1] != 1):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{fn}: {name} must be [B, 1, H, W] or [B, H, W], got {shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"{fn}: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    if mask is None:
        mask = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    elif mask.shape != pred.shape:
        raise ValueError(f"{fn}: mask {tuple(mask.shape)} must have the shape of pred {tuple(pred.shape)}")
    b = pred.shape[0]
    dt = _acc_dtype(pred.device)
    p = pred.reshape(b, -1).to(dt)
    g = gt.reshape(b, -1).to(device=pred.device, dtype=dt)
    m = mask.reshape(b, -1).to(device=pred.device, dtype=torch.bool)
    count = m.sum(dim=1)
    empty = (count == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{fn}: the mask of sample {empty[0]} is empty (samples with empty masks: {empty})")
    return p, g, m, count.to(dt)


def _finish(pred: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, return_coefficients: bool) -> Result:
    view = (-1,) + (1,) * (pred.dim() - 1)
    aligned = (pred.to(scale.dtype) * scale.view(view) + shift.view(view)).to(pred.dtype)
    if return_coefficients:
        return aligned, scale.to(pred.dtype), shift.to(pred.dtype)
    return aligned


def _masked_mean(x: torch.Tensor, m: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.where(m, x, torch.zeros_like(x)).sum(dim=1) / count


def align_scale(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None, return_coefficients: bool = False) -> Result:
    """Least-squares scale ``s = sum(p g) / sum(p^2)`` over the mask; returns ``s * pred``."""
    p, g, m, _ = _prepare(pred, gt, mask, "align_scale")
    zero = torch.zeros_like(p)
    pm = torch.where(m, p, zero)
    den = (pm * pm).sum(dim=1)
    bad = (den == 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"align_scale: the prediction of sample {bad[0]} is zero on its mask; no scale fits")
    scale = (pm * torch.where(m, g, zero)).sum(dim=1) / den
    return _finish(pred, scale, torch.zeros_like(scale), return_coefficients)


def align_scale_shift(
    pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None, return_coefficients: bool = False
) -> Result:
    """Least-squares scale and shift ``(s, t) = argmin sum (s p + t - g)^2`` over the mask; returns
    ``s * pred + t``. A prediction that is constant on the mask has no unique fit: ``s = 0`` and
    ``t = mean(g)`` (logged as a warning)."""
    p, g, m, count = _prepare(pred, gt, mask, "align_scale_shift")
    p_mean = _masked_mean(p, m, count)
    g_mean = _masked_mean(g, m, count)
    zero = torch.zeros_like(p)
    pc = torch.where(m, p - p_mean[:, None], zero)
    gc = torch.where(m, g - g_mean[:, None], zero)
    var = (pc * pc).sum(dim=1)
    cov = (pc * gc).sum(dim=1)
    degenerate = var <= 0
    if bool(degenerate.any()):
        logger.warning("align_scale_shift: prediction constant on the mask for samples %s; using scale 0",
                       degenerate.nonzero().flatten().tolist())
    scale = torch.where(degenerate, torch.zeros_like(var), cov / torch.where(degenerate, torch.ones_like(var), var))
    shift = g_mean - scale * p_mean
    return _finish(pred, scale, shift, return_coefficients)


def align_median(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None, return_coefficients: bool = False) -> Result:
    """Median-ratio scale ``s = median(g) / median(p)`` over the mask (lower median for even counts);
    returns ``s * pred``."""
    p, g, m, _ = _prepare(pred, gt, mask, "align_median")
    nan = torch.full_like(p, float("nan"))
    med_p = torch.nanmedian(torch.where(m, p, nan), dim=1).values
    med_g = torch.nanmedian(torch.where(m, g, nan), dim=1).values
    bad = (med_p == 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"align_median: the median prediction of sample {bad[0]} is zero; no scale fits")
    scale = med_g / med_p
    return _finish(pred, scale, torch.zeros_like(scale), return_coefficients)


def align_log_shift(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    return_coefficients: bool = False,
    inputs_are_log: bool = False,
) -> Result:
    """Shift in log space: ``beta = mean(log g - log p)`` over the mask.

    Depths in metres (default): returns ``exp(beta) * pred`` (a shift of log depth is a scale in metres;
    coefficients ``(exp(beta), 0)``); all masked values must be > 0. With ``inputs_are_log=True`` the
    inputs already are log depths (or any log-encoded values): returns ``pred + beta`` (coefficients
    ``(1, beta)``).
    """
    p, g, m, count = _prepare(pred, gt, mask, "align_log_shift")
    if inputs_are_log:
        beta = _masked_mean(g - p, m, count)
        return _finish(pred, torch.ones_like(beta), beta, return_coefficients)
    nonpos = ((p <= 0) | (g <= 0)) & m
    bad = nonpos.any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"align_log_shift: sample {bad[0]} has non-positive depth inside its mask (log undefined)")
    one = torch.ones_like(p)
    beta = _masked_mean(torch.log(torch.where(m, g, one)) - torch.log(torch.where(m, p, one)), m, count)
    scale = torch.exp(beta)
    return _finish(pred, scale, torch.zeros_like(scale), return_coefficients)


def align_depth(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    method: str = "metric",
    return_coefficients: bool = False,
) -> Result:
    """Align ``pred`` to ``gt`` with ``method`` in ``metric``/``none`` (unchanged), ``scale``,
    ``scale_and_shift``, ``median`` or ``log_shift``; shapes ``[B, 1, H, W]`` or ``[B, H, W]``."""
    if method in ("metric", "none"):
        if return_coefficients:
            ones = torch.ones(pred.shape[0], dtype=pred.dtype, device=pred.device)
            return pred, ones, torch.zeros_like(ones)
        return pred
    fns = {"scale": align_scale, "scale_and_shift": align_scale_shift, "median": align_median, "log_shift": align_log_shift}
    if method not in fns:
        raise ValueError(f"align_depth: unknown method {method!r}, expected one of {ALIGNMENT_METHODS}")
    return fns[method](pred, gt, mask, return_coefficients=return_coefficients)
