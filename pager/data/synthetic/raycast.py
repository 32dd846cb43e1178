"""Analytic, vectorised ERP ray caster and shader for procedural scenes.

All pixels are traced at once with NumPy float64 (loops run over the handful of scene objects
only). Each object is intersected only inside the ERP window that its bounding sphere can cover,
so small objects cost little. Outputs follow ``pager.geometry``: ERP pixel centres, world frame
(x forward, y up, z right), range depth in metres, unit world-frame normals facing the camera.

Determinism: only correctly rounded IEEE operations touch the written values (see ``_detmath``);
there are no order-dependent reductions (sums over samples are written out in a fixed order), so
the same seed gives bit-identical arrays on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pager.data.synthetic._detmath import det_sincos, erp_rays
from pager.data.synthetic.scene import (
    Box,
    Cylinder,
    Ground,
    Material,
    Room,
    Scene,
    Sphere,
    make_scene,
)

_EPS = 1e-9
BAND_PIXELS = 1 << 15  # rays traced at once (row bands of the panorama)


@dataclass
class SyntheticPanorama:
    """One rendered panorama (ERP, ``W == 2 H``).

    rgb: uint8 ``[H, W, 3]``; depth: float32 ``[H, W]`` range in metres, 0 where ``mask`` is False;
    normals: float32 ``[H, W, 3]`` unit world-frame normals facing the camera, 0 where invalid;
    mask: bool ``[H, W]``, False on sky and beyond ``max_depth``; kind: ``indoor``/``outdoor``;
    seed, view: what generated it; max_depth: 15 m (indoor) or 75 m (outdoor), as PanoInfinigen.
    """

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    mask: np.ndarray
    kind: str
    seed: int
    view: int
    max_depth: float


@dataclass
class _Trace:
    t: np.ndarray  # [H, W] float64, inf where nothing was hit
    obj: np.ndarray  # [H, W] int16 object index, -1 = nothing
    face: np.ndarray  # [H, W] int8 object-specific face code
    d: np.ndarray  # [3, H, W] scene-frame rays
    n: np.ndarray  # [3, H, W] scene-frame normals (0 where nothing was hit)
    albedo: np.ndarray  # [3, H, W] linear RGB (filled by _surface)
    emissive: np.ndarray  # [H, W] bool


# --------------------------------------------------------------------------------------------
# windows


def _windows(scene: Scene, center: np.ndarray, radius: float, H: int, W: int) -> list[tuple[slice, slice]]:
    """ERP pixel windows ``(rows, cols)`` that contain every ray hitting the sphere (center, radius).

    The bounds come from libm trigonometry but carry a 2-pixel margin, so they never change which
    pixels are hit, only how many are tested.
    """
    full = [(slice(0, H), slice(0, W))]
    v = center - np.asarray(scene.camera, dtype=np.float64)
    c, s = math.cos(scene.yaw), math.sin(scene.yaw)
    vx, vy, vz = c * v[0] - s * v[2], v[1], s * v[0] + c * v[2]
    dist = math.sqrt(vx * vx + vy * vy + vz * vz)
    dxz = math.sqrt(vx * vx + vz * vz)
    if dist <= radius * 1.001 + 1e-6:
        return full
    alpha = math.asin(min(1.0, radius / dist))
    phic = math.atan2(vy, dxz)
    top, bot = phic + alpha, phic - alpha
    r0 = max(0, int(math.floor((0.5 - top / math.pi) * H - 0.5)) - 2)
    r1 = min(H, int(math.ceil((0.5 - bot / math.pi) * H - 0.5)) + 3)
    if r1 <= r0:
        return []
    rows = slice(r0, r1)
    if dxz <= radius * 1.001 + 1e-6:
        return [(rows, slice(0, W))]
    beta = math.asin(min(1.0, radius / dxz))
    thc = math.atan2(vz, vx)
    c0 = int(math.floor((thc - beta + math.pi) / (2 * math.pi) * W - 0.5)) - 2
    c1 = int(math.ceil((thc + beta + math.pi) / (2 * math.pi) * W - 0.5)) + 3
    if c1 - c0 >= W:
        return [(rows, slice(0, W))]
    c0m = c0 % W
    c1m = c0m + (c1 - c0)
    if c1m <= W:
        return [(rows, slice(c0m, c1m))]
    return [(rows, slice(c0m, W)), (rows, slice(0, c1m - W))]


def _bounding_sphere(obj) -> tuple[np.ndarray, float] | None:
    if isinstance(obj, Box):
        lo, hi = np.asarray(obj.lo, np.float64), np.asarray(obj.hi, np.float64)
        return (lo + hi) / 2, float(np.sqrt(((hi - lo) ** 2).sum()) / 2)
    if isinstance(obj, Cylinder):
        h = (obj.y1 - obj.y0) / 2
        return np.array([obj.cx, (obj.y0 + obj.y1) / 2, obj.cz]), math.sqrt(obj.radius**2 + h * h)
    if isinstance(obj, Sphere):
        return np.asarray(obj.center, np.float64), float(obj.radius)
    return None  # room, ground: whole panorama


# --------------------------------------------------------------------------------------------
# intersections (o: camera in the scene frame; d*: ray components of one window; t = inf: miss)


def _isect_box(o, lo, hi, dx, dy, dz):
    tn = None
    tf = None
    face = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, d in enumerate((dx, dy, dz)):
            inv = 1.0 / d
            t1 = (lo[a] - o[a]) * inv
            t2 = (hi[a] - o[a]) * inv
            near = np.minimum(t1, t2)
            far = np.maximum(t1, t2)
            if tn is None:
                tn, tf, face = near, far, np.zeros(d.shape, np.int8)
            else:
                bigger = near > tn
                tn = np.where(bigger, near, tn)
                face[bigger] = a
                tf = np.minimum(tf, far)
    hit = (tn <= tf) & (tn > _EPS)
    return np.where(hit, tn, np.inf), face


def _exit_box(o, lo, hi, dx, dy, dz):
    """Distance at which rays starting inside ``lo..hi`` leave it, and the exit axis."""
    t = None
    face = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, d in enumerate((dx, dy, dz)):
            ta = np.where(d > 0, hi[a] - o[a], lo[a] - o[a]) / d
            ta = np.where(d == 0, np.inf, ta)
            if t is None:
                t, face = ta, np.zeros(d.shape, np.int8)
            else:
                smaller = ta < t
                t = np.where(smaller, ta, t)
                face[smaller] = a
    return t, face


def _isect_room(o, room: Room, dx, dy, dz):
    lo, hi = room.lo, room.hi
    t, face = _exit_box(o, lo, hi, dx, dy, dz)
    d = (dx, dy, dz)
    for op in room.openings:
        a = op.axis
        on_wall = (face == a) & ((d[a] > 0) if op.side == 1 else (d[a] < 0))
        # where the ray meets the wall: inside the opening's rectangle?
        inside = on_wall
        for b in range(3):
            if b == a:
                continue
            pb = o[b] + t * d[b]
            inside = inside & (pb > op.lo[b]) & (pb < op.hi[b])
        if inside.any():
            idx = np.nonzero(inside)
            t2, f2 = _exit_box(o, op.lo, op.hi, dx[idx], dy[idx], dz[idx])
            t[idx] = t2
            face[idx] = f2
    return t, face


def _isect_ground(o, g: Ground, dx, dy, dz):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (g.height - o[1]) / dy
    t = np.where((dy < 0) & (t > _EPS), t, np.inf)
    return t, np.zeros(dy.shape, np.int8)


def _isect_cylinder(o, cy: Cylinder, dx, dy, dz):
    ox, oz = o[0] - cy.cx, o[2] - cy.cz
    a = dx * dx + dz * dz
    b = (ox * dx + oz * dz)  # half b
    c = ox * ox + oz * oz - cy.radius * cy.radius
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / a
        ys = o[1] + ts * dy
        side = (disc >= 0) & (ts > _EPS) & (ys >= cy.y0) & (ys <= cy.y1)
        t = np.where(side, ts, np.inf)
        face = np.zeros(dy.shape, np.int8)
        for code, plane, cond in ((1, cy.y1, o[1] > cy.y1), (2, cy.y0, o[1] < cy.y0)):
            if not cond:
                continue
            tc = (plane - o[1]) / dy
            px, pz = ox + tc * dx, oz + tc * dz
            cap = (tc > _EPS) & (px * px + pz * pz <= cy.radius * cy.radius) & (tc < t)
            t = np.where(cap, tc, t)
            face[cap] = code
    return t, face


def _isect_sphere(o, sp: Sphere, dx, dy, dz):
    ox, oy, oz = o[0] - sp.center[0], o[1] - sp.center[1], o[2] - sp.center[2]
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - sp.radius * sp.radius
    disc = b * b - c
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    return t, np.zeros(dy.shape, np.int8)


def _intersect(o, obj, dx, dy, dz):
    if isinstance(obj, Box):
        return _isect_box(o, obj.lo, obj.hi, dx, dy, dz)
    if isinstance(obj, Room):
        return _isect_room(o, obj, dx, dy, dz)
    if isinstance(obj, Ground):
        return _isect_ground(o, obj, dx, dy, dz)
    if isinstance(obj, Cylinder):
        return _isect_cylinder(o, obj, dx, dy, dz)
    if isinstance(obj, Sphere):
        return _isect_sphere(o, obj, dx, dy, dz)
    raise TypeError(f"unknown scene primitive {type(obj).__name__}")


# --------------------------------------------------------------------------------------------
# textures


_NOISE_N = 256
_NOISE_TABLE: np.ndarray | None = None


def _noise_table() -> np.ndarray:
    """A fixed ``256*256`` lattice of uniform values in [0, 1) (PCG64, identical everywhere)."""
    global _NOISE_TABLE
    if _NOISE_TABLE is None:
        _NOISE_TABLE = np.random.Generator(np.random.PCG64(20260101)).random(_NOISE_N * _NOISE_N)
    return _NOISE_TABLE


def _vnoise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth (bilinear + smoothstep) value noise in [0, 1) on the unit lattice, tiled every 256."""
    table = _noise_table()
    fu, fv = np.floor(u), np.floor(v)
    su, sv = u - fu, v - fv
    su = su * su * (3.0 - 2.0 * su)
    sv = sv * sv * (3.0 - 2.0 * sv)
    m = _NOISE_N - 1
    iu = (fu.astype(np.int64) + (seed * 7919)) & m
    iv = (fv.astype(np.int64) + (seed * 104729 >> 3)) & m
    iu1 = (iu + 1) & m
    iv = iv * _NOISE_N
    iv1 = ((iv + _NOISE_N) & (m * _NOISE_N + m))
    a = table.take(iu + iv)
    b = table.take(iu1 + iv)
    c = table.take(iu + iv1)
    d = table.take(iu1 + iv1)
    top = a + (b - a) * su
    bottom = c + (d - c) * su
    return top + (bottom - top) * sv


