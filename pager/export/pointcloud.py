"""Coloured 3-D point clouds from ERP depth, written as GLB or PLY.

Points live in the package's right-handed, y-up world frame (x forward, y up, z right; see
:mod:`pager.geometry`), the same frame as the predicted normals, so the normals attached to the points
need no conversion. glTF is also right-handed and y-up, so a GLB opens upright in three.js, Blender
(which converts to its z-up frame on import) or a ``gr.Model3D`` view.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from pager.geometry import erp_directions
from pager.io_utils import atomic_write

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ArrayLike = Union[np.ndarray, torch.Tensor]

#: flying pixels: gate on the local slope, relative depth change per radian (tan 60 deg, see flying_pixel_mask)
DEFAULT_EDGE_THRESHOLD = 1.7
#: flying pixels: tolerated disagreement (relative, in inverse depth) with both one-sided plane extrapolations
DEFAULT_EDGE_TOLERANCE = 0.1
#: flying pixels: extrapolation step in degrees of longitude/latitude (6 px at 512 px width)
DEFAULT_EDGE_WINDOW_DEG = 360.0 * 6 / 512
DEPTH_UNITS = ("metres", "relative", "unknown")


@dataclass
class PointCloud:
    """``points [N, 3]`` float32 metres (world frame), ``colors [N, 3]`` uint8, optional unit ``normals [N, 3]`` float32."""

    points: np.ndarray
    colors: np.ndarray
    normals: Optional[np.ndarray] = None
    unit: str = "metres"  # "metres" (metric depth), "relative" (up to an unknown scale) or "unknown"

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"PointCloud.points must be [N, 3], got {self.points.shape}")
        if self.colors.shape != self.points.shape or self.colors.dtype != np.uint8:
            raise ValueError(f"PointCloud.colors must be uint8 {self.points.shape}, got {self.colors.dtype} {self.colors.shape}")
        if self.normals is not None and self.normals.shape != self.points.shape:
            raise ValueError(f"PointCloud.normals must be {self.points.shape}, got {self.normals.shape}")
        if self.unit == "m":  # PagerOutput.metadata[k]["depth_unit"] of a metric model
            self.unit = "metres"
        if self.unit not in DEPTH_UNITS:
            raise ValueError(f"PointCloud.unit must be one of {DEPTH_UNITS}, got {self.unit!r}")

    def __len__(self) -> int:
        return int(self.points.shape[0])


def erp_rays(height: int, width: int, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit rays of the ERP pixel centres in our world frame: ``[3, H, W]``.

    ``theta = 2*pi*(j+0.5)/W - pi``, ``phi = pi/2 - pi*(i+0.5)/H``,
    ``ray = (cos(phi) cos(theta), sin(phi), cos(phi) sin(theta))`` (x forward, y up, z right).
    """
    return erp_directions(height, width, device=device, dtype=dtype)


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _hw3(x: torch.Tensor, name: str, hw: tuple) -> torch.Tensor:
    """Accept ``[3, H, W]`` or ``[H, W, 3]`` and return ``[H, W, 3]``."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3 and x.shape[0] == 3 and tuple(x.shape[1:]) == hw:
        return x.permute(1, 2, 0)
    if x.ndim == 3 and x.shape[2] == 3 and tuple(x.shape[:2]) == hw:
        return x
    raise ValueError(f"{name}: expected [3, H, W] or [H, W, 3] with (H, W) = {hw}, got shape {tuple(x.shape)}")


def edge_window_pixels(width: int, window_deg: float = DEFAULT_EDGE_WINDOW_DEG) -> int:
    """The extrapolation step of :func:`flying_pixel_mask` in pixels for an ERP ``width``: ``max(1, round(width *
    window_deg / 360))`` (it scales with the resolution: 6 px at 512 px width, 24 px at 2048)."""
    if window_deg <= 0:
        raise ValueError(f"edge window must be positive (degrees), got {window_deg}")
    return max(1, int(round(width * float(window_deg) / 360.0)))


def _along(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """``x[p + k]`` along ``dim`` of an ERP ``[H, W]`` (NaN where there is no such pixel).

    Columns wrap around (longitude). Rows continue over the poles along the same great circle (the meridian
    through the pole goes on at longitude + 180 deg, rows counted back), which needs an even ``W``; with an
    odd ``W`` rows beyond the poles are NaN.
    """
    if k == 0:
        return x
    if dim == 1:
        return torch.roll(x, -k, dims=1)
    h, w = x.shape
    out = torch.full_like(x, float("nan"))
    if abs(k) >= 2 * h:
        return out
    if w % 2 == 0:
        across = torch.roll(x, w // 2, dims=1)
        ext = torch.cat([across.flip(0), x, across.flip(0)], dim=0)  # rows -h..2h-1
        return ext[h + k: 2 * h + k]
    if k > 0:
        out[: h - k] = x[k:]
    else:
        out[-k:] = x[: h + k]
    return out


def flying_pixel_mask(
    depth: torch.Tensor,
    threshold: float = DEFAULT_EDGE_THRESHOLD,
    tolerance: float = DEFAULT_EDGE_TOLERANCE,
    window_deg: float = DEFAULT_EDGE_WINDOW_DEG,
) -> torch.Tensor:
    """Flying pixels of an ERP depth map ``[H, W]`` (range, any unit): bool ``[H, W]``, True = flying.

    A flying pixel lies between two surfaces at a depth edge: a network (or a mixed sensor pixel) smears a
    step from the near to the far surface over several pixels, and the points of that ramp float in the
    air. A pixel is on a smooth surface when its inverse depth ``q = 1/d`` continues the surface on at least
    one side of it: for a plane ``q = a . ray`` is linear in the ray, so along a row or column it is
    predicted from two samples ``s`` and ``2s`` pixels away on one side by ``2 c q(p -+ s) - q(p -+ 2s)``
    (columns: ``c = cos(s * pi / H)``, exact for any plane, since a column is a great circle; rows: ``c = 1``,
    exact for floors and ceilings, off by ``~(s * 2 pi / W)^2`` (~0.5 % for the default window) for
    other planes), whatever the incidence angle. A pixel
    is flagged when, along the rows or along the columns,

    1. the prediction from each side misses ``q(p)`` by more than ``tolerance * q(p)`` (a side with a
       missing sample, e.g. masked or sky, cannot vouch for the pixel), and
    2. the depth there is steep: the larger relative depth change to the two adjacent pixels, per radian
       (``|log d(p +- 1) - log d(p)| / angle``, ``~tan(incidence)`` on a plane), exceeds ``threshold``.

    ``s = edge_window_pixels(W, window_deg)`` grows with the resolution (a fixed angle, 6 px at 512 px
    width), so that a step smeared over up to ~``s`` pixels has both extrapolations on the flat parts
    beside the ramp: every ramp pixel farther than ``tolerance`` from both surfaces is flagged (tested on a
    smeared ramp), and the pixels near its two ends, which are close to the right surface, are kept. A
    sharp step keeps both of its sides (each continues its own surface), planes at any incidence keep all
    their pixels, and so do concave and convex corners. What it cannot see: an edge that the network put
    at the wrong place but kept sharp, and thin structures narrower than ``~2s`` that are also steep.
    Columns wrap around; columns continue across the poles (even ``W``). Non-finite or non-positive
    depths are never flagged (they are not points) and their neighbours cannot vouch for others.
    Measured (``python benchmarks/flying_pixels.py``): see the README.
    """
    if threshold <= 0:
        raise ValueError(f"edge threshold must be positive, got {threshold}")
    if tolerance <= 0:
        raise ValueError(f"edge tolerance must be positive, got {tolerance}")
    if depth.ndim != 2:
        raise ValueError(f"depth: expected [H, W], got shape {tuple(depth.shape)}")
    d = depth.to(torch.float64 if depth.dtype == torch.float64 else torch.float32)
    h, w = d.shape
    s = edge_window_pixels(w, window_deg)
    ok = torch.isfinite(d) & (d > 0)
    nan = torch.full_like(d, float("nan"))
    q = torch.where(ok, 1.0 / torch.where(ok, d, torch.ones_like(d)), nan)
    logd = torch.log(torch.where(ok, d, nan))
    phi = 0.5 * math.pi - math.pi * (torch.arange(h, device=d.device, dtype=d.dtype) + 0.5) / h
    steps = ((2.0 * math.pi / w) * torch.cos(phi).clamp_min(1e-12)[:, None], math.pi / h)  # radians: columns, rows
    fly = torch.zeros_like(ok)
    # a plane's q along a column (a great circle) is A cos(phi) + B sin(phi): the three-term recurrence
    # q(x + h) = 2 cos(h) q(x) - q(x - h) is exact; along a row (theta) it is A cos + B sin + C, where the
    # plain linear step (cos(h) -> 1) is exact for floors and ceilings and off by ~h^2 for walls
    grow = {1: 1.0, 0: math.cos(s * math.pi / h)}
    for dim, step in ((1, steps[0]), (0, steps[1])):
        vouch = torch.zeros_like(ok)
        for sign in (-1, 1):
            pred = 2.0 * grow[dim] * _along(q, sign * s, dim) - _along(q, 2 * sign * s, dim)
            vouch |= (pred - q).abs() <= tolerance * q  # NaN (missing sample) compares False
        slope = torch.zeros_like(d)
        for sign in (-1, 1):
            g = (_along(logd, sign, dim) - logd).abs() / step
            slope = torch.maximum(slope, torch.nan_to_num(g, nan=0.0, posinf=0.0))
        fly |= ~vouch & (slope > threshold)
    return fly & ok


def sphere_uniform_indices(weights: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Draw ``k`` distinct indices with inclusion probability proportional to ``weights`` (sorted result).

    Inclusion probabilities are ``pi_i = min(1, c * w_i)`` with ``sum(pi) = k`` (exactly proportional,
    unlike successive weighted draws, which flatten towards uniform when ``k`` is a large share of
    ``n``), realised by systematic sampling over a seeded random permutation (exact count, vectorised).
    With ``weights = cos(latitude)`` of ERP pixels this gives points uniform on the sphere.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.shape[0]
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sphere_uniform_indices: weights must be finite, non-negative and not all zero")
    capped = np.zeros(n, dtype=bool)
    c = 0.0
    for _ in range(64):  # water-filling on a scalar: converges in a few rounds
        free = w[~capped].sum()
        c = (k - capped.sum()) / free if free > 0 else np.inf
        new = capped | (c * w >= 1.0)
        if new.sum() == capped.sum():
            break
        capped = new
    pi = np.where(capped, 1.0, np.minimum(c * w, 1.0))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    cs = np.cumsum(pi[perm])
    u = rng.random()
    prev = np.concatenate([[0.0], cs[:-1]])
    hit = np.floor(cs - u) > np.floor(prev - u)
    sel = perm[hit]
    if sel.size != k:  # float round-off at the end of the cumulative sum: fix the count
        if sel.size > k:
            sel = rng.choice(sel, size=k, replace=False)
        else:
            rest = np.setdiff1d(np.arange(n), sel)
            sel = np.concatenate([sel, rng.choice(rest, size=k - sel.size, replace=False, p=w[rest] / w[rest].sum())])
    return np.sort(sel)


def _colors_uint8(colors: torch.Tensor, hw: tuple) -> torch.Tensor:
    c = _hw3(colors, "colors", hw)
    if c.dtype == torch.uint8:
        return c
    if c.dtype == torch.bool or not c.is_floating_point():
        raise ValueError(f"colors: expected uint8 or float in [0, 1], got {c.dtype}")
    c = c.to(torch.float32)
    finite = c[torch.isfinite(c)]
    if finite.numel() and (finite.min() < -1e-3 or finite.max() > 1.0 + 1e-3):
        raise ValueError(
            f"colors: float colours must lie in [0, 1], got range [{finite.min():.3g}, {finite.max():.3g}] "
            "(map [-1, 1] images with (x + 1) / 2 first)"
        )
    return torch.round(torch.nan_to_num(c, nan=0.0).clamp(0, 1) * 255.0).to(torch.uint8)


def erp_point_cloud(
    depth: ArrayLike,
    colors: Optional[ArrayLike] = None,
    mask: Optional[ArrayLike] = None,
    normals: Optional[ArrayLike] = None,
    max_points: Optional[int] = None,
    remove_flying_pixels: bool = True,
    edge_threshold: float = DEFAULT_EDGE_THRESHOLD,
    edge_tolerance: float = DEFAULT_EDGE_TOLERANCE,
    edge_window_deg: float = DEFAULT_EDGE_WINDOW_DEG,
    max_depth: Optional[float] = None,
    min_depth: float = 0.0,
    seed: int = 0,
    unit: str = "metres",
) -> PointCloud:
    """Back-project an ERP depth map to a coloured point cloud in our world frame.

    Args:
        depth: range along the ray in metres, ``[H, W]`` (``[1, H, W]`` accepted), tensor or array.
        colors: ``[H, W, 3]`` or ``[3, H, W]``, uint8 or float in [0, 1]. ``None``: colour by
            ``normals`` (:func:`pager.export.visualize.normals_to_rgb`) when given, else by the depth
            colormap.
        mask: bool ``[H, W]``, True = keep (e.g. the dataset's valid mask, or not-sky).
        normals: unit normals ``[3, H, W]`` or ``[H, W, 3]`` in our world frame; attached to the points.
        max_points: subsample to at most this many points, uniformly on the sphere (ERP pixels weighted
            by ``cos(latitude)``, see :func:`sphere_uniform_indices`), seeded by ``seed``.
        remove_flying_pixels: drop flying pixels (:func:`flying_pixel_mask` with ``edge_threshold``,
            ``edge_tolerance`` and ``edge_window_deg``), found among the pixels kept so far (masked pixels
            cannot vouch for their neighbours).
        max_depth: drop pixels farther than this (e.g. sky saturated at the model's far limit).
        unit: what the depth is in, recorded in the cloud (and the PLY header): ``"metres"`` (or ``"m"``, as
            ``PagerOutput.metadata[k]["depth_unit"]`` says it) for metric models, ``"relative"`` for relative-depth
            models (unit-free), or ``"unknown"``. Pass the prediction's: the default is ``"metres"``.
        min_depth: drop pixels at or nearer than this (depth must be > 0 in any case).

    Dropped: non-finite or non-positive depth, ``mask == False``, ``depth > max_depth``, flying pixels,
    and non-finite normals when ``normals`` is given. The counts are logged at debug level.

    Returns:
        :class:`PointCloud` with ``points = depth * ray`` (float32), ``colors`` uint8 and ``normals``
        (unit float32) or ``None``.
    """
    d = _as_tensor(depth, "depth")
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"depth: expected [H, W], got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        d = d.to(torch.float32)
    d = d.to(torch.float32)
    H, W = d.shape
    device = d.device
    hw = (H, W)

    valid = torch.isfinite(d) & (d > max(float(min_depth), 0.0))
    counts = {"non-finite or too near": int((~valid).sum())}
    if mask is not None:
        m = _as_tensor(mask, "mask").to(device)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if tuple(m.shape) != hw:
            raise ValueError(f"mask: expected shape {hw}, got {tuple(m.shape)}")
        m = m.bool()
        counts["masked"] = int((valid & ~m).sum())
        valid &= m
    if max_depth is not None:
        far = valid & (d > float(max_depth))
        counts["farther than max_depth"] = int(far.sum())
        valid &= ~far
    n_hw3 = None
    if normals is not None:
        n_hw3 = _hw3(_as_tensor(normals, "normals").to(device), "normals", hw).to(torch.float32)
        bad = valid & ~torch.isfinite(n_hw3).all(-1)
        counts["non-finite normal"] = int(bad.sum())
        valid &= ~bad
    if remove_flying_pixels:
        fly = valid & flying_pixel_mask(torch.where(valid, d, torch.full_like(d, float("nan"))), edge_threshold,
                                        edge_tolerance, edge_window_deg)
        counts["flying pixels"] = int(fly.sum())
        valid &= ~fly

    if colors is not None:
        col = _colors_uint8(_as_tensor(colors, "colors").to(device), hw)
    elif n_hw3 is not None:
        from pager.export.visualize import normals_to_rgb

        col = torch.from_numpy(normals_to_rgb(n_hw3.cpu().numpy())).to(device)
    else:
        from pager.export.visualize import colorize_depth

        col = torch.from_numpy(colorize_depth(d.cpu().numpy(), valid.cpu().numpy())).to(device)

    idx = torch.nonzero(valid.reshape(-1), as_tuple=False).squeeze(1).cpu().numpy()
    if max_points is not None:
        if max_points <= 0:
            raise ValueError(f"max_points must be positive, got {max_points}")
        if idx.size > max_points:
            phi = 0.5 * np.pi - np.pi * ((idx // W).astype(np.float64) + 0.5) / H
            idx = idx[sphere_uniform_indices(np.cos(phi), int(max_points), seed)]
    logger.debug("erp_point_cloud: kept %d of %d pixels; dropped %s", idx.size, H * W, counts)

    sel = torch.from_numpy(idx).to(device)
    rays = erp_rays(H, W, device=device).reshape(3, -1)[:, sel]
    pts = (rays * d.reshape(-1)[sel][None]).T.contiguous()
    out_col = col.reshape(-1, 3)[sel]
    out_n = None
    if n_hw3 is not None:
        nn = n_hw3.reshape(-1, 3)[sel]
        out_n = (nn / nn.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float32)
    return PointCloud(pts.cpu().numpy().astype(np.float32), out_col.cpu().numpy().astype(np.uint8), out_n, unit=unit)


def _ply_bytes(cloud: PointCloud) -> bytes:
    """Binary little-endian PLY: float x y z [nx ny nz] + uchar red green blue."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(cloud), dtype=fields)
    rec["x"], rec["y"], rec["z"] = cloud.points.T
    if cloud.normals is not None:
        rec["nx"], rec["ny"], rec["nz"] = cloud.normals.T
    rec["red"], rec["green"], rec["blue"] = cloud.colors.T
    types = {"<f4": "float", "u1": "uchar"}
    what = {"metres": "metres", "relative": "relative depth: unit-free, up to an unknown scale",
            "unknown": "unit unknown"}[cloud.unit]
    header = ["ply", "format binary_little_endian 1.0", f"comment PaGeR point cloud: x forward, y up, z right ({what})",
              f"comment depth_unit {cloud.unit}", f"element vertex {len(cloud)}"]
    header += [f"property {types[t]} {name}" for name, t in fields]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + rec.tobytes()


def _glb_bytes(cloud: PointCloud) -> bytes:
    import trimesh

    rgba = np.concatenate([cloud.colors, np.full((len(cloud), 1), 255, np.uint8)], axis=1)
    pc = trimesh.PointCloud(cloud.points, colors=rgba)
    return trimesh.Scene(pc).export(file_type="glb")


def save_point_cloud(path: PathLike, cloud: PointCloud, format: Optional[str] = None) -> Path:
    """Write a point cloud atomically as ``glb`` (glTF POINTS with vertex colours, via trimesh) or binary ``ply``.

    ``format`` defaults to the path's suffix. PLY carries normals when the cloud has them; GLB does not.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in ("glb", "ply"):
        raise ValueError(f"save_point_cloud: unsupported format {fmt!r} for {path}; use 'glb' or 'ply'")
    if len(cloud) == 0:
        raise ValueError(f"save_point_cloud: refusing to write an empty point cloud to {path}")
    data = _glb_bytes(cloud) if fmt == "glb" else _ply_bytes(cloud)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path
