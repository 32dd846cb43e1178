"""Temporal consistency (pager.video.consistency): robust alignment, yaw estimate, gated filter, resumable state."""
import math

import numpy as np
import pytest
import torch

from pager.data.synthetic.sequence import render_sequence
from pager.evaluation.temporal import sequence_flicker
from pager.video.consistency import TemporalAligner, estimate_yaw_shift, gated_blend, robust_log_shift


def test_robust_log_shift_ignores_outliers():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 32, 64, dtype=torch.float64, generator=gen)
    shift = torch.tensor([0.7, -1.3], dtype=torch.float64)
    x = ref - shift.view(2, 1, 1)
    bad = torch.rand(2, 32, 64, generator=gen) < 0.3  # 30 % of the pixels disagree (moving objects)
    x = torch.where(bad, x + 2.0 + torch.rand(2, 32, 64, dtype=torch.float64, generator=gen), x)
    beta, inliers = robust_log_shift(x, ref, torch.ones_like(bad))
    assert torch.allclose(beta, shift, atol=1e-9)
    assert torch.equal(inliers, ~bad)
    # a plain mean would be pulled by the outliers
    assert abs(float((ref - x)[0].mean()) - 0.7) > 0.5


@pytest.mark.parametrize("k", [0, 3, -11, 40])
def test_yaw_shift_of_a_rolled_panorama(k):
    panos, _ = render_sequence(5, "indoor", "yaw", frames=1, height=32)
    grey = torch.from_numpy(panos[0].rgb).double().mean(-1)
    s = int(estimate_yaw_shift(grey, torch.roll(grey, k, dims=-1)))
    w = grey.shape[-1]
    assert (s - k) % w == 0


def test_yaw_shift_of_a_rendered_turn():
    panos, poses = render_sequence(2, "outdoor", "yaw", frames=2, height=48, yaw_step_deg=360.0 * 5 / 96)
    grey = [torch.from_numpy(p.rgb).double().mean(-1) for p in panos]
    assert int(estimate_yaw_shift(grey[0], grey[1])) == 5


def drifting(kind, motion, frames=8, height=48, drift=0.15, noise=0.0, seed=0):
    """True depth of a rendered sequence times a random-walk scale (a relative model's per-frame scale)."""
    panos, poses = render_sequence(11, kind, motion, frames=frames, height=height)
    gt = torch.from_numpy(np.stack([p.depth for p in panos])).double()
    mask = torch.from_numpy(np.stack([p.mask for p in panos]))
    rgb = torch.from_numpy(np.stack([p.rgb for p in panos]))
    gen = torch.Generator().manual_seed(seed)
    log_scale = torch.cumsum(drift * torch.randn(frames, dtype=torch.float64, generator=gen), 0)
    pred = gt * torch.exp(log_scale).view(-1, 1, 1) * torch.exp(noise * torch.randn(gt.shape, dtype=torch.float64, generator=gen))
    return pred, gt, mask, rgb, torch.from_numpy(poses), log_scale


def run(aligner, pred, mask, rgb):
    outs = [aligner.step(torch.where(mask[i], pred[i], torch.zeros_like(pred[i])), mask[i], rgb[i])[0] for i in range(len(pred))]
    return torch.stack(outs)


@pytest.mark.parametrize("kind,motion", [("indoor", "yaw"), ("indoor", "translate"), ("outdoor", "both"), ("indoor", "both")])
def test_a_known_scale_drift_is_made_consistent(kind, motion):
    pred, gt, mask, rgb, poses, log_scale = drifting(kind, motion)
    before = sequence_flicker(pred, gt, poses, mask=mask)["flicker"]
    out = run(TemporalAligner(align=True), pred, mask, rgb)
    ratio = torch.stack([torch.log(out[i][mask[i]] / gt[i][mask[i]]).median() for i in range(len(out))])
    # one scale for the whole sequence: that of the first frame
    assert float((ratio - log_scale[0]).abs().max()) < 0.02
    after = sequence_flicker(out, gt, poses, mask=mask)["flicker"]
    assert float(after.mean()) < 0.2 * float(before.mean())


def test_metric_models_keep_their_metres():
    pred, gt, mask, rgb, poses, log_scale = drifting("indoor", "translate", frames=4)
    out = run(TemporalAligner(align=False), pred, mask, rgb)
    assert torch.allclose(out[mask], pred[mask], rtol=1e-12)


def test_filter_reduces_noise_but_keeps_moving_edges():
    h, w, n = 16, 32, 12
    gen = torch.Generator().manual_seed(3)
    frames, truth = [], []
    for t in range(n):
        d = torch.full((h, w), 2.0, dtype=torch.float64)
        d[:, t + 4: t + 10] = 1.0  # an object moving right by one column per frame
        truth.append(d)
        frames.append(d * torch.exp(0.02 * torch.randn(h, w, dtype=torch.float64, generator=gen)))
    aligner = TemporalAligner(align=False, filter_strength=0.6, tau=0.05, motion_compensation=False)
    mask = torch.ones(h, w, dtype=torch.bool)
    out = torch.stack([aligner.step(f, mask)[0] for f in frames])
    truth, frames = torch.stack(truth), torch.stack(frames)
    err_in = (torch.log(frames) - torch.log(truth)).abs()[4:].mean()
    err_out = (torch.log(out) - torch.log(truth)).abs()[4:].mean()
    assert float(err_out) < 0.8 * float(err_in)
    # at the leading and trailing edge of the object the output is the current frame (no smear)
    for t in range(1, n):
        for col in (t + 3, t + 9):  # columns whose depth changed between t-1 and t
            assert torch.allclose(out[t, :, col], frames[t, :, col], rtol=1e-6)


def test_gated_blend_limits():
    x = torch.zeros(4, dtype=torch.float64)
    past = torch.tensor([0.0, 0.01, 0.05, 1.0], dtype=torch.float64)
    y = gated_blend(x, past, torch.ones(4, dtype=torch.bool), 0.5, 0.05)
    expect = 0.5 * past * torch.exp(-0.5 * (past / 0.05) ** 2)
    assert torch.allclose(y, expect)
    assert float(y[3]) < 1e-50
    with pytest.raises(ValueError, match="strength"):
        gated_blend(x, past, torch.ones(4, dtype=torch.bool), 1.0, 0.05)


def test_state_dict_resumes_exactly():
    pred, gt, mask, rgb, poses, _ = drifting("indoor", "both", frames=6, noise=0.01)
    full = run(TemporalAligner(filter_strength=0.5), pred, mask, rgb)
    first = TemporalAligner(filter_strength=0.5)
    run(first, pred[:3], mask[:3], rgb[:3])
    resumed = TemporalAligner(filter_strength=0.5)
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    rest = run(resumed, pred[3:], mask[3:], rgb[3:])
    assert torch.equal(rest, full[3:])