def _fbm(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Two octaves of value noise in [0, 1)."""
    return 0.65 * _vnoise(u, v, seed) + 0.35 * _vnoise(2.03 * u + 17.1, 2.03 * v - 3.7, seed + 1)


def _parity(x: np.ndarray) -> np.ndarray:
    return np.mod(np.floor(x), 2.0) == 1.0


def _mix(c1, c2, w: np.ndarray) -> np.ndarray:
    """[3, n] colours: c1 where w == 0, c2 where w == 1."""
    c1 = np.asarray(c1, np.float64)[:, None]
    c2 = np.asarray(c2, np.float64)[:, None]
    return c1 + (c2 - c1) * w[None, :]


def _albedo(mat: Material, u: np.ndarray, v: np.ndarray, vertical: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB ``[3, n]`` of pattern ``mat`` at surface coordinates ``u, v`` (metres)."""
    s = mat.scale
    n = _fbm(u * (4.0 / s), v * (4.0 / s), mat.seed)
    mod = 1.0 + mat.noise * 2.0 * (n - 0.5)
    if mat.pattern in ("plain", "emissive"):
        col = _mix(mat.color, mat.color, np.zeros_like(u))
    elif mat.pattern == "checker":
        col = _mix(mat.color, mat.color2, (_parity(u / s) ^ _parity(v / s)).astype(np.float64))
    elif mat.pattern == "stripes":
        col = _mix(mat.color, mat.color2, _parity(u / s).astype(np.float64))
    elif mat.pattern == "noise":
        col = _mix(mat.color, mat.color2, _fbm(u / s, v / s, mat.seed + 11))
    elif mat.pattern == "windows":
        fu = u / s - np.floor(u / s)
        fv = v / (1.2 * s) - np.floor(v / (1.2 * s))
        win = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8) & (v > 1.0)
        if vertical is not None:
            win &= vertical
        col = _mix(mat.color, (0.08, 0.12, 0.2), win.astype(np.float64))
        col = col * np.where(win, 1.0 + 0.8 * (n - 0.5), 1.0)[None, :]
        if vertical is not None:
            col = col * np.where(vertical, 1.0, 0.7)[None, :]
    elif mat.pattern == "street":
        half = mat.params[0]
        az = np.abs(v)
        road = az < half
        walk = (az >= half) & (az < half + 2.5)
        line = (az < 0.12) & (np.mod(u, 3.0) < 1.5)
        grass = _mix(mat.color2, (0.25, 0.2, 0.1), _fbm(u / s, v / s, mat.seed + 3))
        tiles = (_parity(u) ^ _parity(v)).astype(np.float64)
        walk_c = _mix((0.55, 0.54, 0.5), (0.45, 0.44, 0.42), tiles)
        road_c = _mix(mat.color, (0.85, 0.85, 0.8), line.astype(np.float64))
        col = np.where(road[None], road_c, np.where(walk[None], walk_c, grass))
    else:
        raise ValueError(f"unknown material pattern {mat.pattern!r}")
    if mat.pattern == "emissive":
        return col
    return np.clip(col * mod[None, :], 0.0, 1.0)


