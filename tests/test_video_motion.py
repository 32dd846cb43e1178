"""Camera motion between frames (pager.video.motion) and the motion-compensated temporal filter.

Truth is analytic: ray-cast procedural sequences (pager.data.synthetic.sequence) with their exact poses and
range depth, and hand-made moving objects.
"""
import math

import numpy as np
import pytest
import torch

from pager.data.synthetic.sequence import render_sequence
from pager.evaluation.temporal import sequence_flicker
from pager.geometry.warp import relative_pose, yaw_pose
from pager.video.consistency import TemporalAligner, edge_free, warp_log_map
from pager.video.motion import estimate_motion, rotation_angle, so3_exp

H = 64  # frame height of the rendered sequences (W = 128): one pixel is 2.8 degrees


def _frames(seed, kind, motion, frames, height=H, **kw):
    panos, poses = render_sequence(seed, kind, motion, frames=frames, height=height, **kw)
    depth = torch.from_numpy(np.stack([p.depth for p in panos])).double()
    mask = torch.from_numpy(np.stack([p.mask for p in panos]))
    grey = torch.stack([TemporalAligner._grey(torch.from_numpy(p.rgb)) for p in panos])
    rgb = torch.from_numpy(np.stack([p.rgb for p in panos]))
    return depth, mask, grey, rgb, torch.from_numpy(poses)


def test_so3_exp_is_rodrigues():
    omega = torch.tensor([[0.0, 0.3, 0.0], [1e-10, 0.0, 0.0], [0.2, -0.5, 0.9]], dtype=torch.float64)
    r = so3_exp(omega)
    # a turn about +y is the yaw rotation of pager.geometry.warp.yaw_pose
    assert torch.allclose(r[0], yaw_pose(0.3)[:3, :3], atol=1e-15)
    assert torch.allclose(r[1], torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-14)
    assert torch.allclose(rotation_angle(r), omega.norm(dim=1), atol=1e-7)
    # the axis is left unchanged
    assert torch.allclose(r[2] @ omega[2], omega[2], atol=1e-14)


@pytest.mark.parametrize("kind,motion,steps", [("indoor", "translate", 1), ("indoor", "both", 1), ("outdoor", "both", 1),
                                               ("indoor", "yaw", 3), ("indoor", "both", 3)])
def test_motion_of_a_rendered_sequence_is_recovered(kind, motion, steps):
    """Exact depth, rendered images (96 x 192): the estimate matches the true relative pose.

    Direct alignment resolves a fraction of a pixel: rotation within a tenth of a pixel (0.19 deg), and
    translation within the displacement that moves a point at the median depth by a fifth of a pixel
    (a 5 cm step at 2 m moves it by about 0.8 px; rotation and sideways translation trade off a little),
    its direction within 10 degrees."""
    h = 96
    depth, mask, grey, _, poses = _frames(11, kind, motion, steps + 1, height=h)
    true = relative_pose(poses[0], poses[steps])[0]
    init = None
    if motion != "translate":  # the phase-correlation yaw start, as TemporalAligner uses it
        from pager.video.consistency import estimate_yaw_shift

        init = yaw_pose(2 * math.pi * int(estimate_yaw_shift(grey[0], grey[steps])) / grey.shape[-1])
    est, info = estimate_motion(depth[steps], grey[steps], grey[0], depth[0], mask[steps], mask[0], init=init,
                                levels=(24, 48, 96))
    assert est.shape == (4, 4)
    pixel = math.pi / h  # radians
    rot_err = float(rotation_angle(est[:3, :3].T @ true[:3, :3]))
    assert rot_err < 0.1 * pixel
    t_true, t_est = true[:3, 3], est[:3, 3]
    tol = 0.2 * pixel * float(depth[steps][mask[steps]].median())
    assert float((t_est - t_true).norm()) < tol
    if float(t_true.norm()) > 0:
        cos = float(t_est @ t_true) / (float(t_est.norm()) * float(t_true.norm()))
        assert math.degrees(math.acos(min(1.0, cos))) < 10.0
    assert 0.5 < float(info["used"]) <= 1.0


