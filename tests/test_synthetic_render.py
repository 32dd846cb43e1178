"""Procedural scenes: analytic depth/normals on hand-built scenes, masks, determinism, speed-independent checks."""

import hashlib
import math

import numpy as np
import pytest
import torch

from pager.data.synthetic import SyntheticPanorama, make_scene, render, render_scene
from pager.data.synthetic._detmath import det_sincos, erp_rays
from pager.data.synthetic.scene import Box, Cylinder, Ground, Material, Room, Scene, Sphere

H = 48  # small panoramas: 48 x 96


def world_rays(h):
    """Rays from the formula of pager.geometry, with numpy's own trigonometry (independent of _detmath)."""
    w = 2 * h
    theta = 2 * np.pi * (np.arange(w) + 0.5) / w - np.pi
    phi = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    th, ph = np.meshgrid(theta, phi)
    return np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)])


def yaw_to_world(v, yaw):
    """A scene-frame vector in the world frame (inverse of the yaw rotation documented in scene.py)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * v[0] - s * v[2], v[1], s * v[0] + c * v[2]])


def test_det_sincos_matches_numpy():
    x = np.linspace(-7.0, 7.0, 100001)
    s, c = det_sincos(x)
    assert np.abs(s - np.sin(x)).max() < 1e-15
    assert np.abs(c - np.cos(x)).max() < 1e-15


def test_rays_match_geometry_conventions():
    rays = erp_rays(H, 2 * H)
    np.testing.assert_allclose(rays, world_rays(H), atol=1e-15)
    from pager.geometry import erp_directions

    ref = erp_directions(H, 2 * H, dtype=torch.float64).numpy()
    np.testing.assert_allclose(rays, ref, atol=1e-14)
    # the centre of the image looks forward (+x), three quarters across looks right (+z)
    assert rays[0, H // 2, H] > 0.99 and rays[2, H // 2, 3 * H // 2] > 0.99


@pytest.mark.parametrize("yaw", [0.0, 0.37, -2.1])
def test_room_depth_and_normals_are_analytic(yaw):
    lo, hi = (0.0, 0.0, 0.0), (4.0, 3.0, 6.0)
    cam = (1.0, 1.2, 2.5)
    m = Material()
    scene = Scene("indoor", cam, yaw, (Room(lo, hi, m, m, m),), max_depth=15.0)
    pano = render(scene, height=H)
    rays = world_rays(H)
    assert pano.mask.all()
    # the six planes in the scene frame: (axis, value, inward normal)
    best = np.full((H, 2 * H), np.inf)
    normal = np.zeros((3, H, 2 * H))
    for axis in range(3):
        for value, sign in ((lo[axis], 1.0), (hi[axis], -1.0)):
            n_scene = np.zeros(3)
            n_scene[axis] = sign
            n_world = yaw_to_world(n_scene, yaw)
            dist = abs(value - cam[axis])  # camera-to-plane distance
            cosang = -(rays * n_world[:, None, None]).sum(0)  # ray . (towards the plane)
            with np.errstate(divide="ignore"):
                t = np.where(cosang > 0, dist / cosang, np.inf)
            closer = t < best
            best = np.where(closer, t, best)
            normal[:, closer] = n_world[:, None]
    np.testing.assert_allclose(pano.depth, best, rtol=2e-7)
    np.testing.assert_allclose(np.moveaxis(pano.normals, -1, 0), normal, atol=1e-6)
    # "looking straight at a wall": the pixel next to the forward direction sees the wall at distance / cos
    if yaw == 0.0:
        i, j = H // 2, H  # theta, phi = half a pixel off the +x axis
        expected = (hi[0] - cam[0]) / rays[0, i, j]
        assert abs(pano.depth[i, j] - expected) < 1e-5
        assert abs(pano.depth[i, j] - 3.0) < 3.0 * (1 - math.cos(math.pi / H)) + 1e-5
        np.testing.assert_allclose(pano.normals[i, j], [-1.0, 0.0, 0.0], atol=1e-7)


def test_opening_makes_depth_non_convex():
    m = Material()
    from pager.data.synthetic.scene import Opening

    door = Opening(axis=0, side=1, lo=(4.0, 0.0, 2.0), hi=(6.0, 2.0, 3.0))
    cam = (2.0, 1.0, 2.5)
    pano = render(Scene("indoor", cam, 0.0, (Room((0, 0, 0), (4.0, 3.0, 5.0), m, m, m, (door,)),)), height=64)
    # forward (+x) through the doorway: the back wall of the corridor at x = 6 is 4 m away
    i, j = 32, 64
    rays = world_rays(64)
    assert abs(pano.depth[i, j] - 4.0 / rays[0, i, j]) < 1e-5
    np.testing.assert_allclose(pano.normals[i, j], [-1, 0, 0], atol=1e-7)
    # well above the door (y > 2) the room wall at x = 4 is hit instead
    up = np.argmin(np.abs(np.arcsin(rays[1, :, j]) - math.atan2(1.6, 2.0)))
    assert abs(pano.depth[up, j] - 2.0 / rays[0, up, j]) < 1e-5


def test_box_sphere_cylinder_depth_and_normals():
    m = Material()
    box = Box((3.0, -1.0, -1.0), (4.0, 1.0, 1.0), m)  # in front (+x), its near face is the plane x = 3
    sphere = Sphere((0.0, 0.0, 5.0), 1.5, m)  # to the right (+z)
    cyl = Cylinder(-4.0, 0.0, 0.5, -1.0, 1.0, m)  # behind (-x)
    pano = render(Scene("outdoor", (0.0, 0.0, 0.0), 0.0, (box, sphere, cyl), sky=True, max_depth=75.0), height=64)
    rays = world_rays(64)
    # box: the front face
    front = (np.abs(rays[1] / rays[0]) < 1 / 3) & (np.abs(rays[2] / rays[0]) < 1 / 3) & (rays[0] > 0)
    np.testing.assert_allclose(pano.depth[front], (3.0 / rays[0])[front], rtol=1e-6)
    assert np.all(pano.normals[front] == np.array([-1, 0, 0], np.float32))
    # sphere: analytic range, normal = (p - c) / r
    c = np.array([0.0, 0.0, 5.0])
    b = (rays * c[:, None, None]).sum(0)
    disc = b * b - (c @ c - 1.5**2)
    hit = (disc > 1e-6) & (b > 0)
    t = b - np.sqrt(np.where(hit, disc, 0))
    np.testing.assert_allclose(pano.depth[hit], t[hit], rtol=1e-6)
    n = (rays * t - c[:, None, None]) / 1.5
    np.testing.assert_allclose(np.moveaxis(pano.normals, -1, 0)[:, hit], n[:, hit], atol=1e-5)
    # cylinder side (axis through x = -4, z = 0): 2-D quadratic in x, z; height within [-1, 1]
    a = rays[0] ** 2 + rays[2] ** 2
    bc = 4.0 * rays[0]  # (o - c) . d with o - c = (4, 0)
    disc_c = bc * bc - a * (16.0 - 0.25)
    tc = (-bc - np.sqrt(np.maximum(disc_c, 0))) / a
    side = (disc_c > 1e-6) & (bc < 0) & (np.abs(tc * rays[1]) < 0.99)
    assert side.sum() > 10
    np.testing.assert_allclose(pano.depth[side], tc[side], rtol=1e-6)
    radial = np.stack([tc * rays[0] + 4.0, 0 * tc, tc * rays[2]]) / 0.5
    np.testing.assert_allclose(np.moveaxis(pano.normals, -1, 0)[:, side], radial[:, side], atol=1e-5)
    # everything else is sky: mask false exactly where no object is hit
    assert (~pano.mask).sum() == (pano.depth == 0).sum()
    assert not pano.mask[0].any() and not pano.mask[-1].any()


def test_outdoor_mask_false_exactly_on_sky_and_far_ground():
    m = Material()
    cam = (0.0, 2.0, 0.0)
    sphere = Sphere((10.0, 2.0, 0.0), 3.0, m)
    scene = Scene("outdoor", cam, 0.0, (Ground(0.0, m), sphere), sky=True, max_depth=75.0)
    pano = render(scene, height=64)
    rays = world_rays(64)
    b = rays[0] * 10.0
    disc = b * b - (100.0 - 9.0)
    sphere_hit = (disc > 0) & (b > 0)
    with np.errstate(divide="ignore"):
        t_ground = np.where(rays[1] < 0, 2.0 / -rays[1], np.inf)
    expected = sphere_hit | (t_ground <= 75.0)
    margin = np.abs(disc) > 1e-3  # pixels grazing the silhouette are not decided by numpy's cos
    assert np.array_equal(pano.mask[margin], expected[margin])
    assert np.all(pano.depth[~pano.mask] == 0) and np.all(pano.normals[~pano.mask] == 0)
    ground = ~sphere_hit & expected
    np.testing.assert_allclose(pano.depth[ground], t_ground[ground], rtol=1e-6)
    assert np.all(pano.normals[ground] == np.array([0, 1, 0], np.float32))


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_generated_scene_outputs(kind):
    for seed in range(4):
        p = render_scene(seed, height=16, kind=kind)
        assert isinstance(p, SyntheticPanorama) and p.kind == kind and p.seed == seed
        assert p.rgb.shape == (16, 32, 3) and p.rgb.dtype == np.uint8
        assert p.depth.shape == (16, 32) and p.depth.dtype == np.float32
        assert p.normals.shape == (16, 32, 3) and p.normals.dtype == np.float32
        assert p.mask.dtype == bool
        assert p.max_depth == (15.0 if kind == "indoor" else 75.0)
        valid = p.depth[p.mask]
        assert valid.min() > 0.25, "camera too close to (or inside) an object"
        assert valid.max() <= p.max_depth
        np.testing.assert_allclose(np.linalg.norm(p.normals[p.mask], axis=-1), 1.0, atol=1e-5)
        rays = np.moveaxis(world_rays(16), 0, -1)
        assert np.all((p.normals * rays).sum(-1)[p.mask] <= 1e-6), "normals must face the camera"
        if kind == "indoor":
            assert p.mask.all(), "a closed room has no invalid pixel"
        else:
            assert not p.mask[0].any() and p.mask[-1].all(), "sky at the top, ground at the bottom"


def test_indoor_cameras_in_free_space():
    for seed in range(12):
        scene = make_scene(seed, "indoor")
        cam = np.array(scene.camera)
        room = scene.objects[0]
        assert np.all(cam > np.array(room.lo)) and np.all(cam < np.array(room.hi))
        for obj in scene.objects[1:]:
            if isinstance(obj, Box):
                inside = np.all(cam > np.array(obj.lo)) and np.all(cam < np.array(obj.hi))
            elif isinstance(obj, Sphere):
                inside = np.linalg.norm(cam - np.array(obj.center)) < obj.radius
            else:
                inside = (cam[0] - obj.cx) ** 2 + (cam[2] - obj.cz) ** 2 < obj.radius**2 and obj.y0 < cam[1] < obj.y1
            assert not inside


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_depth_to_normals_agrees_with_rendered_normals(kind):
    geometry = pytest.importorskip("pager.geometry")
    depth_to_normals = geometry.depth_to_normals
    h = 64
    errors = []
    for seed in (0, 1):
        p = render_scene(seed, height=h, kind=kind)
        d = torch.from_numpy(p.depth.astype(np.float64))[None, None]
        m = torch.from_numpy(p.mask)[None, None]
        n = depth_to_normals(d, m)[0].numpy()  # [3, H, W]
        # away from depth edges: the pixel and its 8 neighbours valid, relative depth jump < 5 %
        pad_d = np.pad(p.depth, 1, mode="edge")
        pad_m = np.pad(p.mask, 1, mode="constant")
        pad_d[1:-1, 0], pad_d[1:-1, -1] = p.depth[:, -1], p.depth[:, 0]  # longitude wraps around
        pad_m[1:-1, 0], pad_m[1:-1, -1] = p.mask[:, -1], p.mask[:, 0]
        keep = p.mask.copy()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                nd = pad_d[1 + di : 1 + di + h, 1 + dj : 1 + dj + 2 * h]
                nm = pad_m[1 + di : 1 + di + h, 1 + dj : 1 + dj + 2 * h]
                keep &= nm & (np.abs(nd - p.depth) < 0.05 * np.maximum(p.depth, 1e-6))
        keep[[0, -1]] = False
        cos = np.clip((n * np.moveaxis(p.normals, -1, 0)).sum(0), -1, 1)
        errors.append(np.degrees(np.arccos(cos[keep])))
    err = np.concatenate(errors)
    assert err.size > 1000
    assert np.median(err) < 2.0
    assert np.percentile(err, 90) < 2.0  # planes are exact, curved surfaces nearly so


def test_same_seed_is_bit_identical_and_seeds_differ():
    a = render_scene(5, height=16)
    b = render_scene(5, height=16)
    for f in ("rgb", "depth", "normals", "mask"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
    c = render_scene(6, height=16, kind=a.kind)
    assert not np.array_equal(a.depth, c.depth) and not np.array_equal(a.rgb, c.rgb)
    v1 = render_scene(5, height=16, view=1)
    assert v1.kind == a.kind and not np.array_equal(a.depth, v1.depth)


def test_golden_digest():
    """Pixels are a pure function of the seed on every machine: change GENERATOR_VERSION (writer.py) and
    this digest only when the generator changes on purpose."""
    h = hashlib.sha256()
    for seed, kind in ((0, "indoor"), (0, "outdoor")):
        p = render_scene(seed, height=16, kind=kind, supersample=2)
        for f in ("rgb", "depth", "normals", "mask"):
            h.update(np.ascontiguousarray(getattr(p, f)).tobytes())
    assert h.hexdigest() == GOLDEN


GOLDEN = "24011e44b46e9c2c42434f8d63a57abc3af23004dab74d3ec86c4829c6e9260e"


def test_supersampling_keeps_geometry_and_smooths_rgb():
    a = render_scene(3, height=32, kind="outdoor")
    b = render_scene(3, height=32, kind="outdoor", supersample=2)
    assert np.array_equal(a.depth, b.depth) and np.array_equal(a.mask, b.mask) and np.array_equal(a.normals, b.normals)
    assert not np.array_equal(a.rgb, b.rgb)
    # anti-aliasing lowers the high-frequency energy of the image
    def hf(x):
        x = x.astype(np.float64)
        return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=0)).mean()

    assert hf(b.rgb) < hf(a.rgb)


@pytest.mark.parametrize(
    "kwargs",
    [dict(seed=-1), dict(seed=0, height=1), dict(seed=0, kind="space"), dict(seed=0, supersample=0), dict(seed=1.5)],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        render_scene(**kwargs)


def test_object_windows_never_change_the_image(monkeypatch):
    """Objects are only intersected inside the ERP window of their bounding sphere: a pure speed-up."""
    import pager.data.synthetic.raycast as r

    fast = [render_scene(seed, height=24, kind=kind) for seed in (0, 1) for kind in ("indoor", "outdoor")]
    monkeypatch.setattr(r, "_windows", lambda scene, c, rad, h, w: [(slice(0, h), slice(0, w))])
    slow = [render_scene(seed, height=24, kind=kind) for seed in (0, 1) for kind in ("indoor", "outdoor")]
    for a, b in zip(fast, slow):
        for f in ("rgb", "depth", "normals", "mask"):
            assert np.array_equal(getattr(a, f), getattr(b, f))


def test_row_bands_never_change_the_image(monkeypatch):
    """Rendering in row bands (small temporaries) gives the same bits as one band."""
    import pager.data.synthetic.raycast as r

    one = [render_scene(2, height=20, kind=k, supersample=2) for k in ("indoor", "outdoor")]
    monkeypatch.setattr(r, "BAND_PIXELS", 40 * 4 * 3)  # 3 rows per band: 7 bands, the last one short
    many = [render_scene(2, height=20, kind=k, supersample=2) for k in ("indoor", "outdoor")]
    for a, b in zip(one, many):
        for f in ("rgb", "depth", "normals", "mask"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
