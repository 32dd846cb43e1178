"""Training losses, alignment, LR schedule and EMA against hand-computed numbers."""
import math

import pytest
import torch

from pager.training.ema import EMAModel
from pager.training.losses import (
    align_relative_depth,
    align_scale_shift,
    align_shift,
    cosine_normals_loss,
    depth_losses,
    gradient_l1_loss,
    masked_l1_loss,
    normals_losses,
    saturation_hinge_loss,
)
from pager.training.schedule import ExponentialWarmupSchedule, build_lr_scheduler


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]  # [1, 1, H, W]


# ------------------------------------------------------------------------------------------ L1
def test_masked_l1_valid_and_invalid_terms():
    pred = _t([[1.0, 2.0], [3.0, 4.0]])
    target = _t([[0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])[None, None]
    # valid: |1| and |3| -> 2 ; invalid: |2| and |4| -> 3
    assert masked_l1_loss(pred, target, mask).item() == pytest.approx(2.0)
    assert masked_l1_loss(pred, target, mask, invalid_mask_weight=0.5).item() == pytest.approx(2.0 + 0.5 * 3.0)
    # all valid: no invalid term even with a weight
    full = torch.ones_like(mask)
    assert masked_l1_loss(pred, target, full, invalid_mask_weight=10.0).item() == pytest.approx(2.5)


def test_masked_l1_mask_broadcasts_over_channels():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2).clone()
    target[..., 1] = 100.0  # masked out
    mask = torch.tensor([True, False]).view(1, 1, 1, 2)
    assert masked_l1_loss(pred, target, mask).item() == pytest.approx(2.0)


def test_masked_l1_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        masked_l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), torch.ones(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        masked_l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))


# ------------------------------------------------------------------------------------ gradient
def test_gradient_l1_hand_computed():
    pred = _t([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    target = _t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    # dx of pred: row0 [1, 2], row1 [0, 0] -> mean 0.75 ; dy: [0, -1, -3] -> mean |.| 4/3
    expected = 0.5 * (0.75 + 4.0 / 3.0)
    assert gradient_l1_loss(pred, target, mask).item() == pytest.approx(expected)
    # masking pixel (0, 2) removes dx (0,1)-(0,2) and dy (0,2)-(1,2)
    mask[0, 0, 0, 2] = False
    expected = 0.5 * ((1.0 + 0.0 + 0.0) / 3.0 + (0.0 + 1.0) / 2.0)
    assert gradient_l1_loss(pred, target, mask).item() == pytest.approx(expected)


def test_gradient_l1_is_invariant_to_offset_and_zero_for_equal_gradients():
    g = torch.randn(2, 6, 1, 8, 8)
    mask = torch.rand(2, 6, 1, 8, 8) > 0.3
    assert gradient_l1_loss(g + 5.0, g, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_l1_loss(g * 2.0, g, mask).item() > 0.1


# ------------------------------------------------------------------------------------- normals
def test_cosine_normals_loss_values():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    y = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert cosine_normals_loss(x, x).item() == pytest.approx(0.0)
    assert cosine_normals_loss(x, y).item() == pytest.approx(1.0)
    assert cosine_normals_loss(x, -x).item() == pytest.approx(2.0)
    # non-unit prediction is normalised: 45 degrees -> 1 - cos(45)
    d = torch.tensor([3.0, 3.0, 0.0]).view(1, 3, 1, 1)
    assert cosine_normals_loss(d, x).item() == pytest.approx(1.0 - math.sqrt(0.5), rel=1e-6)
    pred = torch.cat([x, y], dim=-1)
    target = torch.cat([x, x], dim=-1)
    mask = torch.tensor([True, False]).view(1, 1, 1, 2)
    assert cosine_normals_loss(pred, target, mask).item() == pytest.approx(0.0)
    out = normals_losses(pred[:, None], target[:, None], mask[:, None])
    assert out["total_loss"].item() == pytest.approx(0.0)


# ----------------------------------------------------------------------------------- alignment
def test_align_shift_per_sample():
    target = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 9.0]]).view(2, 1, 1, 3)
    pred = torch.tensor([[0.0, 1.0, 5.0], [1.0, 1.0, 1.0]]).view(2, 1, 1, 3)
    mask = torch.tensor([[True, True, False], [True, True, False]]).view(2, 1, 1, 3)
    out = align_shift(pred, target, mask)
    # sample 0: mean(target - pred) over valid = 1 ; sample 1: -1
    assert torch.allclose(out.flatten(1), torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 0.0]]))


