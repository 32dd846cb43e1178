"""ERP point clouds: analytic box room, frame handedness, flying pixels, sphere-uniform subsampling, GLB/PLY files."""
import io
import math

import numpy as np
import pytest
import torch
import trimesh

from pager.export import PointCloud, erp_point_cloud, erp_rays, flying_pixel_mask, save_point_cloud, sphere_uniform_indices

# box room around the camera: x in [-XN, XP], y in [-YN, YP], z in [-ZN, ZP] (metres)
XN, XP, YN, YP, ZN, ZP = 3.0, 2.0, 1.5, 1.2, 2.5, 4.0


def _rays_from_docstring(h, w):
    """Independent rays from the pager.geometry docstring formula, [H, W, 3] float64."""
    theta = 2 * np.pi * (np.arange(w) + 0.5) / w - np.pi
    phi = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    th, ph = np.meshgrid(theta, phi)
    return np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)], -1)


def _box_depth(h, w):
    r = _rays_from_docstring(h, w)
    upper = np.array([XP, YP, ZP])
    lower = np.array([XN, YN, ZN])
    with np.errstate(divide="ignore"):
        t = np.where(r > 0, upper / r, lower / -r)
    return t.min(-1), r


def _plane_distance(p):
    """Distance of each point [N, 3] to the nearest of the six walls."""
    walls = np.stack([p[:, 0] - XP, p[:, 0] + XN, p[:, 1] - YP, p[:, 1] + YN, p[:, 2] - ZP, p[:, 2] + ZN], 1)
    return np.abs(walls).min(1)


def test_box_room_points_lie_on_walls_and_keep_pixel_colours():
    h, w = 32, 64
    depth, rays = _box_depth(h, w)
    colors = np.zeros((h, w, 3), np.uint8)
    colors[..., 0] = np.arange(h)[:, None]  # encode the pixel in its colour to check correspondence
    colors[..., 1] = np.arange(w)[None, :]
    pc = erp_point_cloud(torch.from_numpy(depth).float(), colors, remove_flying_pixels=False)
    assert len(pc) == h * w and pc.points.dtype == np.float32 and pc.colors.dtype == np.uint8
    assert _plane_distance(pc.points.astype(np.float64)).max() < 1e-4
    i, j = pc.colors[:, 0].astype(int), pc.colors[:, 1].astype(int)
    expected = depth[i, j, None] * rays[i, j]
    np.testing.assert_allclose(pc.points, expected, atol=1e-5)
    # the bounding box of the cloud is the room
    np.testing.assert_allclose(pc.points.min(0), [-XN, -YN, -ZN], atol=0.35)
    np.testing.assert_allclose(pc.points.max(0), [XP, YP, ZP], atol=0.35)


