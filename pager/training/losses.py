"""Training losses of PaGeR, computed in pixel space after the VAE decoder.

All losses take a prediction, a target and a boolean validity mask of the same spatial layout and
return a scalar (float32) tensor. They accept any leading dimensions: a cubemap ``[B, 6, C, F, F]``
(the usual case: losses are taken on the decoded cube faces), a face batch ``[N, C, F, F]`` or an
ERP batch ``[B, C, H, W]``. The mask has one channel (``[..., 1, H, W]``) and is broadcast over C.

Depth values here are *encoded* values in [-1, 1] (see :mod:`pager.geometry.depth_encoding`), so a
log-scale relative model is aligned with a shift of the encoded values (a shift in log depth = a
scale in metres) and a linear relative model with a least-squares scale and shift.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

__all__ = [
    "masked_mean",
    "masked_l1_loss",
    "gradient_l1_loss",
    "cosine_normals_loss",
    "normals_consistency_loss",
    "saturation_hinge_loss",
    "align_shift",
    "align_scale_shift",
    "align_relative_depth",
    "depth_losses",
    "normals_losses",
]


def _check_shapes(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"{what}: mask must be a bool tensor, got {mask.dtype}")
        if mask.dim() != pred.dim() or mask.shape[-2:] != pred.shape[-2:] or mask.shape[:-3] != pred.shape[:-3]:
            raise ValueError(
                f"{what}: mask {tuple(mask.shape)} does not match prediction {tuple(pred.shape)} "
                "(expected the same shape with 1 or C channels)"
            )


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` (broadcast to ``values``) is true; 0 if none."""
    m = mask.expand_as(values).to(values.dtype)
    count = m.sum()
    return (values * m).sum() / count.clamp_min(1.0)


def masked_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, invalid_mask_weight: float = 0.0
) -> torch.Tensor:
    """Mean ``|pred - target|`` over valid pixels, plus ``invalid_mask_weight`` x the mean over invalid ones.

    Shapes ``[..., C, H, W]`` (pred, target) and ``[..., 1|C, H, W]`` (bool mask). Each mean is over
    all channels of its pixels; a term without any pixel contributes 0.
    """
    _check_shapes(pred, target, mask, "masked_l1_loss")
    err = (pred.float() - target.float()).abs()
    loss = masked_mean(err, mask)
    if invalid_mask_weight > 0.0:
        loss = loss + float(invalid_mask_weight) * masked_mean(err, ~mask)
    return loss


def gradient_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between forward differences of ``pred`` and ``target`` along x and along y (mean of the two).

    A difference counts only where both of its pixels are valid. Differences are taken inside each
    image (or cube face): the last two dimensions are the spatial ones. Shapes as in :func:`masked_l1_loss`.
    """
    _check_shapes(pred, target, mask, "gradient_l1_loss")
    p, t = pred.float(), target.float()
    dxp, dxt = p[..., :, 1:] - p[..., :, :-1], t[..., :, 1:] - t[..., :, :-1]
    dyp, dyt = p[..., 1:, :] - p[..., :-1, :], t[..., 1:, :] - t[..., :-1, :]
    mx = mask[..., :, 1:] & mask[..., :, :-1]
    my = mask[..., 1:, :] & mask[..., :-1, :]
    return 0.5 * (masked_mean((dxp - dxt).abs(), mx) + masked_mean((dyp - dyt).abs(), my))


def _unit(v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return v / v.norm(dim=-3, keepdim=True).clamp_min(eps)


def cosine_normals_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``1 - n_pred . n_gt`` over valid pixels; both fields are normalised to unit length first.

    Shapes ``[..., 3, H, W]`` (channel dimension -3) and mask ``[..., 1, H, W]`` (None = all pixels).
    Ranges from 0 (identical directions) to 2 (opposite).
    """
    _check_shapes(pred, target, mask, "cosine_normals_loss")
    if pred.shape[-3] != 3:
        raise ValueError(f"cosine_normals_loss: expected 3 channels at dim -3, got shape {tuple(pred.shape)}")
    dot = (_unit(pred.float()) * _unit(target.float())).sum(dim=-3, keepdim=True).clamp(-1.0, 1.0)
    cos_term = 1.0 - dot
    if mask is None:
        return cos_term.mean()
    return masked_mean(cos_term, mask)