def _pseudo_arc(nx: np.ndarray, nz: np.ndarray) -> np.ndarray:
    """A continuous coordinate around a vertical axis in [0, 4) without trigonometry (seam at +x)."""
    return np.where(nz >= 0, 1.0 - nx, 3.0 + nx)


# --------------------------------------------------------------------------------------------
# tracing


def _trace(scene: Scene, H: int, W: int, r0: int = 0, r1: int | None = None) -> _Trace:
    """Trace rows ``r0:r1`` of the ``H x W`` ERP grid (every array of the result has ``r1 - r0`` rows)."""
    r1 = H if r1 is None else r1
    rays = erp_rays(H, W, r0, r1)
    sy, cy = det_sincos(np.array([scene.yaw]))
    s, c = float(sy[0]), float(cy[0])
    d = np.empty_like(rays)
    d[0] = c * rays[0] + s * rays[2]
    d[1] = rays[1]
    d[2] = c * rays[2] - s * rays[0]
    o = np.asarray(scene.camera, dtype=np.float64)
    h = r1 - r0
    t = np.full((h, W), np.inf)
    obj = np.full((h, W), -1, np.int16)
    face = np.zeros((h, W), np.int8)
    wins_of: list[list[tuple[slice, slice]]] = []
    for k, prim in enumerate(scene.objects):
        bs = _bounding_sphere(prim)
        wins = [(slice(0, H), slice(0, W))] if bs is None else _windows(scene, bs[0], bs[1], H, W)
        band = []
        for rs, cs in wins:  # clip to the band, in band coordinates
            a, b = max(rs.start, r0), min(rs.stop, r1)
            if a < b:
                band.append((slice(a - r0, b - r0), cs))
        wins_of.append(band)
        for rs, cs in band:
            tk, fk = _intersect(o, prim, d[0, rs, cs], d[1, rs, cs], d[2, rs, cs])
            tw = t[rs, cs]
            closer = tk < tw
            np.copyto(tw, tk, where=closer)
            np.copyto(obj[rs, cs], np.int16(k), where=closer)
            np.copyto(face[rs, cs], fk, where=closer)
    tr = _Trace(t, obj, face, d, np.zeros_like(d), np.zeros_like(d), np.zeros((h, W), bool))
    for k, prim in enumerate(scene.objects):
        for rs, cs in wins_of[k]:
            sel = np.nonzero(obj[rs, cs] == k)
            if sel[0].size == 0:
                continue
            _surface(scene, o, prim, tr, rs, cs, sel)
    return tr


