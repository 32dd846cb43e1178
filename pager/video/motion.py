"""Relative camera motion between two ERP frames by direct alignment of images and depth (pure tensor math).

At inference the camera pose of a video is unknown. :func:`estimate_motion` recovers the rigid transform
``src_from_tgt`` (rotation ``R`` and translation ``t``, :mod:`pager.geometry.warp` conventions) that takes
points of the *target* camera (the current frame) into the *source* camera (the previous frame), from the
target's predicted depth and both frames' grey images (and, optionally, the source's depth). A relative-
depth model has a free scale, so ``t`` is in the unit of the given depth (metres for a metric model).

Method: the direct alignment of visual odometry (e.g. Engel et al., "Direct Sparse Odometry", TPAMI 2018;
Kerl et al., "Robust Odometry Estimation for RGB-D Cameras", ICRA 2013), written for the sphere. Every
target pixel ``p`` with depth ``D(p)`` is lifted to ``X = D(p) ray(p)``, moved, ``X' = R X + t``, and
projected into the source ERP (:func:`pager.geometry.warp.erp_reproject`) at ``q``. Two residuals per pixel:

* photometric: ``r_I = I_src(q) - I_tgt(p)`` (grey levels; brightness constancy);
* geometric (when the source depth is given): ``r_D = log D_src(q) - log |X'|`` (the source sees the same
  surface point at the reprojected range).

Each is divided by its robust scale (``1.4826 MAD``), weighted by ``cos(latitude)`` (ERP pixel area) and by
Huber weights (``k = 1.345``; iteratively reweighted least squares), and pixels whose point leaves the
source's valid region are dropped. The 6-vector ``delta = (omega, v)`` of a left update
``X' <- X' + omega x X' + v`` is solved by Levenberg-Marquardt steps (damped Gauss-Newton, ``J^T W J``
with an analytic Jacobian: ``dr/dX'`` from the image gradients sampled at ``q`` and the derivatives of the
ERP projection ``theta = atan2(z, x)``, ``phi = atan2(y, hypot(x, z))``, then ``dr/domega = X' x dr/dX'``,
``dr/dv = dr/dX'``), coarse to fine over an image pyramid (area-averaged levels of heights
``levels``). The pose is then ``R <- Exp(omega) R``, ``t <- Exp(omega) t + v`` (Rodrigues). A start (e.g.
the yaw turn from :func:`pager.video.consistency.estimate_yaw_shift`) widens the basin for fast turns.

Everything is batched over ``B`` frame pairs, differentiable tensor code on any device (float64 where the
device has it).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pager.geometry.warp import erp_reproject, erp_sample

__all__ = ["so3_exp", "estimate_motion", "rotation_angle"]

HUBER_K = 1.345
MAD_TO_SIGMA = 1.4826


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of rotation vectors ``omega [..., 3]`` (axis times angle, radians).

    Rodrigues' formula ``R = I + sin(a)/a [w]x + (1 - cos(a))/a^2 [w]x^2`` with the series for small ``a``.
    """
    a = omega.norm(dim=-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = a < 1e-8
    a_safe = torch.where(small, torch.ones_like(a), a)
    s = torch.where(small, 1.0 - a ** 2 / 6.0, torch.sin(a_safe) / a_safe)
    c = torch.where(small, 0.5 - a ** 2 / 24.0, (1.0 - torch.cos(a_safe)) / a_safe ** 2)
    wx, wy, wz = omega.unbind(-1)
    zero = torch.zeros_like(wx)
    k = torch.stack((zero, -wz, wy, wz, zero, -wx, -wy, wx, zero), dim=-1).reshape(omega.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + s * k + c * (k @ k)


def rotation_angle(pose: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) of rigid transforms ``[..., 4, 4]`` (or rotations ``[..., 3, 3]``)."""
    r = pose[..., :3, :3]
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def _pool(x: torch.Tensor, m: torch.Tensor, h: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Area average of ``x [B, C, H, W]`` over the valid pixels ``m [B, 1, H, W]`` down to ``h x 2h``.

    A coarse pixel is valid when more than half of its area is valid."""
    if x.shape[-2] == h:
        return x, m
    size = (h, max(1, round(h * x.shape[-1] / x.shape[-2])))
    mf = m.to(x.dtype)
    num = F.interpolate(x * mf, size=size, mode="area")
    den = F.interpolate(mf, size=size, mode="area")
    return num / den.clamp_min(1e-12), den > 0.5


def _gradients(x: torch.Tensor, m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Central differences of ERP maps ``x [B, C, H, W]`` per column (wrapping) and per row (one-sided at the
    first / last row); ``valid [B, 1, H, W]``: the pixel and the neighbours used are valid."""
    gc = 0.5 * (torch.roll(x, -1, dims=-1) - torch.roll(x, 1, dims=-1))
    up = torch.cat((x[..., :1, :], x[..., :-1, :]), dim=-2)
    down = torch.cat((x[..., 1:, :], x[..., -1:, :]), dim=-2)
    gr = 0.5 * (down - up)
    gr[..., 0, :] = 2.0 * gr[..., 0, :]
    gr[..., -1, :] = 2.0 * gr[..., -1, :]
    mu = torch.cat((m[..., :1, :], m[..., :-1, :]), dim=-2)
    md = torch.cat((m[..., 1:, :], m[..., -1:, :]), dim=-2)
    valid = m & torch.roll(m, 1, dims=-1) & torch.roll(m, -1, dims=-1) & mu & md
    return gc, gr, valid


def _robust_scale(r: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
    """Robust scale of residuals ``r [B, N]`` over ``use`` -> ``[B, 1]``: ``1.4826 MAD``, but at least half the
    scale ``1.2533 mean |r - median|`` would give (more than half of the residuals of an untextured wall
    can be exactly 0, which makes the MAD 0); 1 where nothing is used."""
    nan = torch.full_like(r, float("nan"))
    med = torch.nanmedian(torch.where(use, r, nan), dim=1, keepdim=True).values
    dev = torch.where(use, (r - med).abs(), nan)
    mad = torch.nanmedian(dev, dim=1, keepdim=True).values
    mean = torch.nanmean(dev, dim=1, keepdim=True)
    sigma = torch.maximum(MAD_TO_SIGMA * mad, 0.5 * 1.2533 * mean)
    return torch.nan_to_num(sigma, nan=1.0).clamp_min(1e-9)


def _huber_cost(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    a = z.abs()
    rho = torch.where(a <= HUBER_K, 0.5 * a ** 2, HUBER_K * (a - 0.5 * HUBER_K))
    return (rho * w).sum(dim=1)


def _projection_jacobian(pts: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``d col / dX`` and ``d row / dX`` ``[B, 3, N]`` of the ERP projection of points ``pts [B, 3, N]``.

    ``col = (theta + pi) W / (2 pi) - 1/2``, ``row = (pi/2 - phi) H / pi - 1/2`` with ``theta = atan2(z, x)``,
    ``phi = atan2(y, rho)``, ``rho = hypot(x, z)``: ``dtheta/dX = (-z, 0, x) / rho^2``,
    ``dphi/dX = (-x y, rho^2, -z y) / (r^2 rho)``.
    """
    x, y, z = pts.unbind(1)
    rho2 = (x * x + z * z).clamp_min(1e-12)
    rho = rho2.sqrt()
    r2 = rho2 + y * y
    zero = torch.zeros_like(x)
    dtheta = torch.stack((-z / rho2, zero, x / rho2), dim=1)
    dphi = torch.stack((-x * y / (r2 * rho), rho2 / (r2 * rho), -z * y / (r2 * rho)), dim=1)
    return dtheta * (w / (2.0 * math.pi)), dphi * (-h / math.pi)


def _level_terms(pose: torch.Tensor, lev: Dict[str, torch.Tensor], geometric: bool):
    """Residuals, Jacobians and masks of one pyramid level at ``pose [B, 4, 4]`` (see the module docstring)."""
    depth_t, m_t = lev["depth_t"], lev["mask_t"]
    b, h, w = depth_t.shape
    theta, phi, rng = erp_reproject(torch.where(m_t, depth_t, torch.ones_like(depth_t)), pose)
    src = erp_sample(lev["src_stack"], theta, phi)  # [B, C, H, W]
    n = h * w
    # the moved points X' (again, for the Jacobian): from angles and range
    cphi = torch.cos(phi)
    pts = torch.stack((cphi * torch.cos(theta), torch.sin(phi), cphi * torch.sin(theta)), dim=1) * rng[:, None]
    pts = pts.reshape(b, 3, n)
    dcol, drow = _projection_jacobian(pts, h, w)
    area = lev["area"].reshape(1, n)
    ok = m_t.reshape(b, n) & (rng.reshape(b, n) > 1e-9)
    terms = []
    # photometric
    i_s, gic, gir = src[:, 0].reshape(b, n), src[:, 1].reshape(b, n), src[:, 2].reshape(b, n)
    r_i = i_s - lev["grey_t"].reshape(b, n)
    a_i = gic[:, None] * dcol + gir[:, None] * drow  # dr/dX' [B, 3, N]
    terms.append((r_i, a_i, ok))
    if geometric:
        l_s, glc, glr = src[:, 3].reshape(b, n), src[:, 4].reshape(b, n), src[:, 5].reshape(b, n)
        ok_d = ok & (src[:, 6].reshape(b, n) > 1.0 - 1e-6)
        r_d = l_s - torch.log(rng.reshape(b, n).clamp_min(1e-12))
        a_d = glc[:, None] * dcol + glr[:, None] * drow - pts / (pts * pts).sum(1, keepdim=True).clamp_min(1e-24)
        terms.append((r_d, a_d, ok_d))
    out = []
    for r, a, use in terms:
        jac = torch.cat((torch.cross(pts, a, dim=1), a), dim=1)  # [B, 6, N]: d r / d(omega, v)
        out.append((r, jac, use & torch.isfinite(r) & torch.isfinite(jac).all(1)))
    return out, area


def _cost_and_system(pose, lev, geometric, sigmas=None):
    """Robust cost, normal equations ``J^T W J``, ``J^T W r`` and the number of used residuals at ``pose``.

    ``sigmas``: the robust scales of the residual kinds (computed here when ``None``, as the MAD at ``pose``);
    a candidate step is scored with the scales of the current pose so that costs compare."""
    terms, area = _level_terms(pose, lev, geometric)
    b = pose.shape[0]
    cost = torch.zeros(b, dtype=pose.dtype, device=pose.device)
    hess = torch.zeros(b, 6, 6, dtype=pose.dtype, device=pose.device)
    grad = torch.zeros(b, 6, dtype=pose.dtype, device=pose.device)
    used = torch.zeros(b, dtype=pose.dtype, device=pose.device)
    out_sigmas = []
    for k, (r, jac, use) in enumerate(terms):
        r = torch.where(use, r, torch.zeros_like(r))
        sigma = _robust_scale(r, use) if sigmas is None else sigmas[k]
        out_sigmas.append(sigma)
        z = r / sigma
        wt = torch.where(use, (HUBER_K / z.abs().clamp_min(1e-12)).clamp(max=1.0), torch.zeros_like(r)) * area / sigma ** 2
        cost = cost + _huber_cost(z, area * use)
        used = used + use.sum(1)
        jac = torch.where(use[:, None], jac, torch.zeros_like(jac))
        hess = hess + (jac * wt[:, None]) @ jac.transpose(1, 2)
        grad = grad + (jac * (wt * r)[:, None]).sum(-1)
    return cost, hess, grad, used, out_sigmas


def _update(pose: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``T <- [[Exp(omega), v], [0, 1]] T`` for ``delta = (omega, v) [B, 6]``."""
    upd = torch.zeros_like(pose)
    upd[:, :3, :3] = so3_exp(delta[:, :3])
    upd[:, :3, 3] = delta[:, 3:]
    upd[:, 3, 3] = 1.0
    return upd @ pose


def estimate_motion(depth_tgt: torch.Tensor, grey_tgt: torch.Tensor, grey_src: torch.Tensor,
                    depth_src: Optional[torch.Tensor] = None, mask_tgt: Optional[torch.Tensor] = None,
                    mask_src: Optional[torch.Tensor] = None, init: Optional[torch.Tensor] = None,
                    levels: Sequence[int] = (32, 64, 128), iters: int = 8) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Relative pose ``src_from_tgt`` of two ERP frames by direct alignment (module docstring).

    Args:
        depth_tgt: ``[B, H, W]`` (or ``[H, W]``) range depth of the target (current) frame, any unit > 0.
        grey_tgt, grey_src: grey images of the target and source (previous) frame, same shape, any range
            (the residuals are normalised by their robust scale).
        depth_src: optional range depth of the source frame in the unit of ``depth_tgt`` (adds the
            geometric residual; without it only the photometric one is used).
        mask_tgt, mask_src: bool valid depth pixels (default: finite and > 0; every pixel of the
            source when ``depth_src`` is ``None``).
        init: start ``[B, 4, 4]`` / ``[4, 4]`` (default identity), e.g. :func:`pager.geometry.warp.yaw_pose`
            of the phase-correlation yaw.
        levels: pyramid heights, coarse to fine (capped at ``H``; widths keep the aspect ratio).
        iters: Levenberg-Marquardt iterations per level.

    Returns:
        ``(src_from_tgt, info)``: ``[B, 4, 4]`` (``[4, 4]`` for unbatched input) in the dtype of the work
        (float64 except on MPS), translation in the unit of ``depth_tgt``; ``info``: ``"cost"`` ``[B]`` (robust
        cost per used residual at the finest level) and ``"used"`` ``[B]`` (fraction of target pixels used).

    Raises:
        ValueError: shapes that do not match.
    """
    squeeze = depth_tgt.dim() == 2
    add = (lambda t: None if t is None else t[None]) if squeeze else (lambda t: t)
    depth_tgt, grey_tgt, grey_src, depth_src, mask_tgt, mask_src = map(add, (depth_tgt, grey_tgt, grey_src, depth_src, mask_tgt, mask_src))
    if depth_tgt.dim() != 3:
        raise ValueError(f"estimate_motion: depth_tgt must be [B, H, W] or [H, W], got {tuple(depth_tgt.shape)}")
    shape = depth_tgt.shape
    for name, t in (("grey_tgt", grey_tgt), ("grey_src", grey_src), ("depth_src", depth_src), ("mask_tgt", mask_tgt),
                    ("mask_src", mask_src)):
        if t is not None and t.shape != shape:
            raise ValueError(f"estimate_motion: {name} {tuple(t.shape)} must match depth_tgt {tuple(shape)}")
    b, hh, ww = shape
    dev = depth_tgt.device
    dt = torch.float32 if dev.type == "mps" else torch.float64
    d_t = depth_tgt.to(dt)
    m_t = (torch.ones_like(d_t, dtype=torch.bool) if mask_tgt is None else mask_tgt.bool()) & torch.isfinite(d_t) & (d_t > 0)
    geometric = depth_src is not None
    if geometric:
        d_s = depth_src.to(dt)
        m_s = (torch.ones_like(d_s, dtype=torch.bool) if mask_src is None else mask_src.bool()) & torch.isfinite(d_s) & (d_s > 0)
    else:
        m_s = torch.ones_like(d_t, dtype=torch.bool) if mask_src is None else mask_src.bool()
    pose = torch.eye(4, dtype=dt, device=dev).repeat(b, 1, 1) if init is None else \
        (init if init.dim() == 3 else init[None]).to(device=dev, dtype=dt).expand(b, 4, 4).clone()
    heights = sorted({min(int(h), hh) for h in levels}) or [hh]
    info: Dict[str, torch.Tensor] = {}
    for h in heights:
        lt = torch.log(torch.where(m_t, d_t, torch.ones_like(d_t)))[:, None]
        lt, mt = _pool(lt, m_t[:, None], h)
        gt, _ = _pool(grey_tgt.to(dt)[:, None], torch.ones_like(m_t[:, None]), h)
        gs, _ = _pool(grey_src.to(dt)[:, None], torch.ones_like(m_t[:, None]), h)
        gic, gir, _ = _gradients(gs, torch.ones_like(gs, dtype=torch.bool))
        stack = [gs, gic, gir]
        if geometric:
            ls, ms = _pool(torch.log(torch.where(m_s, d_s, torch.ones_like(d_s)))[:, None], m_s[:, None], h)
            glc, glr, gvalid = _gradients(ls, ms)
            stack += [torch.where(ms, ls, torch.zeros_like(ls)), glc, glr, gvalid.to(dt)]
        phi = math.pi / 2 - math.pi * (torch.arange(h, dtype=dt, device=dev) + 0.5) / h
        lev = {"depth_t": torch.exp(lt[:, 0]), "mask_t": mt[:, 0], "grey_t": gt[:, 0], "src_stack": torch.cat(stack, dim=1),
               "area": torch.cos(phi)[:, None].expand(h, lt.shape[-1])}
        lam = torch.full((b,), 1e-3, dtype=dt, device=dev)
        cost, hess, grad, used, sig = _cost_and_system(pose, lev, geometric)
        for _ in range(iters):
            diag = torch.diag_embed(hess.diagonal(dim1=-2, dim2=-1).clamp_min(1e-12))
            delta = torch.nan_to_num(-torch.linalg.solve(hess + lam[:, None, None] * diag, grad[..., None])[..., 0])
            cand = _update(pose, delta)
            c_cost, _, _, c_used, _ = _cost_and_system(cand, lev, geometric, sig)
            # costs per used residual (a step may change which pixels land in the source's valid region)
            better = c_cost / c_used.clamp_min(1) < cost / used.clamp_min(1)
            pose = torch.where(better[:, None, None], cand, pose)
            lam = torch.where(better, lam * 0.3, lam * 10.0)
            if bool(better.any()):
                cost, hess, grad, used, sig = _cost_and_system(pose, lev, geometric)
            if bool((delta.abs().amax(dim=1) < 1e-8).all()) or bool((lam > 1e6).all()):
                break
        info = {"cost": cost / used.clamp_min(1), "used": used / ((2 if geometric else 1) * mt.sum((1, 2, 3)).clamp_min(1))}
    return (pose[0], {k: v[0] for k, v in info.items()}) if squeeze else (pose, info)