def test_motion_batched_equals_one_by_one():
    depth, mask, grey, _, poses = _frames(4, "indoor", "both", 3, height=32)
    batch, _ = estimate_motion(depth[1:], grey[1:], grey[:2], depth[:2], mask[1:], mask[:2], levels=(16, 32))
    for i in range(2):
        one, _ = estimate_motion(depth[i + 1], grey[i + 1], grey[i], depth[i], mask[i + 1], mask[i], levels=(16, 32))
        assert torch.allclose(batch[i], one, atol=1e-9)


def test_motion_shape_errors():
    d = torch.ones(8, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="grey_src"):
        estimate_motion(d, d, torch.ones(8, 15), levels=(8,))


def test_warp_log_map_of_the_true_motion_is_the_current_frame():
    """The previous frame's true log range, carried along the true motion, is the current frame's (where
    both see the same surface), up to the bilinear interpolation of a smooth log depth."""
    depth, mask, _, _, poses = _frames(11, "indoor", "both", 2, height=96)
    rel = relative_pose(poses[0], poses[1])[0]
    x0, x1 = torch.log(depth.clamp_min(1e-9))
    warped, ok = warp_log_map(x0, mask[0], x1, rel, edge_tol=0.05)
    use = ok & mask[1]
    assert float(use.float().mean()) > 0.5
    err = (warped - x1)[use].abs()
    assert float(err.median()) < 2e-3
    assert float(torch.quantile(err, 0.99)) < 0.05  # edge_free keeps steps larger than 0.05 out of the samples


def test_edge_free_marks_both_sides_of_a_step():
    v = torch.zeros(4, 8, dtype=torch.float64)
    v[:, 3:] = 1.0
    ok = edge_free(v, torch.ones_like(v, dtype=torch.bool), 0.5)
    # columns 2 and 3 touch the step; column 7 wraps round to column 0 and touches it too
    assert torch.equal(ok.all(0), torch.tensor([False, True, False, False, True, True, True, False]))


def _noisy(depth, mask, sigma, seed):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.exp(sigma * torch.randn(depth.shape, dtype=torch.float64, generator=gen))
    return torch.where(mask, depth * noise, torch.zeros_like(depth))


def _run(aligner, pred, mask, rgb):
    return torch.stack([aligner.step(pred[i], mask[i], rgb[i])[0] for i in range(len(pred))])


def test_motion_compensated_filter_flickers_less_on_a_translating_sequence():
    """Exact depth times independent per-pixel noise (2 % in log depth) on a camera moving 15 cm a frame
    through a room: filtered along the estimated motion, flicker falls well below the noise's and below
    the same filter at the same pixel, and the result is closer to the truth than the input."""
    depth, mask, _, rgb, poses = _frames(11, "indoor", "translate", 8, speed=0.15)
    pred = _noisy(depth, mask, 0.02, 0)
    base = float(sequence_flicker(pred, depth, poses, mask=mask)["flicker"].mean())
    kw = dict(align=False, filter_strength=0.8, tau=0.1)
    outs = {mc: _run(TemporalAligner(motion_compensation=mc, **kw), pred, mask, rgb) for mc in ("none", "pose")}
    fl = {mc: float(sequence_flicker(o, depth, poses, mask=mask)["flicker"].mean()) for mc, o in outs.items()}
    assert fl["pose"] < 0.5 * base
    assert fl["pose"] < 0.75 * fl["none"]
    err = {mc: float((torch.log(o[mask]) - torch.log(depth[mask])).abs().mean()) for mc, o in outs.items()}
    err_in = float((torch.log(pred[mask]) - torch.log(depth[mask])).abs().mean())
    assert err["pose"] < 0.8 * err_in
    assert err["pose"] < err["none"]