def _surface(scene: Scene, o: np.ndarray, prim, tr: _Trace, rs: slice, cs: slice, sel) -> None:
    """Fill normals (scene frame), albedo and emissive flags of the pixels ``sel`` of window (rs, cs)."""
    t = tr.t[rs, cs][sel]
    f = tr.face[rs, cs][sel]
    dd = [tr.d[a, rs, cs][sel] for a in range(3)]
    p = [o[a] + t * dd[a] for a in range(3)]
    zero = np.zeros_like(t)
    if isinstance(prim, (Box, Room)):
        n = [np.where(f == a, np.where(dd[a] > 0, -1.0, 1.0), 0.0) for a in range(3)]
        u = np.where(f == 0, p[2], p[0])
        v = np.where(f == 1, p[2], p[1])
        if isinstance(prim, Box):
            alb = _albedo(prim.material, u, v, vertical=(f != 1))
        else:
            floor = (f == 1) & (dd[1] < 0)
            ceil = (f == 1) & (dd[1] > 0)
            alb = np.empty((3, t.size))
            for m, which in ((prim.floor, floor), (prim.ceiling, ceil), (prim.walls, f != 1)):
                if which.any():
                    alb[:, which] = _albedo(m, u[which], v[which])
        mat = prim.material if isinstance(prim, Box) else prim.walls
    elif isinstance(prim, Ground):
        n = [zero, zero + 1.0, zero]
        alb = _albedo(prim.material, p[0], p[2])
        mat = prim.material
    elif isinstance(prim, Cylinder):
        r = prim.radius
        nx = (p[0] - prim.cx) / r
        nz = (p[2] - prim.cz) / r
        side = f == 0
        n = [np.where(side, nx, 0.0), np.where(side, 0.0, np.where(f == 1, 1.0, -1.0)), np.where(side, nz, 0.0)]
        u = np.where(side, r * _pseudo_arc(nx, nz), p[0])
        v = np.where(side, p[1], p[2])
        alb = _albedo(prim.material, u, v)
        mat = prim.material
    elif isinstance(prim, Sphere):
        r = prim.radius
        n = [(p[a] - prim.center[a]) / r for a in range(3)]
        alb = _albedo(prim.material, r * _pseudo_arc(n[0], n[2]), r * n[1] * 2.0)
        mat = prim.material
    else:  # pragma: no cover
        raise TypeError(type(prim))
    # normals face the camera
    flip = (n[0] * dd[0] + n[1] * dd[1] + n[2] * dd[2]) > 0
    for a in range(3):
        tr.n[a, rs, cs][sel] = np.where(flip, -n[a], n[a])
        tr.albedo[a, rs, cs][sel] = alb[a]
    if mat.pattern == "emissive":
        tr.emissive[rs, cs][sel] = True