def test_rays_match_docstring_and_geometry_helper():
    ours = erp_rays(8, 16).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, _rays_from_docstring(8, 16), atol=1e-6)
    sphere = pytest.importorskip("pager.geometry.sphere")
    theirs = sphere.erp_directions(8, 16, dtype=torch.float64)
    theirs = theirs.reshape(3, 8, 16).permute(1, 2, 0).numpy() if theirs.shape[-1] != 3 else theirs.reshape(8, 16, 3).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_frame_is_right_handed_and_front_wall_ahead():
    h, w = 32, 64
    depth, _ = _box_depth(h, w)
    pc = erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8), remove_flying_pixels=False)
    p = pc.points.reshape(h, w, 3)
    front = p[h // 2, w // 2]  # image centre: theta ~ 0, phi ~ 0 -> the wall x = +XP
    right = p[h // 2, 3 * w // 4]  # three quarters across: theta ~ +90 deg -> wall z = +ZP
    up = p[0, w // 2]  # top row: ceiling y = +YP
    assert front[0] == pytest.approx(XP, rel=1e-5) and abs(front[1]) < 0.2 and abs(front[2]) < 0.2
    assert right[2] == pytest.approx(ZP, rel=1e-5) and abs(right[0]) < 0.3
    assert up[1] == pytest.approx(YP, rel=1e-5)
    # right-handed: forward x up = right
    f, u, r = (v / np.linalg.norm(v) for v in (front, up, right))
    assert np.dot(np.cross(f, u), r) > 0.95


def test_front_wall_normal_from_geometry_agrees_with_points():
    import pager.geometry as geometry
    h, w = 32, 64
    depth, _ = _box_depth(h, w)
    n = geometry.depth_to_normals(torch.from_numpy(depth).float()[None, None])[0]  # [3, H, W]
    pc = erp_point_cloud(depth, mask=None, normals=n, remove_flying_pixels=False)
    p = pc.points.reshape(h, w, 3)
    nn = pc.normals.reshape(h, w, 3)
    assert p[h // 2, w // 2, 0] > 0
    ref = geometry.depth_to_points(torch.from_numpy(depth).float()[None, None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-5)  # same frame as the geometry helper's points
    np.testing.assert_allclose(nn[h // 2, w // 2], [-1, 0, 0], atol=0.05)  # wall ahead faces the camera
    np.testing.assert_allclose(nn[h // 2, 3 * w // 4], [0, 0, -1], atol=0.05)  # wall on the right
    np.testing.assert_allclose(nn[h - 2, w // 2 + 3], [0, 1, 0], atol=0.05)  # floor


def test_invalid_masked_far_and_nonfinite_pixels_are_dropped():
    h, w = 16, 32
    depth = np.full((h, w), 2.0, np.float32)
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    depth[0, 2] = 0.0
    depth[0, 3] = -1.0
    depth[1, :] = 80.0  # "sky" at the far limit
    mask = np.ones((h, w), bool)
    mask[2, :4] = False
    pc = erp_point_cloud(depth, np.full((h, w, 3), 7, np.uint8), mask=mask, max_depth=75.0, remove_flying_pixels=False)
    assert len(pc) == h * w - 4 - w - 4
    assert np.isfinite(pc.points).all()
    np.testing.assert_allclose(np.linalg.norm(pc.points, axis=1), 2.0, rtol=1e-6)


def _smeared_step(h, near, far, c0, c1, ramp, kind="box"):
    """Object at ``near`` m in columns [c0, c1) in front of a background cylinder at ``far`` m (constant range
    along every ray), its two edges smeared over ``ramp`` pixels (linear in log depth), [h, 2h] float64.
    Also returns each pixel's true depth (the sharp step, the edge at the middle of the ramp)."""
    w = 2 * h
    cols = np.arange(w) + 0.5
    # signed distance (pixels) to the nearer object edge, positive inside the object
    inside = np.minimum(cols - c0, c1 - cols)
    t = np.clip(inside / ramp + 0.5, 0.0, 1.0) if ramp > 0 else (inside > 0).astype(float)
    row = np.exp(np.log(far) + t * (np.log(near) - np.log(far)))
    truth = np.where(inside > 0, near, far)
    return np.tile(row, (h, 1)), np.tile(truth, (h, 1))


@pytest.mark.parametrize("h", [128, 256, 512])
@pytest.mark.parametrize("ramp_at_512", [1, 4, 6])
@pytest.mark.parametrize("near,far", [(2.0, 4.0), (1.5, 9.0), (3.0, 3.9)])
def test_smeared_ramp_is_flagged_where_it_is_off_both_surfaces(h, ramp_at_512, near, far):
    """The docstring's claim: every ramp pixel farther than the tolerance (in inverse depth) from both
    surfaces is flagged, pixels within it of a surface are kept, at any resolution (ramp and window scale
    together, ramp <= window); the flat parts keep all their pixels."""
    ramp = ramp_at_512 * 2 * h / 512
    depth, truth = _smeared_step(h, near, far, 0.3 * 2 * h, 0.6 * 2 * h, ramp)
    fly = flying_pixel_mask(torch.from_numpy(depth)).numpy()
    q = 1.0 / depth
    off_both = (np.abs(q - 1 / near) > 0.1 * q) & (np.abs(q - 1 / far) > 0.1 * q)
    close = (np.abs(q - 1 / near) < 0.09 * q) | (np.abs(q - 1 / far) < 0.09 * q)
    if off_both.any():
        assert fly[off_both].all()
    assert not fly[close].any()
    # in terms of the points: what survives is within ~10 % of the true depth of one side
    kept = ~fly
    rel = np.minimum(np.abs(depth - near) / near, np.abs(depth - far) / far)
    assert rel[kept].max() < 0.12


def test_sharp_step_keeps_both_sides_and_drops_the_mixed_pixel():
    h, w = 128, 256
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, 80:160] = 2.0  # a nearer object
    depth[:, 79] = 3.0  # a mixed (flying) pixel column between background and object
    fly = flying_pixel_mask(torch.from_numpy(depth))
    assert fly[:, 79].all()
    assert not fly[:, [c for c in range(w) if c != 79]].any()  # both sides of the steps lie on their surfaces
    pc = erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8))
    r = np.linalg.norm(pc.points, axis=1)
    assert len(pc) == h * (w - 1)
    assert not np.any(np.isclose(r, 3.0))  # the flying pixels are gone
    assert len(erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8), remove_flying_pixels=False)) == h * w


@pytest.mark.parametrize("size", [16, 32, 128, 512])
def test_planes_and_corners_keep_every_pixel_at_any_resolution(size):
    """The box room: walls, floor and ceiling at every incidence up to grazing, concave corners and the
    poles (the columns continue over them) keep all their pixels."""
    box, _ = _box_depth(size, 2 * size)
    assert not flying_pixel_mask(torch.from_numpy(box)).any()
    assert not flying_pixel_mask(torch.from_numpy(box).float()).any()


def test_convex_box_in_a_room_keeps_its_faces():
    """A box standing in the room, seen by rays: its faces (planes, convex edges) are kept, its silhouette
    steps against the walls keep both sides."""
    h, w = 128, 256
    room, r = _box_depth(h, w)
    lo, hi = np.array([0.8, -1.5, -0.6]), np.array([1.4, 0.2, 0.5])  # a box ahead of the camera
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo / r), (hi / r)
    tmin = np.nanmax(np.minimum(t1, t2), -1)
    tmax = np.nanmin(np.maximum(t1, t2), -1)
    hit = (tmax >= tmin) & (tmin > 0)
    depth = np.where(hit, tmin, room)
    assert hit.sum() > 500
    fly = flying_pixel_mask(torch.from_numpy(depth)).numpy()
    assert fly.sum() == 0


def test_flying_pixels_wrap_around_the_seam_and_masked_neighbours_cannot_vouch():
    h, w = 64, 128
    depth = np.full((h, w), 5.0, np.float32)
    depth[:, :8] = 2.0  # object at the left border; a mixed pixel at the right border
    depth[:, w - 1] = 3.2
    fly = flying_pixel_mask(torch.from_numpy(depth))
    assert fly[:, w - 1].all() and not fly[:, : w - 1].any()
    # a masked (NaN) region is not flagged and does not make its border flying...
    masked = depth.copy()
    masked[:, 40:60] = np.nan
    fly = flying_pixel_mask(torch.from_numpy(masked))
    assert not fly[:, 30:70].any()
    # ...but a mixed pixel between an object and a masked region has no side to vouch for it
    masked[:, 38] = 2.0
    masked[:, 39] = 3.2
    masked[:, 30:38] = 2.0
    fly = flying_pixel_mask(torch.from_numpy(masked))
    assert fly[:, 39].all() and not fly[:, 30:39].any()


def test_flying_pixel_mask_rejects_bad_arguments():
    d = torch.ones(8, 16)
    for kwargs in ({"threshold": 0}, {"tolerance": -1}, {"window_deg": 0}):
        with pytest.raises(ValueError):
            flying_pixel_mask(d, **kwargs)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        flying_pixel_mask(torch.ones(1, 8, 16))


def test_sphere_uniform_subsampling_matches_solid_angle():
    h, w = 180, 360
    depth = np.full((h, w), 3.0, np.float32)
    n = 20000
    pc = erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8), max_points=n, seed=1)
    assert len(pc) == n
    assert len(np.unique(pc.points, axis=0)) == n  # without replacement
    lat = np.arcsin(np.clip(pc.points[:, 1] / 3.0, -1, 1))
    polar = np.mean(np.abs(lat) > math.radians(60))
    assert abs(polar - (1 - math.sin(math.radians(60)))) < 0.01  # 13.4 %, not the 33 % of ERP rows
    # same seed, same cloud; another seed, another one
    again = erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8), max_points=n, seed=1)
    other = erp_point_cloud(depth, np.zeros((h, w, 3), np.uint8), max_points=n, seed=2)
    np.testing.assert_array_equal(pc.points, again.points)
    assert not np.array_equal(pc.points, other.points)


def test_sphere_uniform_indices_large_share_and_caps():
    w = np.array([1.0] * 10 + [0.1] * 90)
    # k = 50 of 100: the heavy units are certain (capped at probability 1), the rest proportional
    counts = np.zeros(100)
    for s in range(300):
        idx = sphere_uniform_indices(w, 50, seed=s)
        assert len(idx) == 50 and len(np.unique(idx)) == 50
        counts[idx] += 1
    assert (counts[:10] == 300).all()
    np.testing.assert_allclose(counts[10:].mean() / 300, 40 / 90, atol=0.02)
    assert len(sphere_uniform_indices(w, 500)) == 100


def test_colors_from_normals_and_float_rgb():
    h, w = 8, 16
    depth = np.full((h, w), 1.0, np.float32)
    normals = np.zeros((3, h, w), np.float32)
    normals[1] = 1.0  # all up
    pc = erp_point_cloud(depth, normals=normals)
    assert (pc.colors == np.array([128, 255, 128], np.uint8)).all()
    np.testing.assert_allclose(pc.normals, np.tile([0, 1, 0], (h * w, 1)))
    rgb = np.full((3, h, w), 0.5, np.float32)  # channels-first float in [0, 1]
    assert (erp_point_cloud(depth, rgb).colors == 128).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        erp_point_cloud(depth, rgb * 2 - 1.5)
    with pytest.raises(ValueError, match="depth"):
        erp_point_cloud(np.ones((2, 3, 4)), rgb)


@pytest.mark.parametrize("fmt", ["glb", "ply"])
def test_written_files_load_back_with_trimesh(tmp_path, fmt):
    rng = np.random.default_rng(0)
    n = 500
    cloud = PointCloud(
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.integers(0, 256, size=(n, 3), dtype=np.uint8),
        None,
    )
    if fmt == "ply":
        nrm = rng.normal(size=(n, 3)).astype(np.float32)
        cloud.normals = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
    path = save_point_cloud(tmp_path / f"scene.{fmt}", cloud)
    loaded = trimesh.load(path)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    assert isinstance(loaded, trimesh.PointCloud)
    assert len(loaded.vertices) == n
    np.testing.assert_allclose(loaded.vertices, cloud.points, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.colors)[:, :3], cloud.colors)
    assert [p.name for p in tmp_path.iterdir()] == [f"scene.{fmt}"]  # atomic: no temp file left
    if fmt == "ply":
        header = path.read_bytes()[:400]
        assert b"binary_little_endian" in header and b"property float nx" in header


def test_save_point_cloud_rejects_bad_format_and_empty(tmp_path):
    cloud = PointCloud(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8))
    with pytest.raises(ValueError, match="unsupported format"):
        save_point_cloud(tmp_path / "a.obj", cloud)
    with pytest.raises(ValueError, match="empty"):
        save_point_cloud(tmp_path / "a.glb", PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)))
    assert not list(tmp_path.iterdir())
