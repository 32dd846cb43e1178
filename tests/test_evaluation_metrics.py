"""Evaluation metrics against hand-computed truth (pager.evaluation.metrics)."""
import math

import numpy as np
import pytest
import torch

from pager.evaluation import metrics as M


def _ramp_depth(h=8, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 5.0 * torch.rand(1, 1, h, w, generator=g)


# ------------------------------------------------------------------------------------------------
# depth
# ------------------------------------------------------------------------------------------------
def test_perfect_prediction():
    gt = _ramp_depth()
    out = M.depth_metrics(gt.clone(), gt)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert out[k].item() == pytest.approx(0.0, abs=1e-6), k
    for k in ("delta1", "delta2", "delta3"):
        assert out[k].item() == 1.0


def test_factor_two_without_and_with_alignment():
    gt = _ramp_depth()
    pred = 2.0 * gt
    out = M.depth_metrics(pred, gt)
    assert out["abs_rel"].item() == pytest.approx(1.0, rel=1e-6)
    assert out["sq_rel"].item() == pytest.approx(gt.mean().item(), rel=1e-5)  # (2g - g)^2 / g = g
    assert out["rmse"].item() == pytest.approx(gt.square().mean().sqrt().item(), rel=1e-5)
    assert out["rmse_log"].item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert out["log10"].item() == pytest.approx(math.log10(2.0), rel=1e-5)
    assert out["silog"].item() == pytest.approx(0.0, abs=1e-2)  # scale-invariant
    assert out["delta1"].item() == 0.0 and out["delta2"].item() == 0.0  # ratio 2 > 1.25^2
    assert out["delta3"].item() == 0.0  # 2 > 1.953
    for method in ("scale", "scale_and_shift", "median", "log_shift"):
        aligned = M.align_prediction(pred, gt, None, method)
        res = M.depth_metrics(aligned, gt)
        assert res["abs_rel"].item() == pytest.approx(0.0, abs=1e-5), method
        assert res["delta1"].item() == 1.0, method
    same = M.align_prediction(pred, gt, None, "metric")
    assert torch.equal(same, pred)
    with pytest.raises(ValueError, match="alignment"):
        M.align_prediction(pred, gt, None, "bogus")


def test_alignment_uses_only_masked_pixels():
    gt = _ramp_depth()
    pred = 3.0 * gt
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[..., :, :4] = False
    pred[..., :, :4] = 100.0  # garbage outside the mask must not move the fit
    aligned = M.align_prediction(pred, gt, mask, "scale")
    assert torch.allclose(aligned[mask], gt[mask], rtol=1e-5)


def test_hand_made_2x2():
    gt = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    pred = torch.tensor([[1.0, 4.0], [3.0, 8.0]])
    out = M.depth_metrics(pred, gt)
    # per pixel: |d|/g = 0, 1, 0.25, 0 ; d^2/g = 0, 2, 0.25, 0 ; d^2 = 0, 4, 1, 0
    assert out["abs_rel"].item() == pytest.approx(1.25 / 4)
    assert out["sq_rel"].item() == pytest.approx(2.25 / 4)
    assert out["rmse"].item() == pytest.approx(math.sqrt(5 / 4))
    e = [0.0, math.log(2.0), math.log(0.75), 0.0]
    assert out["rmse_log"].item() == pytest.approx(math.sqrt(sum(x * x for x in e) / 4), rel=1e-6)
    assert out["log10"].item() == pytest.approx((math.log10(2) + abs(math.log10(0.75))) / 4, rel=1e-6)
    silog = 100 * math.sqrt(sum(x * x for x in e) / 4 - (sum(e) / 4) ** 2)
    assert out["silog"].item() == pytest.approx(silog, rel=1e-5)
    # ratios max(p/g, g/p) = 1, 2, 4/3, 1
    assert out["delta1"].item() == pytest.approx(0.5)
    assert out["delta2"].item() == pytest.approx(0.75)
    assert out["delta3"].item() == pytest.approx(0.75)
    # masking the worst pixel (p=4, g=2) leaves 0, 0.25, 0
    mask = torch.tensor([[True, False], [True, True]])
    out = M.depth_metrics(pred, gt, mask)
    assert out["abs_rel"].item() == pytest.approx(0.25 / 3)
    assert out["rmse"].item() == pytest.approx(math.sqrt(1 / 3))
    assert out["delta1"].item() == pytest.approx(2 / 3)


def test_per_image_then_mean_and_empty_image():
    gt = torch.ones(3, 1, 2, 2)
    pred = gt.clone()
    pred[0, 0, 0, 0] = 2.0  # image 0: one of 4 valid pixels off by 1 -> abs_rel 0.25
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[1, 0, 1] = False  # image 1: 2 valid pixels, error on one of them -> 0.5
    pred[1, 0, 0, 1] = 2.0
    mask[2] = False  # image 2: nothing valid -> nan, ignored by the average
    out = M.depth_metrics(pred, gt, mask)
    assert out["abs_rel"][:2].tolist() == pytest.approx([0.25, 0.5])
    assert math.isnan(out["abs_rel"][2].item())
    avg = M.average_over_images(out)
    assert avg["abs_rel"] == pytest.approx(0.375)  # (0.25 + 0.5) / 2, not the pooled 2/6


def test_latitude_weighting():
    h, w = 4, 8
    gt = torch.ones(1, 1, h, w)
    pred = gt.clone()
    pred[..., 0, :] = 2.0  # error 1 on the top row only
    uniform = M.depth_metrics(pred, gt)["abs_rel"].item()
    assert uniform == pytest.approx(0.25)
    c = [math.cos(math.pi / 2 - math.pi * (i + 0.5) / h) for i in range(h)]
    expected = c[0] / sum(c)
    weighted = M.depth_metrics(pred, gt, latitude_weighting=True)["abs_rel"].item()
    assert weighted == pytest.approx(expected, rel=1e-6)
    assert weighted < uniform


def test_negative_prediction_is_not_an_inlier():
    gt = torch.ones(1, 2)
    pred = torch.tensor([[-1.0, 1.0]])
    out = M.depth_metrics(pred, gt)
    assert out["delta1"].item() == pytest.approx(0.5)
    assert out["abs_rel"].item() == pytest.approx(1.0)
    assert math.isfinite(out["rmse_log"].item())


def test_half_precision_inputs():
    gt = _ramp_depth().half()
    out = M.depth_metrics(gt * 2, gt)
    assert out["abs_rel"].dtype == torch.float32
    assert out["abs_rel"].item() == pytest.approx(1.0, rel=1e-3)


def test_shape_errors():
    with pytest.raises(ValueError, match="pred"):
        M.depth_metrics(torch.ones(1, 3, 4, 8), torch.ones(1, 1, 4, 8))
    with pytest.raises(ValueError, match="same shape"):
        M.depth_metrics(torch.ones(4, 8), torch.ones(4, 6))


# ------------------------------------------------------------------------------------------------
# normals
# ------------------------------------------------------------------------------------------------
def _rotated_by(n: torch.Tensor, angles_deg: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Turn every unit vector of ``n [B, 3, H, W]`` by exactly its angle (degrees), in a random plane."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n.shape, generator=g, dtype=n.dtype)
    u = r - (r * n).sum(1, keepdim=True) * n
    u = u / u.norm(dim=1, keepdim=True)
    a = torch.deg2rad(angles_deg)
    return torch.cos(a) * n + torch.sin(a) * u


def _random_normals(shape=(1, 3, 4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(shape, generator=g, dtype=torch.float64)
    return n / n.norm(dim=1, keepdim=True)


def test_normals_rotated_by_known_angle():
    gt = _random_normals()
    pred = _rotated_by(gt, torch.full((1, 1, 4, 6), 10.0, dtype=torch.float64))
    out = M.normals_metrics(pred * 3.0, gt)  # the prediction need not be unit length
    assert out["mean"].item() == pytest.approx(10.0, abs=1e-9)
    assert out["median"].item() == pytest.approx(10.0, abs=1e-9)
    assert out["rmse"].item() == pytest.approx(10.0, abs=1e-9)
    assert out["within_7.5"].item() == 0.0 and out["within_11.25"].item() == pytest.approx(100.0)


def test_normals_hand_made_angles():
    gt = _random_normals((1, 3, 1, 4))
    angles = torch.tensor([1.0, 6.0, 20.0, 40.0], dtype=torch.float64).view(1, 1, 1, 4)
    pred = _rotated_by(gt, angles)
    out = M.normals_metrics(pred, gt)
    assert out["mean"].item() == pytest.approx(67.0 / 4, abs=1e-9)
    assert out["median"].item() == pytest.approx(6.0, abs=1e-9)  # lower median (torch.median)
    assert out["rmse"].item() == pytest.approx(math.sqrt((1 + 36 + 400 + 1600) / 4), abs=1e-9)
    assert out["within_5"].item() == pytest.approx(25.0)
    assert out["within_7.5"].item() == pytest.approx(50.0)
    assert out["within_22.5"].item() == pytest.approx(75.0)
    assert out["within_30"].item() == pytest.approx(75.0)
    mask = torch.tensor([[[True, False, True, True]]])
    out = M.normals_metrics(pred, gt, mask)
    assert out["mean"].item() == pytest.approx(61.0 / 3, abs=1e-9)
    assert out["median"].item() == pytest.approx(20.0, abs=1e-9)


def test_normals_small_angle_precision():
    gt = _random_normals().float()
    pred = _rotated_by(gt.double(), torch.full((1, 1, 4, 6), 0.05, dtype=torch.float64)).float()
    assert M.normals_metrics(pred, gt)["mean"].item() == pytest.approx(0.05, abs=5e-3)  # acos would give ~0.03-0.1


# ------------------------------------------------------------------------------------------------
# depth edges
# ------------------------------------------------------------------------------------------------
def _step(h=12, w=24, col=10, near=1.0, far=2.0):
    d = torch.full((1, 1, h, w), far)
    d[..., :col] = near
    return d


def test_sobel_edges_of_a_step():
    e = M.sobel_edges(_step(col=10))[0]
    # the Sobel response sits on columns 9 and 10; a 3-px dilation widens it to 8..11
    cols = torch.nonzero(e.any(dim=0)).flatten().tolist()
    assert cols == [8, 9, 10, 11]
    assert e[:, 8:12].all()
    # a gentle ramp stays under the 0.01 threshold once min-max normalised? no: check a flat image
    assert not M.sobel_edges(torch.ones(1, 1, 6, 12)).any()


def test_edge_metrics_identical_shifted_and_empty():
    gt = _step(col=10)
    same = M.edge_metrics(gt.clone(), gt, max_distance=10.0)
    assert same["edge_precision"].item() == 1.0 and same["edge_recall"].item() == 1.0
    assert same["dbe_accuracy"].item() == 0.0 and same["dbe_completeness"].item() == 0.0
    # shift the step by 3 columns: predicted band 11..14 vs ground-truth band 8..11
    out = M.edge_metrics(_step(col=13), gt, max_distance=10.0)
    assert out["edge_precision"].item() == pytest.approx(0.25)  # only column 11 overlaps
    assert out["edge_recall"].item() == pytest.approx(0.25)
    assert out["dbe_accuracy"].item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert out["dbe_completeness"].item() == pytest.approx((6 + 6) / 8)  # symmetric, reference
    koch = M.edge_metrics(_step(col=13), gt, max_distance=10.0, completeness="koch")
    assert koch["dbe_completeness"].item() == pytest.approx(6 / 4)
    capped = M.edge_metrics(_step(col=13), gt, max_distance=2.5)  # distances 3 are beyond the cap
    assert capped["dbe_accuracy"].item() == pytest.approx((0 + 1 + 2) / 3)
    flat = M.edge_metrics(torch.full_like(gt, 3.0), gt, max_distance=7.0)
    assert flat["dbe_accuracy"].item() == 7.0 and flat["dbe_completeness"].item() == 7.0
    assert flat["edge_precision"].item() == 0.0 and flat["edge_recall"].item() == 0.0


def test_edge_metrics_respect_mask():
    gt = _step(col=10)
    pred = _step(col=13)
    mask = torch.zeros(1, 1, 12, 24, dtype=torch.bool)
    mask[..., 16:] = True  # no edge of either map is in the valid region
    out = M.edge_metrics(pred, gt, mask, max_distance=10.0)
    assert out["edge_precision"].item() == 1.0 and out["edge_recall"].item() == 1.0  # reference convention


# ------------------------------------------------------------------------------------------------
# seams
# ------------------------------------------------------------------------------------------------
def test_face_index_matches_geometry_cubemap_to_erp():
    from pager.geometry import cubemap_to_erp

    h, w, f = 32, 64, 16
    cube = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1, 1).expand(1, 6, 1, f, f).contiguous()
    faces = cubemap_to_erp(cube, h, w, mode="nearest")[0, 0].long()
    assert torch.equal(faces, M.erp_face_index(h, w))
    # F is at the image centre, U at the top, D at the bottom, R three quarters across
    idx = M.erp_face_index(h, w)
    assert idx[h // 2, w // 2] == 0 and idx[0, 5] == 4 and idx[-1, 5] == 5 and idx[h // 2, 3 * w // 4] == 1


def test_seam_pairs_count_and_edges():
    idx = M.erp_face_index(32, 64)
    hs, vs = M.seam_pairs(idx)
    assert hs.shape == (32, 64) and vs.shape == (31, 64)
    assert hs[16].sum() == 4 and hs[0].sum() == 0  # the equator crosses the 4 vertical cube edges, a polar row none
    assert (vs.sum(dim=0) == 2).all()  # every column goes U -> side face -> D
    lo = torch.minimum(idx, torch.roll(idx, -1, 1))[hs]
    hi = torch.maximum(idx, torch.roll(idx, -1, 1))[hs]
    assert not ((lo == 0) & (hi == 2)).any() and not ((lo == 4) & (hi == 5)).any()  # opposite faces never meet


def _smooth_cubemap(f: int) -> torch.Tensor:
    from pager.geometry import cubemap_directions

    d = cubemap_directions(f, dtype=torch.float64)  # [6, 3, F, F]
    d = d / d.norm(dim=1, keepdim=True)
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    depth = 3.0 + x + 0.5 * y * z + 0.3 * z
    return depth[None, :, None]  # [1, 6, 1, F, F]


def test_seam_metrics_zero_on_seamless_and_positive_on_injected_step():
    from pager.geometry import cubemap_to_erp

    h, w, f = 64, 128, 48
    cube = _smooth_cubemap(f)
    smooth = cubemap_to_erp(cube, h, w)
    out = M.seam_metrics(smooth)
    assert out["seam_defect_density"].item() == 0.0
    assert out["seam_prevalence"].item() == 0.0
    assert out["seam_severity"].item() == 0.0
    assert out["seam_mean_excess"].item() < 2e-3
    stepped_cube = cube.clone()
    stepped_cube[:, 0] += 0.3  # the front face alone is lifted: its 4 edges break
    stepped = cubemap_to_erp(stepped_cube, h, w)
    res = M.seam_metrics(stepped)
    assert res["seam_defect_density"].item() > 0.2
    assert res["seam_prevalence"].item() == pytest.approx(4 / 12)
    assert res["seam_severity"].item() == pytest.approx(4 / 12)
    assert res["seam_gradient_ratio"].item() > 2 * out["seam_gradient_ratio"].item()
    # batched: one value per image
    both = M.seam_metrics(torch.cat([smooth, stepped]))
    assert both["seam_prevalence"].tolist() == pytest.approx([0.0, 4 / 12])


def test_seam_metrics_raw_statistic_and_mask():
    h, w = 64, 128
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None]
    th = 2 * math.pi * (j + 0.5) / w - math.pi
    ph = math.pi / 2 - math.pi * (i + 0.5) / h
    d = 2 + torch.cos(ph) * torch.cos(th) + 0.5 * torch.sin(ph)
    face = M.erp_face_index(h, w)
    step = d + 0.3 * (face == 1)
    # the raw jump (reference statistic) flags the smooth gradient at this tiny size; the excess does not
    assert M.seam_metrics(d, compensate_interior=False)["seam_defect_density"].item() > 0.3
    assert M.seam_metrics(d)["seam_defect_density"].item() == 0.0
    # masking the right face (and its neighbourhood) hides the step
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[:, w // 2:] = False
    assert M.seam_metrics(step, mask)["seam_defect_density"].item() == 0.0
    assert M.seam_metrics(step)["seam_defect_density"].item() > 0.1


def test_average_over_images_ignores_nan():
    avg = M.average_over_images({"a": torch.tensor([1.0, float("nan"), 3.0]), "b": [float("nan")]})
    assert avg["a"] == 2.0 and math.isnan(avg["b"])


# ------------------------------------------------------------------------------ invalid regions
def test_invalid_mask_metrics_hand_made():
    # image 0: truth invalid = top row (4 px); prediction invalid = top row minus 1 px, plus 2 px below
    gt = torch.ones(3, 3, 4, dtype=torch.bool)
    gt[0, 0] = False
    pred = gt.clone()
    pred[0, 0, 0] = True
    pred[0, 2, :2] = False
    # image 1: nothing invalid anywhere -> every metric undefined (nan)
    # image 2: truth has 2 invalid px, prediction marks none -> IoU 0, recall 0, precision undefined
    gt[2, 1, 1:3] = False
    out = M.invalid_mask_metrics(pred, gt)
    assert out["invalid_iou"][0].item() == pytest.approx(3 / 6)  # |P&G| = 3, |P|G| = 4 + 2
    assert out["invalid_precision"][0].item() == pytest.approx(3 / 5)
    assert out["invalid_recall"][0].item() == pytest.approx(3 / 4)
    assert all(math.isnan(out[k][1].item()) for k in M.INVALID_MASK_METRICS)
    assert out["invalid_iou"][2].item() == 0.0 and out["invalid_recall"][2].item() == 0.0
    assert math.isnan(out["invalid_precision"][2].item())
    avg = M.average_over_images(out)
    assert avg["invalid_iou"] == pytest.approx((0.5 + 0.0) / 2)
    assert avg["invalid_precision"] == pytest.approx(3 / 5)
    # identical masks: IoU 1; [B, 1, H, W] and 0/1 masks are accepted
    same = M.invalid_mask_metrics(gt[:1, None].float(), gt[:1, None])
    assert same["invalid_iou"].item() == 1.0


def test_invalid_mask_metrics_latitude_weighting():
    # 2 rows: row 0 at latitude 45 deg (cos = sqrt(1/2)), row 1 at -45 deg; truth invalid = row 0,
    # prediction invalid = both rows: IoU = w0 / (w0 + w1) = 1/2 either way, here checked against 1 row + 1 px
    gt = torch.ones(2, 4, dtype=torch.bool)
    gt[0] = False
    pred = gt.clone()
    pred[1, 0] = False
    plain = M.invalid_mask_metrics(pred, gt)["invalid_iou"].item()
    weighted = M.invalid_mask_metrics(pred, gt, latitude_weighting=True)["invalid_iou"].item()
    assert plain == pytest.approx(4 / 5) and weighted == pytest.approx(4 / 5)  # equal cos for both rows
    tall = torch.ones(4, 8, dtype=torch.bool)
    tall[0] = False  # the polar row (cos(67.5 deg)) is invalid in the truth
    p = tall.clone()
    p[1, 0] = False  # one extra pixel at 22.5 deg
    c0, c1 = math.cos(math.radians(67.5)), math.cos(math.radians(22.5))
    assert M.invalid_mask_metrics(p, tall, latitude_weighting=True)["invalid_iou"].item() == pytest.approx(
        8 * c0 / (8 * c0 + c1), rel=1e-6)
    with pytest.raises(ValueError, match="gt_valid"):
        M.invalid_mask_metrics(p, tall[:2])