# --------------------------------------------------------------------------------------------
# shading


def _sky(scene: Scene, d: np.ndarray) -> np.ndarray:
    dy = np.maximum(d[1], 0.0)
    g = np.sqrt(dy)
    horizon = np.array([0.78, 0.84, 0.92])[:, None, None]
    zenith = np.array([0.22, 0.42, 0.78])[:, None, None]
    col = horizon + (zenith - horizon) * g[None]
    hz = np.maximum(d[1], 0.0) + 0.08
    cu, cv = d[0] / hz, d[2] / hz
    cloud = _fbm(cu * 1.5, cv * 1.5, scene.seed + 101)
    cover = np.clip((cloud - 0.5) * 3.0, 0.0, 1.0) * np.minimum(1.0, dy * 6.0)
    col = col + (0.95 - col) * cover[None]
    if scene.sun is not None:
        cosang = d[0] * scene.sun[0] + d[1] * scene.sun[1] + d[2] * scene.sun[2]
        glow = np.maximum(cosang, 0.0)
        for _ in range(6):
            glow = glow * glow  # ^64
        col = col + 0.35 * glow[None] + np.where(cosang > 0.99995, 2.0, 0.0)[None]
    return col


def _shade(scene: Scene, tr: _Trace) -> np.ndarray:
    """Linear RGB ``[3, H, W]`` (may exceed 1 before tone mapping)."""
    hit = tr.obj >= 0
    t = np.where(hit, tr.t, 0.0)
    o = scene.camera
    n = tr.n
    amb = np.asarray(scene.ambient, np.float64)[:, None, None]
    light = amb * (0.8 + 0.2 * n[1])[None]
    if scene.sun is not None:
        sun = scene.sun
        lam = np.maximum(n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2], 0.0)
        light = light + np.asarray(scene.sun_intensity, np.float64)[:, None, None] * lam[None]
    if scene.lamps:
        p = [o[a] + t * tr.d[a] for a in range(3)]
        for lamp in scene.lamps:
            lx, ly, lz = (lamp.position[a] - p[a] for a in range(3))
            d2 = lx * lx + ly * ly + lz * lz + 1e-12
            ndl = np.maximum(n[0] * lx + n[1] * ly + n[2] * lz, 0.0) / np.sqrt(d2)
            fall = ndl / (1.0 + d2 / (lamp.radius * lamp.radius))
            light = light + np.asarray(lamp.intensity, np.float64)[:, None, None] * fall[None]
    col = tr.albedo * light
    col = np.where(tr.emissive[None], tr.albedo, col)
    if scene.sky:
        col = np.where(hit[None], col, _sky(scene, tr.d))
    return col