def test_align_scale_shift_recovers_affine_map():
    torch.manual_seed(0)
    target = torch.rand(3, 6, 1, 4, 4)
    a = torch.tensor([0.5, 2.0, -1.0]).view(3, 1, 1, 1, 1)
    b = torch.tensor([0.1, -0.3, 0.7]).view(3, 1, 1, 1, 1)
    pred = (target - b) / a
    mask = torch.rand(3, 6, 1, 4, 4) > 0.2
    pred_noisy = torch.where(mask, pred, torch.full_like(pred, 50.0))  # invalid pixels must not matter
    out = align_scale_shift(pred_noisy, target, mask)
    assert torch.allclose(out[mask.expand_as(out)], target[mask.expand_as(target)], atol=1e-4)


def test_align_scale_shift_hand_computed_least_squares():
    # pred 0,1,2 ; target 1,1,4 -> scale 1.5, shift 0.5 (normal equations)
    pred = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 1, 3)
    target = torch.tensor([1.0, 1.0, 4.0]).view(1, 1, 1, 3)
    mask = torch.ones(1, 1, 1, 3, dtype=torch.bool)
    out = align_scale_shift(pred, target, mask)
    assert torch.allclose(out.flatten(), torch.tensor([0.5, 2.0, 3.5]))
    # constant prediction: scale 1, mean offset
    const = torch.ones(1, 1, 1, 3)
    assert torch.allclose(align_scale_shift(const, target, mask).flatten(), torch.full((3,), 2.0))


def test_align_relative_depth_modes():
    pred = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 1, 3)
    target = torch.tensor([1.0, 1.0, 4.0]).view(1, 1, 1, 3)
    mask = torch.ones(1, 1, 1, 3, dtype=torch.bool)
    assert torch.equal(align_relative_depth(pred, target, mask, log_scale=True, metric_depth=True), pred)
    assert torch.allclose(align_relative_depth(pred, target, mask, log_scale=True, metric_depth=False).flatten(), pred.flatten() + 1.0)
    assert torch.allclose(
        align_relative_depth(pred, target, mask, log_scale=False, metric_depth=False).flatten(), torch.tensor([0.5, 2.0, 3.5])
    )