def test_two_sided_filter_has_no_lag():
    """A prediction whose error grows steadily along the sequence (2 % of log depth more per frame, in a
    smooth pattern over the sphere): the forward filter lags behind it by about a / (1 - a) frames of that
    trend; the two-sided filter's symmetric weights cancel most of it in the middle of the sequence."""
    from pager.video.consistency import filter_sequence

    n = 13
    depth, mask, _, rgb, poses = _frames(11, "indoor", "translate", n, height=32)
    w = depth.shape[-1]
    pattern = torch.cos(torch.arange(w, dtype=torch.float64) * (2 * math.pi / w)).expand_as(depth[0])
    clean = depth * torch.exp(0.02 * torch.arange(n, dtype=torch.float64)[:, None, None] * pattern)
    pred = _noisy(clean, mask, 0.005, 2)
    kw = dict(align=False, filter_strength=0.8, tau=0.2, motion_compensation="pose")
    fwd, _ = filter_sequence(pred, mask, rgb, two_sided=False, **kw)
    both, _ = filter_sequence(pred, mask, rgb, two_sided=True, **kw)
    mid = slice(5, n - 5)  # far enough from both ends for 0.8^k to have faded

    def bias(out):
        return float((torch.log(out[mid]) - torch.log(clean[mid]))[mask[mid]].abs().mean())

    trend = 0.02 * float(pattern[mask[0]].abs().mean())  # mean |change| per frame
    assert bias(fwd) > 1.5 * trend  # lags by more than a frame and a half
    assert bias(both) < 0.5 * bias(fwd)  # measured about 0.3 (the gates and the warps are not exactly symmetric)


def _moving_object(n=6):
    depth, mask, _, rgb, poses = _frames(11, "indoor", "translate", n)
    _, h, w = depth.shape
    rgb = rgb.clone()
    obj = torch.zeros(n, h, w, dtype=torch.bool)
    for t in range(n):
        obj[t, h // 3: h // 2, 10 + 2 * t: 22 + 2 * t] = True
    truth = torch.where(obj, 0.5 * depth, depth)
    rgb[obj] = torch.tensor([250, 20, 20], dtype=rgb.dtype)
    return truth, mask, rgb, obj


def test_motion_compensated_filter_keeps_moving_edges():
    """An object moving against the camera's motion (a box pasted at half the depth, shifting by 2 columns a
    frame): wherever it arrived or left since the previous frame, the forward filter's output is the current
    frame exactly."""
    truth, mask, rgb, obj = _moving_object()
    pred = _noisy(truth, mask, 0.01, 1)
    out = _run(TemporalAligner(align=False, filter_strength=0.8, tau=0.05, motion_compensation="pose"), pred, mask, rgb)
    changed = (obj[1:] ^ obj[:-1]) & mask[1:]  # pixels the object entered or left
    assert int(changed.sum()) > 0
    assert torch.allclose(out[1:][changed], pred[1:][changed], rtol=1e-6)
    # elsewhere the filter does act (it is not simply off)
    assert float((out[1:] - pred[1:]).abs()[~changed & mask[1:]].max()) > 1e-3


@pytest.mark.parametrize("two_sided", [False, True], ids=["forward", "two-sided"])
def test_filter_never_mixes_the_two_sides_of_a_moving_edge(two_sided):
    """Same moving object: no output pixel is a blend of object and background (that would be off by a
    sizeable part of log 2 = 0.69); every pixel stays within the noise (1 %, 5 sigma) of its own surface."""
    from pager.video.consistency import filter_sequence

    truth, mask, rgb, obj = _moving_object()
    pred = _noisy(truth, mask, 0.01, 1)
    out, _ = filter_sequence(pred, mask, rgb, align=False, filter_strength=0.8, tau=0.05, motion_compensation="pose",
                             two_sided=two_sided)
    err = (torch.log(out[mask]) - torch.log(truth[mask])).abs()
    assert float(err.max()) < 0.05
    near = obj | torch.roll(obj, 1, -1) | torch.roll(obj, -1, -1)
    assert float((torch.log(out) - torch.log(truth)).abs()[near & mask].max()) < 0.05


@pytest.mark.parametrize("k", [3, -7])
def test_the_yaw_roll_as_a_pose_warps_like_the_roll(k):
    """yaw_pose(2 pi k / W), the transform TemporalAligner reports for a yaw shift of k columns (and the
    backward pass inverts), carries a map exactly as the column roll of the forward pass does."""
    depth, mask, _, _, _ = _frames(3, "outdoor", "yaw", 1, height=32)
    x = torch.log(torch.where(mask[0], depth[0], torch.ones_like(depth[0])))
    w = x.shape[-1]
    warped, ok = warp_log_map(x, mask[0], torch.roll(x, k, -1), yaw_pose(2 * math.pi * k / w))
    assert torch.equal(ok, torch.roll(mask[0], k, -1))
    assert torch.allclose(warped[ok], torch.roll(x, k, -1)[ok], atol=1e-6)
