"""Depth alignment recovers known scale / shift; masks; batching; errors."""

import math

import pytest
import torch

from pager.geometry import (
    align_depth,
    align_log_shift,
    align_median,
    align_scale,
    align_scale_shift,
)


def data(b=3, shape=(1, 16, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand((b,) + shape, generator=g, dtype=torch.float64) * 5 + 0.5
    mask = torch.rand((b,) + shape, generator=g) > 0.3
    return pred, mask


def test_scale_and_shift_recovered_exactly():
    pred, mask = data()
    s = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64).view(3, 1, 1, 1)
    t = torch.tensor([0.1, -1.0, 4.0], dtype=torch.float64).view(3, 1, 1, 1)
    gt = torch.where(mask, pred * s + t, torch.full_like(pred, 1e6))  # garbage outside the mask
    aligned, scale, shift = align_scale_shift(pred, gt, mask, return_coefficients=True)
    assert torch.allclose(scale, s.flatten()) and torch.allclose(shift, t.flatten())
    assert torch.allclose(aligned[mask], gt[mask])
    gt_s = torch.where(mask, pred * s, torch.zeros_like(pred))
    aligned, scale, _ = align_scale(pred, gt_s, mask, return_coefficients=True)
    assert torch.allclose(scale, s.flatten())
    assert torch.allclose(align_median(pred, gt_s, mask)[mask], gt_s[mask])
    aligned, scale, _ = align_log_shift(pred, torch.where(mask, pred * s, torch.ones_like(pred)), mask, return_coefficients=True)
    assert torch.allclose(scale, s.flatten())


def test_hand_computed_values():
    pred = torch.tensor([[1.0, 2.0, 4.0, 100.0]]).view(1, 1, 1, 4)
    gt = torch.tensor([[2.0, 2.0, 8.0, 0.0]]).view(1, 1, 1, 4)
    mask = torch.tensor([[True, True, True, False]]).view(1, 1, 1, 4)
    # scale: sum(pg)/sum(p^2) = (2 + 4 + 32) / (1 + 4 + 16) = 38/21
    _, s, _ = align_scale(pred, gt, mask, return_coefficients=True)
    assert s.item() == pytest.approx(38 / 21, rel=1e-6)
    # median: median(2,2,8)=2, median(1,2,4)=2 -> 1
    _, s, _ = align_median(pred, gt, mask, return_coefficients=True)
    assert s.item() == pytest.approx(1.0)
    # log shift: mean(log 2 - log 1, log 2 - log 2, log 8 - log 4) = 2 log 2 / 3
    _, s, _ = align_log_shift(pred, gt, mask, return_coefficients=True)
    assert s.item() == pytest.approx(math.exp(2 * math.log(2) / 3), rel=1e-6)
    # log-encoded inputs: plain shift
    out, s, t = align_log_shift(pred, gt, mask, return_coefficients=True, inputs_are_log=True)
    assert s.item() == 1 and t.item() == pytest.approx((1 + 0 + 4) / 3)


def test_dispatcher_and_shapes():
    pred, mask = data(b=2, shape=(8, 8))  # [B, H, W]
    gt = pred * 3
    for method in ("scale", "scale_and_shift", "median", "log_shift"):
        out = align_depth(pred.float(), gt.float(), mask, method=method)
        assert out.shape == pred.shape and out.dtype == torch.float32
        assert torch.allclose(out[mask], gt.float()[mask], rtol=1e-5)
    assert align_depth(pred, gt, mask, method="metric") is pred
    assert align_depth(pred, gt, mask, method="none") is pred
    with pytest.raises(ValueError, match="method"):
        align_depth(pred, gt, mask, method="affine")


def test_empty_mask_names_sample():
    pred, mask = data()
    mask[1] = False
    with pytest.raises(ValueError, match="sample 1"):
        align_scale_shift(pred, pred, mask)
    with pytest.raises(ValueError, match="sample 1"):
        align_depth(pred, pred, mask, method="median")


def test_log_shift_rejects_non_positive_and_constant_prediction():
    pred, mask = data()
    gt = pred.clone()
    gt[2, 0, 0, 0] = 0.0
    mask[2, 0, 0, 0] = True
    with pytest.raises(ValueError, match="sample 2"):
        align_log_shift(pred, gt, mask)
    const = torch.ones_like(pred)
    out, s, t = align_scale_shift(const, pred, mask, return_coefficients=True)
    assert torch.all(s == 0) and torch.isfinite(out).all()


def test_differentiable():
    pred, mask = data()
    p = pred.clone().requires_grad_(True)
    align_scale_shift(p, pred * 2 + 1, mask).sum().backward()
    assert torch.isfinite(p.grad).all()