def test_depth_losses_weights_and_alignment():
    target = torch.rand(2, 6, 1, 4, 4) * 2 - 1
    mask = torch.ones(2, 6, 1, 4, 4, dtype=torch.bool)
    # a log-scale relative model that is off by a constant has zero loss; a metric one does not
    rel = depth_losses(target + 0.3, target, mask, log_scale=True, metric_depth=False, grad_loss_weight=1.0)
    assert rel["total_loss"].item() == pytest.approx(0.0, abs=1e-6)
    met = depth_losses(target + 0.3, target, mask, log_scale=True, metric_depth=True, l1_loss_weight=2.0, grad_loss_weight=1.0)
    assert met["l1_loss"].item() == pytest.approx(0.3, rel=1e-5)
    assert met["grad_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert met["total_loss"].item() == pytest.approx(0.6, rel=1e-5)
    with pytest.raises(ValueError, match="normals"):
        depth_losses(target, target, mask, log_scale=True, metric_depth=True, normals_consistency_loss_weight=1.0)


# ------------------------------------------------------------------------- invalid-pixel saturation
@pytest.mark.parametrize("log_scale", [True, False])
def test_saturation_value_decodes_to_the_mask_threshold(log_scale):
    from pager.geometry.depth_encoding import VALID_MAX_FACTOR, decode_depth, saturation_value

    lo, hi = 0.1, 75.0
    s = saturation_value(lo, hi, log_scale=log_scale)
    if log_scale:  # hand-computed: 1 - 2 ln(1/0.99) / ln(750)
        assert s == pytest.approx(1 - 2 * math.log(1 / 0.99) / math.log(750.0), rel=1e-12)
    else:  # 1 - 2 * 0.01 * 75 / 74.9
        assert s == pytest.approx(1 - 2 * 0.01 * 75.0 / 74.9, rel=1e-12)
    # decode_depth works in float32: relative accuracy ~1e-6
    assert decode_depth(torch.tensor(s), lo, hi, log_scale=log_scale).item() == pytest.approx(VALID_MAX_FACTOR * hi, rel=1e-6)
    v = torch.tensor([s - 0.02, s + 1e-4, s + 0.02, 1.5])
    d = decode_depth(v, lo, hi, log_scale=log_scale)
    # what Pager.predict's depth_mask does with them: below the saturation value valid, above invalid
    valid = d < VALID_MAX_FACTOR * hi
    assert valid.tolist() == [True, False, False, False]


def test_saturation_hinge_loss_hand_computed():
    pred = _t([[1.2, 0.9], [0.95, -0.5]])
    invalid = torch.tensor([[True, True], [False, False]])[None, None]
    valid = torch.tensor([[False, False], [True, True]])[None, None]
    s, m = 0.99, 0.02
    # invalid: relu(1.01 - 1.2) = 0, relu(1.01 - 0.9) = 0.11 -> mean 0.055
    # valid:   relu(0.95 - 0.97) = 0, relu(-0.5 - 0.97) = 0 -> 0
    assert saturation_hinge_loss(pred, valid, invalid, s, m).item() == pytest.approx(0.055, rel=1e-5)
    # a valid pixel too close to saturation: relu(0.99 - 0.97) = 0.02 over 2 valid pixels
    pred2 = _t([[1.2, 1.2], [0.99, -0.5]])
    assert saturation_hinge_loss(pred2, valid, invalid, s, m).item() == pytest.approx(0.01, rel=1e-5)
    # pixels in neither mask are free; empty masks give 0
    none = torch.zeros_like(valid)
    assert saturation_hinge_loss(pred, none, none, s, m).item() == 0.0
    with pytest.raises(ValueError, match="margin"):
        saturation_hinge_loss(pred, valid, invalid, s, -0.1)
    with pytest.raises(ValueError, match="bool"):
        saturation_hinge_loss(pred, valid.float(), invalid, s, m)


def test_depth_losses_saturation_term_uses_the_unaligned_prediction():
    target = torch.rand(1, 6, 1, 4, 4) * 1.6 - 0.9  # valid depth in [-0.9, 0.7]
    mask = torch.ones(1, 6, 1, 4, 4, dtype=torch.bool)
    mask[:, 0] = False  # face 0: sky
    invalid = ~mask
    pred = torch.where(mask, target, torch.full_like(target, 2.0))  # exact where valid, far above where invalid
    out = depth_losses(pred, target, mask, log_scale=True, metric_depth=False, saturation_weight=1.0,
                       invalid=invalid, saturation=0.99)
    assert out["l1_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["saturation_loss"].item() == 0.0 and out["total_loss"].item() == pytest.approx(0.0, abs=1e-6)
    # a relative model is free to shift its valid depth, but not up into the saturated range:
    # shifted by +0.5, valid pixels above 0.97 cost (x - 0.97) each, the aligned L1 stays 0
    shifted = torch.where(mask, target + 0.5, pred)
    out = depth_losses(shifted, target, mask, log_scale=True, metric_depth=False, saturation_weight=2.0,
                       invalid=invalid, saturation=0.99)
    expected = torch.relu(target + 0.5 - 0.97)[mask].mean().item()
    assert out["saturation_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["total_loss"].item() == pytest.approx(2.0 * expected, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="invalid-pixel mask"):
        depth_losses(pred, target, mask, log_scale=True, metric_depth=False, saturation_weight=1.0)


def test_alignment_is_differentiable():
    pred = torch.randn(1, 6, 1, 4, 4, requires_grad=True)
    target = torch.randn(1, 6, 1, 4, 4)
    mask = torch.ones_like(target, dtype=torch.bool)
    loss = depth_losses(pred, target, mask, log_scale=False, metric_depth=False)["total_loss"]
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ schedule
def test_schedule_warmup_then_exponential_decay():
    s = ExponentialWarmupSchedule(total_steps=100, warmup_ratio=0.1, final_ratio=0.01)
    assert s.warmup_steps == 10
    assert [s(n) for n in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert s(10) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.01 ** 0.5)  # half-way through the 90 decay steps
    assert s(100) == pytest.approx(0.01) and s(1000) == pytest.approx(0.01)
    no_warmup = ExponentialWarmupSchedule(total_steps=10, warmup_ratio=0.0)
    assert no_warmup(0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ExponentialWarmupSchedule(total_steps=10, warmup_ratio=1.5)


def test_lr_scheduler_state_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = build_lr_scheduler(opt, total_steps=20, warmup_ratio=0.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 1 / 5)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=2.0)
    sched2 = build_lr_scheduler(opt2, total_steps=20, warmup_ratio=0.25)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(2.0 * 0.01 ** (2 / 15))
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())


# ----------------------------------------------------------------------------------------- EMA
def test_ema_updates_trainable_parameters_only():
    model = torch.nn.Linear(1, 1)
    model.bias.requires_grad_(False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMAModel(model, decay=0.5)
    assert set(ema.shadow) == {"weight"}
    ema.step(model)  # first update: decay 0 -> copy
    assert ema.shadow["weight"].item() == pytest.approx(1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.step(model)  # decay min(0.5, 2/11) = 2/11
    d = 2.0 / 11.0
    assert ema.shadow["weight"].item() == pytest.approx(d * 1.0 + (1 - d) * 3.0)
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.step(model)  # decay min(0.5, 3/12) = 0.25
    expected = 0.25 * (d * 1.0 + (1 - d) * 3.0) + 0.75 * 5.0
    assert ema.shadow["weight"].item() == pytest.approx(expected)
    with ema.average_parameters(model):
        assert model.weight.item() == pytest.approx(expected)
    assert model.weight.item() == pytest.approx(5.0)
    avg = ema.averaged_state_dict(model)
    assert avg["weight"].item() == pytest.approx(expected) and model.weight.item() == pytest.approx(5.0)


def test_ema_state_round_trip_and_mismatch():
    model = torch.nn.Linear(2, 2)
    ema = EMAModel(model, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.step(model)
    other = EMAModel(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    with pytest.raises(ValueError, match="names differ"):
        EMAModel(torch.nn.Sequential(torch.nn.Linear(2, 2))).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="shape"):
        EMAModel(torch.nn.Linear(3, 2)).load_state_dict(ema.state_dict())


def test_normals_consistency_loss_on_floor_and_ceiling():
    from pager.training.losses import normals_consistency_loss

    h, w = 32, 64
    phi = math.pi / 2 - math.pi * (torch.arange(h, dtype=torch.float64) + 0.5) / h  # latitude of row centres
    sin = torch.sin(phi).view(1, 1, h, 1).expand(1, 1, h, w)
    # floor 1.5 m below the camera, ceiling 2 m above: range = height / |sin(latitude)|
    depth = torch.where(sin < 0, 1.5 / (-sin), 2.0 / sin).float().requires_grad_(True)
    gt = torch.zeros(1, 3, h, w)
    gt[:, 1] = torch.where(sin[:, 0] < 0, 1.0, -1.0).float()  # floor faces up (+y), ceiling down
    mask = (sin.abs() > 0.3).clone()  # away from the horizon, where floor and ceiling meet
    loss = normals_consistency_loss(depth, gt, mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-3)
    assert normals_consistency_loss(depth, -gt, mask).item() == pytest.approx(2.0, abs=1e-3)
    tilted = gt.clone()
    tilted[:, 0], tilted[:, 1] = math.sin(0.5) * gt[:, 1], math.cos(0.5) * gt[:, 1]
    assert normals_consistency_loss(depth, tilted, mask).item() == pytest.approx(1 - math.cos(0.5), abs=1e-3)
    normals_consistency_loss(depth, tilted, mask).backward()
    assert depth.grad is not None and torch.isfinite(depth.grad).all()
    # GT pixels without a normal (zero vector) are not supervised
    gt_holes = tilted.clone()
    gt_holes[..., : w // 2] = 0.0
    assert normals_consistency_loss(depth.detach(), gt_holes, mask).item() == pytest.approx(1 - math.cos(0.5), abs=1e-3)
