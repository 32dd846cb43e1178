"""Temporal consistency of per-frame depth: one scale for a whole sequence and an edge-preserving filter.

A relative-depth model (``metric_depth: false``) predicts every frame up to its own unknown scale, so
independent frames flicker even when each is good. :class:`TemporalAligner` processes the frames in
order and works on log depth ``x = log d`` (a scale is a shift there):

1. **Yaw turn.** The camera's turn about the up axis between frames is estimated from the RGB frames
   by phase correlation along the ERP rows (:func:`estimate_yaw_shift`; a yaw turn is a column roll,
   :mod:`pager.geometry.warp`).
2. **Alignment.** Frame ``t`` gets the log shift ``beta`` that best maps it onto the reference (a running
   average of the previously aligned frames, rolled by the yaw turn) over the pixels that agree
   (:func:`robust_log_shift`): ``r = ref - x`` on pixels valid in both; start at ``beta = median(r)``;
   scale ``sigma = 1.4826 MAD(r)``; pixels with ``|r - beta| > 3 sigma`` are rejected (moving objects,
   disocclusions, depth edges); then iteratively reweighted Huber steps (``k = 1.345 sigma``; Huber 1964,
   "Robust estimation of a location parameter") give ``beta``. The aligned frame is ``exp(x + beta)``:
   one scale for the whole sequence, that of the first frame (whose own scale is kept).
3. **Motion compensation** (``motion_compensation="pose"``, the default). The camera motion since the
   previous frame, rotation and translation (the translation in the sequence's depth unit: a relative
   model's scale is free), is estimated by direct alignment of the grey images and the aligned depth on
   a low-resolution sphere, started at the yaw turn (:func:`pager.video.motion.estimate_motion`). The
   previous frame's reference and filtered depth are then carried into the current frame with it
   (:func:`warp_log_map`: each current pixel is reprojected into the previous frame with its own depth,
   the past log depth there is read and moved by the change of range the geometry predicts), and
   ``beta`` is refined once against the carried reference. With ``"yaw"`` the past is only rolled by
   the yaw turn; with ``"none"`` it is read at the same pixel.
4. **Reference update.** ``ref <- x + beta`` blended with the carried old reference, gated like the filter.
5. **Optional temporal filter** (``filter_strength = a`` in [0, 1)): ``y_t = x_t + a g (w(y_{t-1}) - x_t)``
   with ``w`` the motion compensation of step 3 and the per-pixel agreement gate
   ``g = exp(-(delta / tau)^2 / 2)``, ``delta = w(y_{t-1}) - x_t``. Where the new frame disagrees with the
   carried past by more than about ``tau`` in log depth (a moving object or edge, a disocclusion, a
   point the previous frame did not see) ``g`` is ~0 and the new frame is taken as it is, so moving
   edges are not blurred or dragged; where they agree, noise is averaged (an exponential moving average
   along the estimated motion, gated per pixel in the spirit of a bilateral filter over time). Without
   motion compensation the past of a translating camera lags behind (the "ghost" of the filter).

6. **Two-sided filter** (:class:`BackwardSmoother`, :func:`filter_sequence`; ``pager video`` unless
   ``--causal_filter``). Even along the right motion a forward filter lags when the model's error
   changes steadily along the sequence (measured: a camera walking through a room gets better depth as it
   goes on, and the forward filter keeps the older, worse frames). After the last frame the same gated filter
   runs backwards along the inverse motions, and the output is the mean of both passes in log depth:
   symmetric weights about each frame, so a steady trend cancels.

Metric models (``metric_depth: true``) are not aligned (their metres are kept); the motion compensation
and the filter, when on, still apply. The state is a handful of ``[H, W]`` tensors (:meth:`state_dict` /
:meth:`load_state_dict`) so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ["robust_log_shift", "estimate_yaw_shift", "gated_blend", "edge_free", "warp_log_map", "TemporalAligner", "MOTION_MODES",
           "BackwardSmoother", "filter_sequence", "inverse_pose"]

HUBER_K = 1.345
REJECT_SIGMAS = 3.0
MAD_TO_SIGMA = 1.4826


def _masked_median(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Lower median of ``x [B, N]`` over ``m`` per row (``nan`` for an empty row)."""
    return torch.nanmedian(torch.where(m, x, torch.full_like(x, float("nan"))), dim=1).values


