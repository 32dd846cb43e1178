"""Video metrics: temporal flicker of depth predictions and per-frame accuracy over a sequence.

Flicker (``flicker``, ``sequence_flicker``)
    For consecutive frames ``t`` (source) and ``t+1`` (target) with true range depth ``D`` and camera
    poses, every target pixel ``p`` is reprojected into frame ``t`` with the *true* geometry
    (:func:`pager.geometry.warp.reproject_visibility`): it lands at ``q`` and has the true range
    ``R_t(p)`` there. Only pixels visible in both frames (and valid in both predictions) count. The
    change of the prediction along that correspondence, minus the true change of range, is

        r(p) = [log P_{t+1}(p) - log P_t(q)] - [log D_{t+1}(p) - log R_t(p)]

    (``P_t(q)`` sampled bilinearly), and the flicker of the pair is ``mean |r|`` over those pixels: zero
    for any prediction that is exactly consistent over time (a correct depth up to one fixed scale, a
    static camera with identical predictions), ``|log k|`` for a pair where one frame is scaled by ``k``.
    Unit: natural-log depth (0.01 ~ 1 % of depth). It is the "temporal consistency" error of
    video-depth work (e.g. Luo et al., "Consistent Video Depth Estimation", SIGGRAPH 2020, which
    compares reprojected depths of frame pairs), written for ERP frames and log depth.

Per-frame accuracy (``frame_depth_metrics``)
    :func:`pager.evaluation.metrics.depth_metrics` of every frame after aligning it (``per_frame``:
    each frame by its own ``alignment``; ``sequence``: one log-depth shift for the whole sequence,
    i.e. one scale, which is what a consistent relative-depth video should need).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from pager.evaluation.metrics import _as_maps, _as_mask, align_prediction, depth_metrics

__all__ = ["flicker", "sequence_flicker", "frame_depth_metrics", "align_sequence_log_shift"]

#: Floor (metres) of depths inside the logarithms.
LOG_FLOOR = 1e-6


def flicker(pred_src: torch.Tensor, pred_tgt: torch.Tensor, gt_src: torch.Tensor, gt_tgt: torch.Tensor,
            src_from_tgt: torch.Tensor, mask_src: Optional[torch.Tensor] = None, mask_tgt: Optional[torch.Tensor] = None,
            pred_mask_src: Optional[torch.Tensor] = None, pred_mask_tgt: Optional[torch.Tensor] = None,
            rel_tol: float = 0.03) -> Dict[str, torch.Tensor]:
    """Flicker between frame pairs (module docstring); every value is ``[B]`` (``nan`` with no common pixel).

    Args:
        pred_src, pred_tgt: predicted depth ``[B, H, W]`` (``[H, W]`` accepted) of frames ``t`` and ``t+1``,
            any positive unit (a relative model's scale cancels only if it is the same in both frames).
        gt_src, gt_tgt: true range depth in metres, same shape; ``mask_*``: their valid pixels
            (default ``gt > 0``); ``pred_mask_*``: valid predicted pixels (default ``pred > 0``).
        src_from_tgt: ``[B, 4, 4]`` or ``[4, 4]`` target-to-source transform
            (:func:`pager.geometry.warp.relative_pose` of the true camera-to-world poses).
        rel_tol: occlusion tolerance of the visibility test (relative range).

    Returns:
        ``{"flicker": mean |r|, "flicker_median": median |r|, "covisible": fraction of the target's
        valid pixels used}``.
    """
    from pager.geometry.warp import erp_sample, reproject_visibility

    ps, pt, gs, gt = (_as_maps(x, n) for x, n in ((pred_src, "pred_src"), (pred_tgt, "pred_tgt"),
                                                  (gt_src, "gt_src"), (gt_tgt, "gt_tgt")))
    if not (ps.shape == pt.shape == gs.shape == gt.shape):
        raise ValueError(f"flicker: pred/gt maps must share one shape, got {tuple(ps.shape)}, {tuple(pt.shape)}, "
                         f"{tuple(gs.shape)}, {tuple(gt.shape)}")
    dt = torch.float64
    ps, pt, gs, gt = (x.to(dt) for x in (ps, pt, gs, gt))
    ms = _as_mask(mask_src, gs, "mask_src") & (gs > 0) & torch.isfinite(gs)
    mt = _as_mask(mask_tgt, gt, "mask_tgt") & (gt > 0) & torch.isfinite(gt)
    pms = _as_mask(pred_mask_src, ps, "pred_mask_src") & torch.isfinite(ps) & (ps > 0)
    pmt = _as_mask(pred_mask_tgt, pt, "pred_mask_tgt") & torch.isfinite(pt) & (pt > 0)
    theta, phi, rng, visible = reproject_visibility(gt, gs, src_from_tgt, mt, ms, rel_tol=rel_tol)
    log_ps = torch.log(torch.where(pms, ps, torch.ones_like(ps)).clamp_min(LOG_FLOOR))
    sampled = erp_sample(log_ps.unsqueeze(1), theta, phi)[:, 0]
    pred_ok = erp_sample(pms.unsqueeze(1).to(dt), theta, phi)[:, 0] > 1.0 - 1e-6
    use = visible & pred_ok & pmt
    log_pt = torch.log(torch.where(pmt, pt, torch.ones_like(pt)).clamp_min(LOG_FLOOR))
    r = (log_pt - sampled) - (torch.log(torch.where(mt, gt, torch.ones_like(gt))) - torch.log(rng.clamp_min(LOG_FLOOR)))
    a = torch.where(use, r.abs(), torch.zeros_like(r))
    n = use.sum(dim=(-2, -1))
    nan = torch.full(n.shape, float("nan"), dtype=dt, device=n.device)
    mean = torch.where(n > 0, a.sum(dim=(-2, -1)) / n.clamp_min(1), nan)
    med = torch.stack([torch.nanmedian(torch.where(u, x, torch.full_like(x, float("nan"))).flatten()) if bool(u.any())
                       else nan[0] for x, u in zip(r.abs(), use)])
    cov = torch.where(mt.sum(dim=(-2, -1)) > 0, n / mt.sum(dim=(-2, -1)).clamp_min(1), nan)
    return {"flicker": mean, "flicker_median": med, "covisible": cov}


def sequence_flicker(pred: torch.Tensor, gt: torch.Tensor, poses: torch.Tensor, mask: Optional[torch.Tensor] = None,
                     pred_mask: Optional[torch.Tensor] = None, rel_tol: float = 0.03) -> Dict[str, torch.Tensor]:
    """Flicker of every consecutive pair of a sequence: ``pred``, ``gt``, ``mask`` ``[N, H, W]``, ``poses``
    ``[N, 4, 4]`` camera-to-world (metres); returns ``[N - 1]`` values per key of :func:`flicker`."""
    from pager.geometry.warp import relative_pose

    if pred.shape[0] < 2:
        raise ValueError(f"sequence_flicker needs at least 2 frames, got {pred.shape[0]}")
    if poses.shape != (pred.shape[0], 4, 4):
        raise ValueError(f"poses must be [N={pred.shape[0]}, 4, 4], got {tuple(poses.shape)}")
    rel = relative_pose(poses[:-1].double(), poses[1:].double())
    sl = lambda x, a, b: None if x is None else x[a:b]  # noqa: E731
    return flicker(pred[:-1], pred[1:], gt[:-1], gt[1:], rel, sl(mask, 0, -1), sl(mask, 1, None),
                   sl(pred_mask, 0, -1), sl(pred_mask, 1, None), rel_tol=rel_tol)


def align_sequence_log_shift(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One scale for a whole sequence: ``exp(mean(log gt - log pred))`` over the valid pixels of all
    frames ``[N, H, W]``; returns the scaled prediction (``ValueError`` when no pixel is valid)."""
    p, g = _as_maps(pred, "pred"), _as_maps(gt, "gt")
    m = _as_mask(mask, g) & (g > 0) & (p > 0) & torch.isfinite(p)
    n, h, w = p.shape
    return align_prediction(p.reshape(1, n * h, w), g.reshape(1, n * h, w), m.reshape(1, n * h, w), "log_shift").reshape(p.shape)


def frame_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None,
                        alignment: str = "log_shift", scope: str = "per_frame") -> Dict[str, torch.Tensor]:
    """Depth metrics of every frame ``[N, H, W]`` -> ``{name: [N]}`` (names of ``DEPTH_METRICS``).

    ``scope="per_frame"``: each frame aligned by itself with ``alignment`` (``metric``/``none`` for metric
    models); ``scope="sequence"``: one log-depth shift (a single scale) for the whole sequence.
    """
    p, g = _as_maps(pred, "pred"), _as_maps(gt, "gt")
    m = _as_mask(mask, g) & (g > 0)
    if scope == "per_frame":
        aligned = align_prediction(p, g, m, alignment)
    elif scope == "sequence":
        aligned = align_sequence_log_shift(p, g, m)
    else:
        raise ValueError(f"scope must be 'per_frame' or 'sequence', got {scope!r}")
    return depth_metrics(aligned, g, m)