def _to_uint8(col: np.ndarray) -> np.ndarray:
    """Linear RGB ``[3, H, W]`` -> uint8 ``[H, W, 3]`` with a gamma of 2 (sqrt: exact everywhere)."""
    g = np.sqrt(np.clip(col, 0.0, 1.0))
    return np.floor(g * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0).copy()


def render(scene: Scene, height: int = 512, supersample: int = 1) -> SyntheticPanorama:
    """Render ``scene`` as an ERP panorama of ``height x 2*height`` pixels.

    ``supersample = s`` averages ``s x s`` sub-pixel rays per pixel for the RGB image (linear light);
    depth, normals and mask always come from the ray through the pixel centre.
    """
    if not isinstance(height, (int, np.integer)) or height < 2:
        raise ValueError(f"height must be an integer >= 2, got {height!r}")
    if not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise ValueError(f"supersample must be an integer >= 1, got {supersample!r}")
    H, W = int(height), 2 * int(height)
    s = int(supersample)
    rgb = np.empty((H, W, 3), np.uint8)
    mask = np.empty((H, W), bool)
    t = np.empty((H, W))
    n = np.empty((3, H, W))
    # Row bands keep the temporaries small (cache friendly); every operation is per pixel, so the
    # result does not depend on the band size.
    band = max(1, BAND_PIXELS // (W * s * s))
    for r0 in range(0, H, band):
        r1 = min(H, r0 + band)
        tr = _trace(scene, H, W, r0, r1)
        if s == 1:
            col = _shade(scene, tr)
        else:
            hr = _shade(scene, _trace(scene, H * s, W * s, r0 * s, r1 * s))
            col = np.zeros((3, r1 - r0, W))
            for a in range(s):  # fixed summation order
                for b in range(s):
                    col += hr[:, a::s, b::s]
            col /= float(s * s)
        rgb[r0:r1] = _to_uint8(col)
        mask[r0:r1] = (tr.obj >= 0) & (tr.t <= scene.max_depth)
        t[r0:r1] = tr.t
        n[:, r0:r1] = tr.n
    depth = np.where(mask, t, 0.0).astype(np.float32)
    sy, cy = det_sincos(np.array([scene.yaw]))
    s_, c_ = float(sy[0]), float(cy[0])
    normals = np.stack([c_ * n[0] - s_ * n[2], n[1], s_ * n[0] + c_ * n[2]], axis=-1)
    normals = np.where(mask[..., None], normals, 0.0).astype(np.float32)
    return SyntheticPanorama(
        rgb=rgb,
        depth=depth,
        normals=normals,
        mask=mask,
        kind=scene.kind,
        seed=scene.seed,
        view=scene.view,
        max_depth=scene.max_depth,
    )


def render_scene(
    seed: int,
    height: int = 512,
    kind: Literal["indoor", "outdoor"] | None = None,
    supersample: int = 1,
    view: int = 0,
) -> SyntheticPanorama:
    """Generate the procedural scene of ``seed`` (``kind=None``: picked from the seed) and render view ``view``.

    Returns a :class:`SyntheticPanorama` of ``height x 2*height`` pixels; bit-identical for equal arguments.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return render(make_scene(int(seed), kind, int(view)), height=height, supersample=supersample)