def robust_log_shift(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, iters: int = 8,
                     min_sigma: float = 1e-4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Robust shift ``beta`` with ``x + beta ~ ref`` (module docstring, step 2).

    Args:
        x, ref: ``[B, H, W]`` (or ``[H, W]``) log depths; ``mask``: bool, same shape, pixels valid in both.
        iters: Huber reweighting steps after the median start.
        min_sigma: floor of the residual scale (identical maps would otherwise give ``sigma = 0``).

    Returns:
        ``(beta [B], inliers [B, H, W])``: the shift (0 where the mask is empty) and the pixels that agree.
    """
    squeeze = x.dim() == 2
    if squeeze:
        x, ref, mask = x[None], ref[None], mask[None]
    if x.shape != ref.shape or x.shape != mask.shape:
        raise ValueError(f"robust_log_shift: x {tuple(x.shape)}, ref {tuple(ref.shape)}, mask {tuple(mask.shape)} must match")
    b = x.shape[0]
    dt = torch.float32 if x.device.type == "mps" else torch.float64
    r = (ref - x).reshape(b, -1).to(dt)
    m = mask.reshape(b, -1) & torch.isfinite(r)
    beta = _masked_median(r, m)
    sigma = (MAD_TO_SIGMA * _masked_median((r - beta[:, None]).abs(), m)).clamp_min(min_sigma)
    inl = m & ((r - beta[:, None]).abs() <= REJECT_SIGMAS * sigma[:, None])
    for _ in range(iters):
        dev = (r - beta[:, None]).abs()
        w = torch.where(inl, (HUBER_K * sigma[:, None] / dev.clamp_min(1e-12)).clamp(max=1.0), torch.zeros_like(r))
        den = w.sum(dim=1)
        beta = torch.where(den > 0, (w * torch.where(inl, r, torch.zeros_like(r))).sum(dim=1) / den.clamp_min(1e-30), beta)
        inl = m & ((r - beta[:, None]).abs() <= REJECT_SIGMAS * sigma[:, None])
    beta = torch.nan_to_num(beta, nan=0.0)
    inliers = inl.reshape(x.shape)
    beta = beta.to(x.dtype)
    return (beta[0], inliers[0]) if squeeze else (beta, inliers)


def estimate_yaw_shift(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """Integer column shift ``s`` with ``cur ~ roll(prev, s)`` (a camera turn about the up axis).

    ``prev``, ``cur``: ``[B, H, W]`` (or ``[H, W]``) grey ERP images. Phase correlation along every row
    (rows with their mean removed, weighted by ``cos(latitude)``, the cross-power spectra summed over
    rows and normalised to unit magnitude; Kuglin & Hines 1975), then the peak. Returns ``[B]`` (or a
    scalar) int64 in ``(-W/2, W/2]``; ``s * 2 pi / W`` is the yaw increment in radians.
    """
    squeeze = prev.dim() == 2
    if squeeze:
        prev, cur = prev[None], cur[None]
    if prev.shape != cur.shape or prev.dim() != 3:
        raise ValueError(f"estimate_yaw_shift: prev {tuple(prev.shape)} and cur {tuple(cur.shape)} must be [B, H, W]")
    h, w = prev.shape[-2:]
    dt = torch.float32 if prev.device.type == "mps" else torch.float64
    rows = (torch.arange(h, device=prev.device, dtype=dt) + 0.5) / h
    wt = torch.cos(math.pi / 2 - math.pi * rows).clamp_min(0.0)[None, :, None]
    a = prev.to(dt) - prev.to(dt).mean(dim=-1, keepdim=True)
    c = cur.to(dt) - cur.to(dt).mean(dim=-1, keepdim=True)
    cross = (torch.fft.rfft(c * wt, dim=-1) * torch.conj(torch.fft.rfft(a * wt, dim=-1))).sum(dim=1)
    corr = torch.fft.irfft(cross / cross.abs().clamp_min(1e-12), n=w, dim=-1)
    s = corr.argmax(dim=-1)
    s = torch.where(s > w // 2, s - w, s)
    return s[0] if squeeze else s


def gated_blend(x: torch.Tensor, past: torch.Tensor, valid: torch.Tensor, strength: float, tau: float) -> torch.Tensor:
    """``x + strength * g * (past - x)`` with ``g = exp(-((past - x) / tau)^2 / 2)`` where ``valid``, else ``x``.

    ``x``, ``past``: log depths (same shape); ``strength`` in [0, 1); ``tau`` > 0 (log depth, ~relative depth).
    """
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"filter strength must be in [0, 1), got {strength}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    delta = torch.where(valid, past - x, torch.zeros_like(x))
    gate = torch.exp(-0.5 * (delta / tau) ** 2)
    return x + strength * gate * delta


MOTION_MODES = ("pose", "yaw", "none")


def edge_free(values: torch.Tensor, valid: torch.Tensor, tol: float) -> torch.Tensor:
    """Valid ERP pixels of ``values [..., H, W]`` whose 8 neighbours (columns wrap) differ from them by at most
    ``tol`` where valid: bilinear samples between such pixels never mix the two sides of a step larger than
    ``tol`` (a depth edge), so a warped past cannot smear an edge."""
    v = torch.where(valid, values, torch.zeros_like(values))
    pad = torch.cat((v[..., :1, :], v, v[..., -1:, :]), dim=-2)
    pad = torch.cat((pad[..., -1:], pad, pad[..., :1]), dim=-1)
    mpad = torch.cat((valid[..., :1, :], valid, valid[..., -1:, :]), dim=-2)
    mpad = torch.cat((mpad[..., -1:], mpad, mpad[..., :1]), dim=-1)
    h, w = values.shape[-2:]
    ok = valid.clone()
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            if di == 1 and dj == 1:
                continue
            n, nm = pad[..., di:di + h, dj:dj + w], mpad[..., di:di + h, dj:dj + w]
            ok &= ~nm | ((n - v).abs() <= tol)
    return ok


def warp_log_map(values: torch.Tensor, valid: torch.Tensor, log_depth: torch.Tensor, src_from_tgt: torch.Tensor,
                 edge_tol: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A log-depth map of the previous (source) frame carried into the current (target) frame.

    Every target pixel ``p`` with log depth ``x(p)`` is reprojected into the source
    (:func:`pager.geometry.warp.erp_reproject`, at ``q`` with range ``|X'(p)|``); the source's log range of that
    surface point, ``values(q)`` (bilinear), is moved to the target camera by the change of range that
    the geometry predicts: ``values(q) - log |X'(p)| + x(p)``. Where ``values`` is exactly consistent with
    ``x`` and the motion, the result equals ``x``; a difference is flicker, an occlusion or a moving object.

    Args:
        values, valid: ``[H, W]`` source log depth and its valid pixels.
        log_depth: ``[H, W]`` target log depth (its invalid pixels may hold anything finite).
        src_from_tgt: ``[4, 4]`` target-to-source transform in the unit of the depth.
        edge_tol: when given, source pixels next to a step larger than this (log depth) count as invalid
            (:func:`edge_free`), so no sample mixes the two sides of a depth edge.

    Returns:
        ``(warped [H, W], ok [H, W])``: ``ok`` where all four bilinear neighbours of ``q`` are valid.
    """
    from pager.geometry.warp import erp_reproject, erp_sample

    if edge_tol is not None:
        valid = edge_free(values, valid, edge_tol)
    theta, phi, rng = erp_reproject(torch.exp(log_depth)[None], src_from_tgt.to(log_depth.dtype))
    sampled = erp_sample(torch.where(valid, values, torch.zeros_like(values))[None, None].to(log_depth.dtype), theta, phi)[0, 0]
    ok = erp_sample(valid[None, None].to(log_depth.dtype), theta, phi)[0, 0] > 1.0 - 1e-6
    return sampled - torch.log(rng[0].clamp_min(1e-30)) + log_depth, ok


class TemporalAligner:
    """Frame-by-frame alignment and filtering of depth (module docstring); feed frames in order to :meth:`step`.

    Args:
        align: estimate one scale for the sequence (relative models); ``False`` keeps each frame's values
            (metric models).
        filter_strength: ``a`` of the temporal filter (0 = off).
        tau: agreement scale of the gates, in log depth (0.05 ~ 5 % of depth).
        reference_strength: weight of the past in the running reference used for the alignment.
        motion_compensation: how the past is carried into the current frame: ``"pose"`` (default; the full
            camera motion from :func:`pager.video.motion.estimate_motion`, started at the yaw turn),
            ``"yaw"`` (the phase-correlation yaw turn only, a column roll), ``"none"`` (same pixel).
            ``True`` / ``False`` mean ``"pose"`` / ``"none"``.
        motion_levels: pyramid heights of the pose estimate (coarse to fine).
    """

    def __init__(self, align: bool = True, filter_strength: float = 0.0, tau: float = 0.05,
                 reference_strength: float = 0.5, motion_compensation="pose",
                 motion_levels: Tuple[int, ...] = (32, 64, 128)) -> None:
        if not 0.0 <= filter_strength < 1.0:
            raise ValueError(f"filter strength must be in [0, 1), got {filter_strength}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if isinstance(motion_compensation, bool):
            motion_compensation = "pose" if motion_compensation else "none"
        if motion_compensation not in MOTION_MODES:
            raise ValueError(f"motion_compensation must be one of {MOTION_MODES}, got {motion_compensation!r}")
        self.align = bool(align)
        self.filter_strength = float(filter_strength)
        self.tau = float(tau)
        self.reference_strength = float(reference_strength)
        self.motion_compensation = motion_compensation
        self.motion_levels = tuple(int(h) for h in motion_levels)
        self.state: Dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.state = {}

    @staticmethod
    def _grey(rgb: torch.Tensor) -> torch.Tensor:
        """uint8 / float ``[H, W, 3]`` -> float32 ``[H, W]`` luma."""
        rgb = rgb.float() / (255.0 if rgb.dtype == torch.uint8 else 1.0)
        return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]

    def step(self, depth: torch.Tensor, mask: torch.Tensor, rgb: Optional[torch.Tensor] = None,
             src_from_tgt: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Process the next frame: ``depth [H, W]`` (> 0 where ``mask``), ``mask [H, W]`` bool, ``rgb [H, W, 3]``
        (for the motion estimate; without it the past is compared at the same pixel). Returns the consistent
        depth ``[H, W]`` (invalid pixels unchanged) and ``{"scale": exp(beta), "yaw_shift": columns,
        "inliers": fraction, "rotation_deg": angle of the estimated turn since the previous frame,
        "translation": [x, y, z] camera displacement in the previous frame's camera axes, depth units}``."""
        from pager.geometry.warp import yaw_pose

        if depth.dim() != 2 or mask.shape != depth.shape:
            raise ValueError(f"TemporalAligner.step: depth [H, W] and a mask of the same shape, got {tuple(depth.shape)}, {tuple(mask.shape)}")
        mask = mask & torch.isfinite(depth) & (depth > 0)
        x = torch.log(torch.where(mask, depth, torch.ones_like(depth)).double())
        grey = self._grey(rgb) if (rgb is not None and self.motion_compensation != "none") else None
        info: Dict[str, Any] = {"scale": 1.0, "yaw_shift": 0, "inliers": 1.0, "rotation_deg": 0.0, "translation": [0.0, 0.0, 0.0]}
        st = self.state
        if not st:
            beta = torch.zeros((), dtype=x.dtype, device=x.device)
            ref, ref_m = x, mask
            out_x = x
        else:
            if st["ref"].shape != x.shape:
                raise ValueError(f"frame size changed from {tuple(st['ref'].shape)} to {tuple(x.shape)} within a sequence")
            past = {k: st[k].to(x.device) for k in ("ref", "ref_mask", "filt", "filt_mask")}
            shift = 0
            have_grey = grey is not None and "grey" in st
            if have_grey:
                shift = int(estimate_yaw_shift(st["grey"].to(grey.device), grey))
            roll = (lambda t: torch.roll(t, shift, dims=-1)) if shift else (lambda t: t)
            ref_old, ref_m_old = roll(past["ref"]), roll(past["ref_mask"])
            beta = torch.zeros((), dtype=x.dtype, device=x.device)
            if self.align and bool((mask & ref_m_old).any()):
                beta, inl = robust_log_shift(x, ref_old, mask & ref_m_old)
                info["inliers"] = float(inl.sum()) / max(int((mask & ref_m_old).sum()), 1)
            filt_old, filt_m_old = roll(past["filt"]), roll(past["filt_mask"])
            if src_from_tgt is not None or (self.motion_compensation == "pose" and have_grey):
                from pager.video.motion import estimate_motion, rotation_angle

                if src_from_tgt is not None:
                    pose = src_from_tgt.to(device=x.device, dtype=x.dtype)
                else:
                    init = yaw_pose(2.0 * math.pi * shift / x.shape[-1]).to(x.device)
                    pose, _ = estimate_motion(torch.exp(x + beta), grey, st["grey"].to(grey.device), torch.exp(past["filt"]),
                                              mask, past["filt_mask"], init=init, levels=self.motion_levels)
                    pose = pose.to(x.dtype)
                info["src_from_tgt"] = pose.detach().cpu()
                ref_old, ref_m_old = warp_log_map(past["ref"], past["ref_mask"], x + beta, pose)
                if self.align and bool((mask & ref_m_old).any()):
                    # refine the scale against the motion-compensated reference, then warp again with it
                    dbeta, inl = robust_log_shift(x + beta, ref_old, mask & ref_m_old)
                    beta = beta + dbeta
                    info["inliers"] = float(inl.sum()) / max(int((mask & ref_m_old).sum()), 1)
                    ref_old, ref_m_old = warp_log_map(past["ref"], past["ref_mask"], x + beta, pose)
                filt_old, filt_m_old = warp_log_map(past["filt"], past["filt_mask"], x + beta, pose, edge_tol=self.tau)
                info["rotation_deg"] = math.degrees(float(rotation_angle(pose)))
                info["translation"] = [float(v) for v in pose[:3, 3]]
            elif shift:
                info["rotation_deg"] = abs(360.0 * shift / x.shape[-1])
                info["src_from_tgt"] = yaw_pose(2.0 * math.pi * shift / x.shape[-1])  # the roll, as a rotation
            x = x + beta
            ref = gated_blend(x, ref_old, mask & ref_m_old, self.reference_strength, self.tau)
            ref_m = mask
            out_x = x
            if self.filter_strength > 0:
                out_x = gated_blend(x, filt_old, mask & filt_m_old, self.filter_strength, self.tau)
            info["yaw_shift"] = shift
        info["scale"] = float(torch.exp(beta))
        self.state = {"ref": ref, "ref_mask": ref_m, "filt": out_x, "filt_mask": mask}
        if grey is not None:
            self.state["grey"] = grey
        out = torch.where(mask, torch.exp(out_x), depth.double()).to(depth.dtype)
        return out, info

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The state as CPU tensors (empty before the first frame)."""
        return {k: v.detach().cpu() for k, v in self.state.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (a resumed run then continues exactly)."""
        missing = {"ref", "ref_mask", "filt", "filt_mask"} - set(state)
        if state and missing:
            raise ValueError(f"temporal state lacks {sorted(missing)}")
        self.state = {k: torch.as_tensor(v) for k, v in state.items()}


def inverse_pose(pose: torch.Tensor) -> torch.Tensor:
    """Inverse ``[4, 4]`` of a rigid transform ``[[R, t], [0, 1]]``: ``[[R^T, -R^T t], [0, 1]]``."""
    from pager.geometry.warp import relative_pose

    return relative_pose(pose, torch.eye(4, dtype=pose.dtype, device=pose.device))[0]


class BackwardSmoother:
    """The backward pass of the two-sided temporal filter; feed the frames in *reverse* order to :meth:`step`.

    The forward filter of :class:`TemporalAligner` is an exponential average of the past, so where the
    model's error changes steadily along the sequence (a camera walking towards the part of a room the model
    gets right) its output lags behind the current frame. The same gated filter run backwards (the future,
    carried into each frame along the inverse of the motions the forward pass estimated) lags the other way;
    the output is the mean of both in log depth, ``s_t = (y_t + z_t) / 2``. Its weights over the frames are
    symmetric about ``t`` (``a^|k|``), so a steady trend cancels and the noise is averaged over both sides
    (a forward-backward smoother in the spirit of Rauch, Tung & Striebel 1965). Where either pass's gate
    rejects the past or future (a moving edge, a disocclusion), that side is the current frame, so edges
    stay sharp.

    Args:
        filter_strength: ``a`` in [0, 1), as the forward filter; ``tau``: its gate scale (log depth).
    """

    def __init__(self, filter_strength: float, tau: float) -> None:
        if not 0.0 <= filter_strength < 1.0:
            raise ValueError(f"filter strength must be in [0, 1), got {filter_strength}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.filter_strength = float(filter_strength)
        self.tau = float(tau)
        self.state: Dict[str, torch.Tensor] = {}

    def step(self, aligned: torch.Tensor, mask: torch.Tensor, forward: torch.Tensor,
             next_from_this: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Frame ``t`` (frames in reverse order): ``aligned [H, W]`` its depth after the alignment (unfiltered,
        one scale for the sequence), ``mask`` its valid pixels, ``forward`` the forward filter's output, and
        ``next_from_this [4, 4]`` the transform of this frame's camera into frame ``t + 1``'s (the inverse of
        the ``src_from_tgt`` the forward pass reported for frame ``t + 1``; ``None``: same pixel). Returns the
        two-sided result ``[H, W]`` (``forward`` at invalid pixels)."""
        if aligned.shape != mask.shape or forward.shape != mask.shape or aligned.dim() != 2:
            raise ValueError(f"BackwardSmoother.step: aligned, mask, forward must be [H, W] alike, got "
                             f"{tuple(aligned.shape)}, {tuple(mask.shape)}, {tuple(forward.shape)}")
        mask = mask & torch.isfinite(aligned) & (aligned > 0) & torch.isfinite(forward) & (forward > 0)
        x = torch.log(torch.where(mask, aligned, torch.ones_like(aligned)).double())
        z = x
        if self.state:
            fut, fut_m = self.state["z"].to(x.device), self.state["mask"].to(x.device)
            if fut.shape != x.shape:
                raise ValueError(f"frame size changed from {tuple(fut.shape)} to {tuple(x.shape)} within a sequence")
            if next_from_this is not None:
                fut, fut_m = warp_log_map(fut, fut_m, x, next_from_this.to(device=x.device, dtype=x.dtype), edge_tol=self.tau)
            z = gated_blend(x, fut, mask & fut_m, self.filter_strength, self.tau)
        self.state = {"z": z, "mask": mask}
        y = torch.log(torch.where(mask, forward, torch.ones_like(forward)).double())
        return torch.where(mask, torch.exp(0.5 * (y + z)), forward.double()).to(forward.dtype)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.state.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.state = {k: torch.as_tensor(v) for k, v in state.items()}


def filter_sequence(depth: torch.Tensor, mask: torch.Tensor, rgb: Optional[torch.Tensor] = None, align: bool = True,
                    filter_strength: float = 0.0, tau: float = 0.05, motion_compensation="pose",
                    two_sided: bool = True) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """A whole in-memory sequence through :class:`TemporalAligner` and, when ``two_sided`` and the filter is
    on, :class:`BackwardSmoother`.

    ``depth``, ``mask`` ``[N, H, W]``, ``rgb`` ``[N, H, W, 3]`` (or ``None``). Returns the consistent depth
    ``[N, H, W]`` and the forward pass's per-frame info."""
    aligner = TemporalAligner(align=align, filter_strength=filter_strength, tau=tau, motion_compensation=motion_compensation)
    fwd, infos = [], []
    for i in range(depth.shape[0]):
        out, info = aligner.step(depth[i], mask[i], None if rgb is None else rgb[i])
        fwd.append(out)
        infos.append(info)
    if not (two_sided and filter_strength > 0):
        return torch.stack(fwd), infos
    back = BackwardSmoother(filter_strength, tau)
    outs: List[torch.Tensor] = [None] * len(fwd)  # type: ignore[list-item]
    for i in range(len(fwd) - 1, -1, -1):
        nxt = infos[i + 1].get("src_from_tgt") if i + 1 < len(fwd) else None
        aligned = depth[i].double() * infos[i]["scale"]
        outs[i] = back.step(aligned.to(depth.dtype), mask[i], fwd[i], None if nxt is None else inverse_pose(nxt))
    return torch.stack(outs), infos
