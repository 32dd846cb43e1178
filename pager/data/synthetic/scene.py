"""Procedural scene descriptions: primitives, materials, and seeded indoor / outdoor generators.

A :class:`Scene` lives in its own *scene frame* (metres, ``y`` up, floor / ground at ``y = 0``).
The camera sits at ``Scene.camera`` in that frame and is rotated by ``Scene.yaw`` about ``y``:
a world-frame ray ``(x, y, z)`` (``pager.geometry`` conventions) becomes the scene-frame ray
``(cos(yaw) x + sin(yaw) z, y, -sin(yaw) x + cos(yaw) z)``. Scenes are plain frozen dataclasses,
so tests can build exact scenes by hand and :func:`pager.data.synthetic.raycast.render` them.

All randomness comes from ``numpy.random.Generator(PCG64(...))`` using only ``uniform``,
``random`` and ``integers`` (bit-identical on every platform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

from pager.data.synthetic._detmath import det_sincos

INDOOR_MAX_DEPTH = 15.0
OUTDOOR_MAX_DEPTH = 75.0

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Material:
    """Surface appearance.

    ``pattern``: ``plain`` | ``checker`` | ``stripes`` | ``noise`` | ``windows`` | ``street`` | ``emissive``.
    ``color``/``color2``: linear RGB in [0, 1]; ``scale``: metres per pattern period; ``noise``:
    amplitude of value-noise modulation; ``params``: pattern-specific numbers (``street``: road half
    width in metres); ``seed``: noise seed.
    """

    pattern: str = "plain"
    color: Vec3 = (0.7, 0.7, 0.7)
    color2: Vec3 = (0.3, 0.3, 0.3)
    scale: float = 1.0
    noise: float = 0.1
    params: tuple[float, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Box:
    """Solid axis-aligned box ``lo <= p <= hi`` (scene frame), seen from outside."""

    lo: Vec3
    hi: Vec3
    material: Material = field(default_factory=Material)


@dataclass(frozen=True)
class Cylinder:
    """Solid vertical cylinder: axis through ``(cx, cz)``, ``radius``, from ``y0`` to ``y1``, capped."""

    cx: float
    cz: float
    radius: float
    y0: float
    y1: float
    material: Material = field(default_factory=Material)


@dataclass(frozen=True)
class Sphere:
    """Solid sphere."""

    center: Vec3
    radius: float
    material: Material = field(default_factory=Material)


@dataclass(frozen=True)
class Opening:
    """An alcove / doorway: box ``lo..hi`` outside the room, sharing one wall plane with it.

    ``axis`` (0 = x, 2 = z) and ``side`` (0 = the room's ``lo`` wall, 1 = its ``hi`` wall) name the
    wall; the opening in that wall is the box's cross-section.
    """

    axis: int
    side: int
    lo: Vec3
    hi: Vec3


@dataclass(frozen=True)
class Room:
    """The inside of a box room ``lo..hi`` with openings; seen from inside (the camera is in it)."""

    lo: Vec3
    hi: Vec3
    floor: Material
    ceiling: Material
    walls: Material
    openings: tuple[Opening, ...] = ()


@dataclass(frozen=True)
class Ground:
    """Infinite horizontal plane ``y = height`` seen from above."""

    height: float
    material: Material


@dataclass(frozen=True)
class Lamp:
    """Point light: position (scene frame), linear RGB intensity, falloff radius in metres."""

    position: Vec3
    intensity: Vec3
    radius: float = 2.5


Primitive = Union[Room, Ground, Box, Cylinder, Sphere]


@dataclass(frozen=True)
class Scene:
    """A complete procedural scene and its camera."""

    kind: str
    camera: Vec3
    yaw: float
    objects: tuple[Primitive, ...]
    lamps: tuple[Lamp, ...] = ()
    sun: Vec3 | None = None  # unit vector towards the sun (scene frame)
    sun_intensity: Vec3 = (0.0, 0.0, 0.0)
    ambient: Vec3 = (0.25, 0.25, 0.25)
    sky: bool = False
    max_depth: float = INDOOR_MAX_DEPTH
    seed: int = 0
    view: int = 0


# --------------------------------------------------------------------------------------------
# generators


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _color(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.85) -> Vec3:
    return (_u(rng, lo, hi), _u(rng, lo, hi), _u(rng, lo, hi))


def _tint(rng: np.random.Generator, base: Vec3, amount: float) -> Vec3:
    return tuple(min(1.0, max(0.0, c + _u(rng, -amount, amount))) for c in base)  # type: ignore[return-value]


def _material(rng: np.random.Generator, patterns: tuple[str, ...], scale: tuple[float, float]) -> Material:
    pattern = patterns[int(rng.integers(len(patterns)))]
    c1 = _color(rng)
    c2 = _tint(rng, c1, 0.35) if rng.random() < 0.5 else _color(rng)
    return Material(
        pattern=pattern,
        color=c1,
        color2=c2,
        scale=_u(rng, *scale),
        noise=_u(rng, 0.05, 0.3),
        seed=int(rng.integers(2**31)),
    )


def _bounds(obj: Primitive) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(obj, Box):
        return np.array(obj.lo), np.array(obj.hi)
    if isinstance(obj, Cylinder):
        r = obj.radius
        return np.array([obj.cx - r, obj.y0, obj.cz - r]), np.array([obj.cx + r, obj.y1, obj.cz + r])
    if isinstance(obj, Sphere):
        c = np.array(obj.center)
        return c - obj.radius, c + obj.radius
    raise TypeError(type(obj))


def _clearance(p: np.ndarray, objs: list[Primitive]) -> float:
    """Smallest distance from ``p`` to the bounding boxes of ``objs`` (negative inside)."""
    best = math.inf
    for o in objs:
        lo, hi = _bounds(o)
        outside = np.maximum(np.maximum(lo - p, p - hi), 0.0)
        d = float(np.sqrt((outside * outside).sum()))
        if d == 0.0:
            d = -float(np.min(np.minimum(p - lo, hi - p)))
        best = min(best, d)
    return best


def _place_camera(rng: np.random.Generator, lo: Vec3, hi: Vec3, objs: list[Primitive], clearance: float) -> Vec3:
    best, best_c = None, -math.inf
    for _ in range(400):
        p = np.array([_u(rng, lo[0], hi[0]), _u(rng, lo[1], hi[1]), _u(rng, lo[2], hi[2])])
        c = _clearance(p, objs)
        if c >= clearance:
            return (float(p[0]), float(p[1]), float(p[2]))
        if c > best_c:
            best, best_c = p, c
    assert best is not None
    return (float(best[0]), float(best[1]), float(best[2]))


def indoor_scene(seed: int, view: int = 0) -> Scene:
    """A random box room with a doorway and an alcove, furniture boxes, a table, cylinders, spheres, lamps.

    The geometry depends on ``seed`` only; the camera position and yaw on ``(seed, view)``.
    Every surface lies within 15 m of any camera position in the room.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    X, Z, Y = _u(rng, 3.0, 7.5), _u(rng, 3.0, 7.5), _u(rng, 2.4, 3.4)
    floor = _material(rng, ("checker", "stripes", "noise"), (0.3, 1.0))
    walls = _material(rng, ("plain", "stripes", "noise", "checker"), (0.2, 1.5))
    ceiling = Material("plain", _tint(rng, (0.85, 0.85, 0.82), 0.1), (0.5, 0.5, 0.5), 1.0, 0.05, seed=int(rng.integers(2**31)))
    size = {0: X, 2: Z}
    walls_avail = [(0, 0), (0, 1), (2, 0), (2, 1)]
    order = rng.permutation(4)
    openings = []
    for n, kind in enumerate(("door", "alcove")):
        axis, side = walls_avail[int(order[n])]
        other = 2 - axis  # the horizontal coordinate along the wall
        length = size[other]
        if kind == "door":
            w = _u(rng, 0.8, 1.2)
            y0, y1 = 0.0, min(_u(rng, 2.0, 2.3), Y - 0.1)
            depth = _u(rng, 1.5, 3.5)
        else:
            w = _u(rng, 1.0, min(2.5, length - 0.6))
            y0 = 0.0 if rng.random() < 0.5 else _u(rng, 0.5, 1.0)
            y1 = _u(rng, y0 + 1.0, Y - 0.05) if Y - 0.05 > y0 + 1.0 else Y - 0.05
            depth = _u(rng, 0.4, 1.2)
        a0 = _u(rng, 0.2, length - w - 0.2)
        lo = [0.0, y0, 0.0]
        hi = [0.0, y1, 0.0]
        lo[other], hi[other] = a0, a0 + w
        wall = 0.0 if side == 0 else size[axis]
        lo[axis], hi[axis] = (wall - depth, wall) if side == 0 else (wall, wall + depth)
        openings.append(Opening(axis, side, tuple(lo), tuple(hi)))  # type: ignore[arg-type]
    room = Room((0.0, 0.0, 0.0), (X, Y, Z), floor, ceiling, walls, tuple(openings))

    objs: list[Primitive] = []
    for _ in range(int(rng.integers(2, 6))):
        tall = rng.random() < 0.25
        w, d = _u(rng, 0.4, min(1.8, X / 2)), _u(rng, 0.4, min(1.0, Z / 2))
        if rng.random() < 0.5:
            w, d = d, w
        h = _u(rng, 1.6, min(2.2, Y - 0.2)) if tall else _u(rng, 0.4, 1.2)
        if rng.random() < 0.6:  # against a wall
            x0 = 0.0 if rng.random() < 0.5 else X - w
            z0 = _u(rng, 0.0, Z - d)
            if rng.random() < 0.5:
                x0, z0 = _u(rng, 0.0, X - w), (0.0 if rng.random() < 0.5 else Z - d)
        else:
            x0, z0 = _u(rng, 0.0, X - w), _u(rng, 0.0, Z - d)
        mat = _material(rng, ("plain", "stripes", "checker", "noise"), (0.1, 0.6))
        objs.append(Box((x0, 0.0, z0), (x0 + w, h, z0 + d), mat))
    if rng.random() < 0.6:  # a table: top + four legs
        w, d = _u(rng, 0.8, min(1.6, X - 0.4)), _u(rng, 0.6, min(1.0, Z - 0.4))
        x0, z0 = _u(rng, 0.2, X - w - 0.2), _u(rng, 0.2, Z - d - 0.2)
        top = _u(rng, 0.7, 0.78)
        mat = _material(rng, ("plain", "stripes", "noise"), (0.05, 0.3))
        objs.append(Box((x0, top - 0.04, z0), (x0 + w, top, z0 + d), mat))
        for lx in (x0 + 0.03, x0 + w - 0.08):
            for lz in (z0 + 0.03, z0 + d - 0.08):
                objs.append(Box((lx, 0.0, lz), (lx + 0.05, top - 0.04, lz + 0.05), mat))
    for _ in range(int(rng.integers(0, 4))):
        mat = _material(rng, ("plain", "stripes", "checker"), (0.1, 0.5))
        if rng.random() < 0.35:  # pillar
            r = _u(rng, 0.1, 0.3)
            objs.append(Cylinder(_u(rng, r + 0.3, X - r - 0.3), _u(rng, r + 0.3, Z - r - 0.3), r, 0.0, Y, mat))
        else:
            r = _u(rng, 0.12, 0.35)
            objs.append(Cylinder(_u(rng, r, X - r), _u(rng, r, Z - r), r, 0.0, _u(rng, 0.3, 0.9), mat))
    for _ in range(int(rng.integers(0, 4))):
        r = _u(rng, 0.1, 0.4)
        mat = _material(rng, ("plain", "checker", "stripes", "noise"), (0.05, 0.3))
        objs.append(Sphere((_u(rng, r, X - r), r, _u(rng, r, Z - r)), r, mat))
    lamps = []
    for _ in range(int(rng.integers(1, 4))):
        pos = (_u(rng, 0.5, X - 0.5), Y - _u(rng, 0.3, 0.7), _u(rng, 0.5, Z - 0.5))
        warm = _u(rng, 0.0, 0.25)
        strength = _u(rng, 0.45, 0.9)
        lamps.append(Lamp(pos, (strength, strength * (1 - 0.4 * warm), strength * (1 - warm)), _u(rng, 1.5, 3.0)))
        glow = Material("emissive", (1.0, 1.0 - 0.3 * warm, 1.0 - 0.6 * warm))
        objs.append(Sphere((pos[0], pos[1] + 0.1, pos[2]), 0.08, glow))
        objs.append(Cylinder(pos[0], pos[2], 0.008, pos[1] + 0.17, Y, Material("plain", (0.1, 0.1, 0.1))))

    cam_rng = np.random.Generator(np.random.PCG64([seed, view, 1]))
    camera = _place_camera(cam_rng, (0.4, 0.9, 0.4), (X - 0.4, min(1.8, Y - 0.6), Z - 0.4), objs, 0.3)
    yaw = _u(cam_rng, -math.pi, math.pi)
    return Scene(
        kind="indoor",
        camera=camera,
        yaw=yaw,
        objects=(room, *objs),
        lamps=tuple(lamps),
        ambient=_tint(cam_rng, (0.22, 0.22, 0.22), 0.05),
        sky=False,
        max_depth=INDOOR_MAX_DEPTH,
        seed=seed,
        view=view,
    )


def outdoor_scene(seed: int, view: int = 0) -> Scene:
    """A street or open field: ground plane, box buildings, trees (trunk + crown), sun and sky.

    The geometry depends on ``seed`` only; the camera position and yaw on ``(seed, view)``.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    half = _u(rng, 4.0, 10.0)  # road half width along x
    grass = (_u(rng, 0.15, 0.35), _u(rng, 0.35, 0.55), _u(rng, 0.1, 0.25))
    ground = Ground(0.0, Material("street", (0.22, 0.22, 0.24), grass, _u(rng, 2.0, 4.0), 0.25, (half,), int(rng.integers(2**31))))
    objs: list[Primitive] = [ground]
    street = rng.random() < 0.7
    if street:
        for side in (-1.0, 1.0):
            x = _u(rng, -70.0, -55.0)
            while x < 60.0:
                w = _u(rng, 6.0, 20.0)
                if rng.random() < 0.75:
                    setback = _u(rng, 1.5, 5.0)
                    depth = _u(rng, 6.0, 15.0)
                    h = _u(rng, 4.0, 30.0)
                    z0 = side * (half + setback)
                    z1 = side * (half + setback + depth)
                    mat = _material(rng, ("windows",), (2.5, 4.0))
                    objs.append(Box((x, 0.0, min(z0, z1)), (x + w, h, max(z0, z1)), mat))
                x += w + _u(rng, 0.0, 6.0)
    else:
        for _ in range(int(rng.integers(3, 9))):
            r, a = _u(rng, 15.0, 60.0), _u(rng, -math.pi, math.pi)
            sa, ca = det_sincos(np.array([a]))
            cx, cz = r * float(ca[0]), r * float(sa[0])
            w, d, h = _u(rng, 6.0, 20.0), _u(rng, 6.0, 20.0), _u(rng, 4.0, 25.0)
            if abs(cz) - d / 2 < half:  # keep the road free
                cz = math.copysign(half + d / 2 + 1.0, cz if cz != 0 else 1.0)
            mat = _material(rng, ("windows",), (2.5, 4.0))
            objs.append(Box((cx - w / 2, 0.0, cz - d / 2), (cx + w / 2, h, cz + d / 2), mat))
    trunk = Material("stripes", (0.3, 0.2, 0.12), (0.22, 0.14, 0.08), 0.15, 0.2)
    for _ in range(int(rng.integers(2, 11))):
        side = -1.0 if rng.random() < 0.5 else 1.0
        x, z = _u(rng, -45.0, 45.0), side * _u(rng, half + 0.8, half + 3.0 if street else half + 30.0)
        r, h = _u(rng, 0.15, 0.35), _u(rng, 1.8, 4.0)
        crown = _u(rng, 1.0, 3.0)
        leaves = Material("noise", (_u(rng, 0.05, 0.2), _u(rng, 0.25, 0.5), _u(rng, 0.05, 0.15)), (0.1, 0.2, 0.05), 0.4, 0.3, seed=int(rng.integers(2**31)))
        objs.append(Cylinder(x, z, r, 0.0, h + 0.5 * crown, trunk))
        objs.append(Sphere((x, h + crown, z), crown, leaves))

    cam_rng = np.random.Generator(np.random.PCG64([seed, view, 1]))
    height = _u(cam_rng, 1.4, 2.2) if cam_rng.random() < 0.85 else _u(cam_rng, 3.0, 8.0)
    camera = _place_camera(cam_rng, (-20.0, height, -(half - 1.0)), (20.0, height, half - 1.0), objs[1:], 1.0)
    yaw = _u(cam_rng, -math.pi, math.pi)
    elev, azim = _u(cam_rng, 0.35, 1.2), _u(cam_rng, -math.pi, math.pi)
    se, ce = det_sincos(np.array([elev]))
    sa, ca = det_sincos(np.array([azim]))
    sun = (float(ce[0] * ca[0]), float(se[0]), float(ce[0] * sa[0]))
    sun_i = _u(cam_rng, 0.9, 1.3)
    return Scene(
        kind="outdoor",
        camera=camera,
        yaw=yaw,
        objects=tuple(objs),
        sun=sun,
        sun_intensity=(sun_i, sun_i * 0.95, sun_i * 0.85),
        ambient=(0.3, 0.32, 0.38),
        sky=True,
        max_depth=OUTDOOR_MAX_DEPTH,
        seed=seed,
        view=view,
    )


def make_scene(seed: int, kind: Literal["indoor", "outdoor"] | None = None, view: int = 0) -> Scene:
    """The scene of ``seed``; ``kind=None`` picks indoor or outdoor from the seed (50/50)."""
    if kind is None:
        kind = "indoor" if np.random.Generator(np.random.PCG64([seed, 7])).random() < 0.5 else "outdoor"
    if kind == "indoor":
        return indoor_scene(seed, view)
    if kind == "outdoor":
        return outdoor_scene(seed, view)
    raise ValueError(f"kind must be 'indoor', 'outdoor' or None, got {kind!r}")