def normals_consistency_loss(
    pred_depth: torch.Tensor, gt_normals: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Cosine loss between the normals of a predicted ERP depth map and ground-truth normals.

    Args:
        pred_depth: ``[B, 1, H, W]`` predicted range in metres (ERP, W = 2H), differentiable.
        gt_normals: ``[B, 3, H, W]`` unit normals in the world frame of :mod:`pager.geometry`.
        mask: ``[B, 1, H, W]`` bool, pixels where the ground truth is valid.
    """
    from pager.geometry import depth_to_normals

    if pred_depth.dim() != 4 or pred_depth.shape[1] != 1:
        raise ValueError(f"normals_consistency_loss: pred_depth must be [B, 1, H, W], got {tuple(pred_depth.shape)}")
    normals = depth_to_normals(pred_depth.float())
    valid = mask & (gt_normals.norm(dim=1, keepdim=True) > 0.5)
    return cosine_normals_loss(normals, gt_normals.to(normals.dtype), valid)


def saturation_hinge_loss(
    pred: torch.Tensor, valid: torch.Tensor, invalid: torch.Tensor, saturation: float, margin: float
) -> torch.Tensor:
    """Hinge loss that teaches a depth model to mark invalid pixels (sky, beyond range) by saturating.

    ``mean(relu(saturation + margin - pred))`` over ``invalid`` pixels plus
    ``mean(relu(pred - (saturation - margin)))`` over ``valid`` ones: invalid pixels must be predicted at
    least ``margin`` above ``saturation`` (the encoded value of ``VALID_MAX_FACTOR * max_depth``, see
    :func:`pager.geometry.depth_encoding.saturation_value`), so the prediction's ``depth_mask`` (depth
    below ``VALID_MAX_FACTOR * max_depth``) excludes them, and valid pixels at least ``margin`` below it.
    The prediction is the raw (unaligned) encoded output: a relative model's aligned L1 term leaves its
    absolute level free, and this term fixes it only as far as the mask needs. Pixels in neither mask
    (e.g. cube-face pixels interpolated from both) are not supervised.

    Args:
        pred: ``[..., 1, H, W]`` encoded depth prediction (any value; decoding clamps to [-1, 1]).
        valid, invalid: bool masks of ``pred``'s shape (disjoint).
        saturation, margin: encoded values (``margin >= 0``).
    Returns:
        float32 scalar (0 where a mask is empty).
    """
    _check_shapes(pred, pred, valid, "saturation_hinge_loss")
    _check_shapes(pred, pred, invalid, "saturation_hinge_loss")
    if margin < 0:
        raise ValueError(f"saturation_hinge_loss: margin must be >= 0, got {margin}")
    p = pred.float()
    high = torch.relu(saturation + margin - p)
    low = torch.relu(p - (saturation - margin))
    return masked_mean(high, invalid) + masked_mean(low, valid)


# ---------------------------------------------------------------------------------------------
# Alignment of relative depth (per panorama: all dimensions after the first are pooled)
# ---------------------------------------------------------------------------------------------

def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(dim=1).view(-1, *([1] * (x.dim() - 1)))


def align_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``pred + s`` with ``s = mean(target - pred)`` over each sample's valid pixels (log-space alignment).

    Shapes ``[B, ...]``; the shift is computed per sample (dim 0) over everything else, and is
    differentiable (the aligned loss is invariant to a constant offset of the prediction).
    Samples without a valid pixel are returned unshifted.
    """
    _check_shapes(pred, target, mask, "align_shift")
    m = mask.expand_as(pred).to(pred.dtype)
    count = _per_sample_sum(m).clamp_min(1.0)
    shift = _per_sample_sum((target - pred) * m) / count
    return pred + shift


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``a * pred + b`` with ``(a, b)`` the least-squares fit to ``target`` over each sample's valid pixels.

    Shapes ``[B, ...]``; per sample, differentiable. A sample whose valid prediction is constant gets
    scale 1 and the mean offset; a sample without a valid pixel is returned unchanged.
    """
    _check_shapes(pred, target, mask, "align_scale_shift")
    m = mask.expand_as(pred).to(pred.dtype)
    n = _per_sample_sum(m)
    sp = _per_sample_sum(pred * m)
    st = _per_sample_sum(target * m)
    spp = _per_sample_sum(pred * pred * m)
    spt = _per_sample_sum(pred * target * m)
    det = n * spp - sp * sp
    ok = det.abs() > eps * n.clamp_min(1.0) ** 2
    safe_det = torch.where(ok, det, torch.ones_like(det))
    scale = torch.where(ok, (n * spt - sp * st) / safe_det, torch.ones_like(det))
    shift = torch.where(ok, (spp * st - sp * spt) / safe_det, (st - sp) / n.clamp_min(1.0))
    shift = torch.where(n > 0, shift, torch.zeros_like(shift))
    return scale * pred + shift


def align_relative_depth(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, log_scale: bool, metric_depth: bool
) -> torch.Tensor:
    """Align an encoded depth prediction to its target before the loss.

    Metric models are not aligned; log-scale relative models get a shift (a scale in metres), linear
    relative models a least-squares scale and shift. Shapes ``[B, ...]``, per sample.
    """
    if metric_depth:
        return pred
    if log_scale:
        return align_shift(pred, target, mask)
    return align_scale_shift(pred, target, mask)


# ---------------------------------------------------------------------------------------------
# Combined losses of a training step
# ---------------------------------------------------------------------------------------------

def depth_losses(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    log_scale: bool,
    metric_depth: bool,
    l1_loss_weight: float = 1.0,
    grad_loss_weight: float = 0.0,
    normals_consistency_loss_weight: float = 0.0,
    invalid_mask_weight: float = 0.0,
    gt_normals: Optional[torch.Tensor] = None,
    erp_mask: Optional[torch.Tensor] = None,
    to_erp_depth=None,
    saturation_weight: float = 0.0,
    invalid: Optional[torch.Tensor] = None,
    saturation: Optional[float] = None,
    saturation_margin: float = 0.02,
) -> Dict[str, torch.Tensor]:
    """All depth loss terms of one batch and their weighted sum ``total_loss``.

    Args:
        pred: ``[B, 6, 1, F, F]`` decoded prediction (mean of the 3 decoded channels), encoded in [-1, 1].
        target: ``[B, 6, 1, F, F]`` encoded ground truth on the cube faces.
        mask: ``[B, 6, 1, F, F]`` bool validity on the cube faces.
        gt_normals, erp_mask: ``[B, 3, H, W]`` / ``[B, 1, H, W]`` ERP ground truth for the normals-consistency term.
        to_erp_depth: callable mapping the aligned cube prediction ``[B, 6, 1, F, F]`` to ERP metres
            ``[B, 1, H, W]`` (needed only when ``normals_consistency_loss_weight > 0``).
        saturation_weight, invalid, saturation, saturation_margin: weight of
            :func:`saturation_hinge_loss` on the unaligned ``pred``, with ``invalid`` (``[B, 6, 1, F, F]``
            bool, pixels whose ground truth is sky / beyond range) and the encoded ``saturation`` value.
    Returns:
        dict with ``total_loss`` and each active term (``l1_loss``, ``grad_loss``, ``normals_consistency_loss``,
        ``saturation_loss``).
    """
    aligned = align_relative_depth(pred.float(), target.float(), mask, log_scale=log_scale, metric_depth=metric_depth)
    out: Dict[str, torch.Tensor] = {}
    total = aligned.new_zeros(())
    out["l1_loss"] = masked_l1_loss(aligned, target, mask, invalid_mask_weight)
    total = total + l1_loss_weight * out["l1_loss"]
    if grad_loss_weight > 0.0:
        out["grad_loss"] = gradient_l1_loss(aligned, target, mask)
        total = total + grad_loss_weight * out["grad_loss"]
    if normals_consistency_loss_weight > 0.0:
        if gt_normals is None or erp_mask is None or to_erp_depth is None:
            raise ValueError(
                "normals_consistency_loss_weight > 0 needs ground-truth normals: the dataset has none "
                "(set --normals_consistency_loss_weight 0 or use a dataset with normals)"
            )
        out["normals_consistency_loss"] = normals_consistency_loss(to_erp_depth(aligned), gt_normals, erp_mask)
        total = total + normals_consistency_loss_weight * out["normals_consistency_loss"]
    if saturation_weight > 0.0:
        if invalid is None or saturation is None:
            raise ValueError("saturation_weight > 0 needs the invalid-pixel mask and the saturation value")
        out["saturation_loss"] = saturation_hinge_loss(pred, mask, invalid, float(saturation), float(saturation_margin))
        total = total + saturation_weight * out["saturation_loss"]
    out["total_loss"] = total
    return out


def normals_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Loss of the normals model: ``cosine_normal_loss`` (= ``total_loss``) over the valid cube-face pixels.

    Shapes ``[B, 6, 3, F, F]`` (pred, target), ``[B, 6, 1, F, F]`` (mask).
    """
    loss = cosine_normals_loss(pred, target, mask)
    return {"cosine_normal_loss": loss, "total_loss": loss}
