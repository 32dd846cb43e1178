"""Temporal consistency of per-frame depth: one scale for a whole sequence and an edge-preserving filter.

A relative-depth model (``metric_depth: false``) predicts every frame up to its own unknown scale, so
independent frames flicker even when each is good. :class:`TemporalAligner` processes the frames in
order and works on log depth ``x = log d`` (a scale is a shift there):

1. **Motion compensation (yaw).** The camera's turn about the up axis between frames is estimated from
   the RGB frames by phase correlation along the ERP rows (:func:`estimate_yaw_shift`; a yaw turn is a
   column roll, :mod:`pager.geometry.warp`) and the reference is rolled by it. Translation is not
   compensated; the robust fit below treats what it changes as outliers.
2. **Alignment.** Frame ``t`` gets the log shift ``beta`` that best maps it onto the reference (a running
   average of the previously aligned frames) over the pixels that agree (:func:`robust_log_shift`):
   ``r = ref - x`` on pixels valid in both; start at ``beta = median(r)``; scale ``sigma = 1.4826 MAD(r)``;
   pixels with ``|r - beta| > 3 sigma`` are rejected (moving objects, disocclusions, depth edges); then
   iteratively reweighted Huber steps (``k = 1.345 sigma``; Huber 1964, "Robust estimation of a location
   parameter") give ``beta``. The aligned frame is ``exp(x + beta)``: one scale for the whole sequence,
   that of the first frame (whose own scale is kept).
3. **Reference update.** ``ref <- x + beta`` blended with the rolled old reference, gated like the filter.
4. **Optional temporal filter** (``filter_strength = a`` in [0, 1)): ``y_t = x_t + a g (roll(y_{t-1}) - x_t)``
   with the per-pixel agreement gate ``g = exp(-(delta / tau)^2 / 2)``, ``delta = roll(y_{t-1}) - x_t``. Where
   the new frame disagrees with the filtered past by more than about ``tau`` in log depth (a moving edge,
   a disocclusion) ``g`` is ~0 and the new frame is taken as it is, so moving edges are not blurred or
   dragged; where they agree, noise is averaged (an exponential moving average, gated per pixel in the
   spirit of a bilateral filter over time).

Metric models (``metric_depth: true``) are not aligned (their metres are kept); the filter, when on,
still applies. The state is a handful of ``[H, W]`` tensors (:meth:`state_dict` / :meth:`load_state_dict`)
so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

__all__ = ["robust_log_shift", "estimate_yaw_shift", "gated_blend", "TemporalAligner"]

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


class TemporalAligner:
    """Frame-by-frame alignment and filtering of depth (module docstring); feed frames in order to :meth:`step`.

    Args:
        align: estimate one scale for the sequence (relative models); ``False`` keeps each frame's values
            (metric models).
        filter_strength: ``a`` of the temporal filter (0 = off).
        tau: agreement scale of the gates, in log depth (0.05 ~ 5 % of depth).
        reference_strength: weight of the past in the running reference used for the alignment.
        motion_compensation: estimate the yaw turn between frames from the RGB and roll the states by it.
    """

    def __init__(self, align: bool = True, filter_strength: float = 0.0, tau: float = 0.05,
                 reference_strength: float = 0.5, motion_compensation: bool = True) -> None:
        if not 0.0 <= filter_strength < 1.0:
            raise ValueError(f"filter strength must be in [0, 1), got {filter_strength}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.align = bool(align)
        self.filter_strength = float(filter_strength)
        self.tau = float(tau)
        self.reference_strength = float(reference_strength)
        self.motion_compensation = bool(motion_compensation)
        self.state: Dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.state = {}

    @staticmethod
    def _grey(rgb: torch.Tensor) -> torch.Tensor:
        """uint8 / float ``[H, W, 3]`` -> float32 ``[H, W]`` luma."""
        rgb = rgb.float() / (255.0 if rgb.dtype == torch.uint8 else 1.0)
        return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]

    def step(self, depth: torch.Tensor, mask: torch.Tensor, rgb: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Process the next frame: ``depth [H, W]`` (> 0 where ``mask``), ``mask [H, W]`` bool, ``rgb [H, W, 3]``
        (for the yaw estimate). Returns the consistent depth ``[H, W]`` (invalid pixels unchanged) and
        ``{"scale": exp(beta), "yaw_shift": columns, "inliers": fraction}``."""
        if depth.dim() != 2 or mask.shape != depth.shape:
            raise ValueError(f"TemporalAligner.step: depth [H, W] and a mask of the same shape, got {tuple(depth.shape)}, {tuple(mask.shape)}")
        mask = mask & torch.isfinite(depth) & (depth > 0)
        x = torch.log(torch.where(mask, depth, torch.ones_like(depth)).double())
        grey = self._grey(rgb) if (rgb is not None and self.motion_compensation) else None
        info = {"scale": 1.0, "yaw_shift": 0, "inliers": 1.0}
        st = self.state
        if not st:
            beta = torch.zeros((), dtype=x.dtype, device=x.device)
            ref, ref_m = x, mask
            out_x, out_m = x, mask
        else:
            if st["ref"].shape != x.shape:
                raise ValueError(f"frame size changed from {tuple(st['ref'].shape)} to {tuple(x.shape)} within a sequence")
            shift = 0
            if grey is not None and "grey" in st:
                shift = int(estimate_yaw_shift(st["grey"].to(grey.device), grey))
            roll = (lambda t: torch.roll(t, shift, dims=-1)) if shift else (lambda t: t)
            ref_old, ref_m_old = roll(st["ref"].to(x.device)), roll(st["ref_mask"].to(x.device))
            both = mask & ref_m_old
            if self.align and bool(both.any()):
                beta, inl = robust_log_shift(x, ref_old, both)
                info["inliers"] = float(inl.sum()) / max(int(both.sum()), 1)
            else:
                beta = torch.zeros((), dtype=x.dtype, device=x.device)
            x = x + beta
            ref = gated_blend(x, ref_old, both, self.reference_strength, self.tau)
            ref_m = mask
            out_x = x
            if self.filter_strength > 0:
                filt_old, filt_m_old = roll(st["filt"].to(x.device)), roll(st["filt_mask"].to(x.device))
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
