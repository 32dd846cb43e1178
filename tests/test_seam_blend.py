"""Seam blending: rotated cube resampling, blend weights, normal rotation, and a model whose faces step."""
import math

import numpy as np
import pytest
import torch

from pager.geometry import cubemap_directions, cubemap_to_erp, erp_directions, erp_to_cubemap
from pager.geometry.augment import rotate_normals_yaw
from pager.geometry.seam_blend import (
    SEAM_BLEND_ROTATION,
    blend_depth,
    blend_masks,
    blend_normals,
    border_coverage,
    erp_seam_weights,
    face_border_distance,
    rotate_vectors,
    rotation_matrix,
    smoothstep,
)
from tests.seam_measures import face_labels, local_border_jump_ratio

F64 = torch.float64


def field(d):
    """A smooth analytic function of the world ray ``d`` ([..., 3, ...] along dim -3)."""
    x, y, z = d.unbind(-3)
    return torch.sin(2 * x + 1) * torch.cos(3 * y) + 0.5 * z + x * z


# ------------------------------------------------------------------------------------------------
# rotations and rotated resampling
# ------------------------------------------------------------------------------------------------
def test_rotation_matrix_is_proper_and_yaw_matches_the_roll_convention():
    for yaw, pitch in ((45, 0), (45, 30), (-120, 80)):
        r = rotation_matrix(yaw, pitch)
        torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-15)
        assert torch.det(r).item() == pytest.approx(1.0, abs=1e-14)
    # yaw moves longitude theta to theta + yaw, as rotate_normals_yaw (and rolling the ERP to the right)
    v = torch.randn(2, 3, 4, 5, dtype=F64)
    torch.testing.assert_close(rotate_vectors(v, rotation_matrix(30.0)), rotate_normals_yaw(v, math.radians(30.0)))
    # pitch tilts forward (+x) up (+y)
    torch.testing.assert_close(rotation_matrix(0, 90) @ torch.tensor([1.0, 0, 0], dtype=F64),
                               torch.tensor([0.0, 1, 0], dtype=F64), rtol=0, atol=1e-15)


def test_rotated_cube_samples_the_world_at_R_d():
    """Face pixel of cube ray d reads the panorama at world direction R d (analytic field, fine ERP)."""
    r = rotation_matrix(45, 30)
    h, fs = 512, 16
    erp = field(erp_directions(h, 2 * h, dtype=F64))[None, None]
    cube = erp_to_cubemap(erp, fs, rotation=r)[0, :, 0]  # [6, F, F]
    d = cubemap_directions(fs, dtype=F64)  # [6, 3, F, F] cube frame
    truth = field(torch.einsum("ij,fjhw->fihw", r, d))
    assert (cube - truth).abs().max() < 2e-3  # bilinear error of the ERP at h = 512


def test_yaw_by_90_degrees_permutes_the_side_faces_exactly():
    """An exact case: the cube turned by 90 deg of yaw has the faces R, B, L, F of the upright cube as its
    F, R, B, L (same pixels), and stitching it back with the rotation gives the upright stitching."""
    r = rotation_matrix(90.0)
    erp = torch.rand(2, 3, 32, 64, dtype=F64)
    up = erp_to_cubemap(erp, 8)
    rot = erp_to_cubemap(erp, 8, rotation=r)
    torch.testing.assert_close(rot[:, :4], up[:, [1, 2, 3, 0]], rtol=0, atol=1e-12)
    cube = torch.rand(2, 6, 1, 8, 8, dtype=F64)
    turned = cube.clone()
    turned[:, :4] = cube[:, [1, 2, 3, 0]]
    turned[:, 4] = torch.rot90(cube[:, 4], -1, (-2, -1))  # U and D turn in their plane
    turned[:, 5] = torch.rot90(cube[:, 5], 1, (-2, -1))
    back = cubemap_to_erp(turned, 16, 32, rotation=r, mode="nearest")
    torch.testing.assert_close(back, cubemap_to_erp(cube, 16, 32, mode="nearest"), rtol=0, atol=0)


def test_rotated_round_trip_is_as_exact_as_the_upright_one():
    r = SEAM_BLEND_ROTATION
    h, fs = 64, 48
    erp = field(erp_directions(h, 2 * h, dtype=F64))[None, None]
    err_up = (cubemap_to_erp(erp_to_cubemap(erp, fs), h, 2 * h) - erp).abs().max()
    err_rot = (cubemap_to_erp(erp_to_cubemap(erp, fs, rotation=r), h, 2 * h, rotation=r) - erp).abs().max()
    assert err_rot < 2 * err_up + 1e-12
    # a cube of constants per face comes back with the same constants on the pixels of that face
    lab = cubemap_to_erp(torch.arange(6.0, dtype=F64).view(1, 6, 1, 1, 1).expand(1, 6, 1, fs, fs).contiguous(),
                         h, 2 * h, rotation=r, mode="nearest")[0, 0]
    d = erp_directions(h, 2 * h, dtype=F64)
    c = torch.einsum("ji,jhw->ihw", r, d)  # R^T d
    axis = c.abs().argmax(0)
    sign = torch.gather(c, 0, axis[None])[0] > 0
    expect = torch.tensor([[2, 0], [5, 4], [3, 1]])[axis, sign.long()]  # -x:B +x:F, -y:D +y:U, -z:L +z:R
    assert (lab == expect).float().mean() > 0.995  # all but rounding ties on the borders


def test_rotation_must_be_a_rotation():
    with pytest.raises(ValueError, match="rotation"):
        erp_to_cubemap(torch.rand(1, 1, 8, 16), 4, rotation=torch.eye(3) * 2)
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        cubemap_to_erp(torch.rand(1, 6, 1, 4, 4), 8, 16, rotation=torch.eye(2))


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------
def test_face_border_distance_by_hand():
    d = torch.tensor([[1.0, 0, 0], [1.0, 0.5, 0], [1.0, 1.0, 0], [0.2, -2.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(face_border_distance(d, dim=-1), torch.tensor([1.0, 0.5, 0.0, 0.5, 0.0], dtype=F64))
    # a rotated cube: its face centre R e_x is at distance 1, its edge point R (1, 1, 0) at 0
    r = rotation_matrix(45, 20)
    pts = torch.stack([r @ torch.tensor([1.0, 0, 0], dtype=F64), r @ torch.tensor([1.0, -1.0, 0], dtype=F64)])
    torch.testing.assert_close(face_border_distance(pts, r, dim=-1), torch.tensor([1.0, 0.0], dtype=F64))
    t = torch.linspace(0, 1, 11, dtype=F64)
    torch.testing.assert_close(smoothstep(t), 3 * t**2 - 2 * t**3)


@pytest.mark.parametrize("rotation", [None, SEAM_BLEND_ROTATION], ids=["upright", "rotated"])
def test_blend_weights_vanish_on_the_face_borders(rotation):
    h, fs = 128, 32
    w = erp_seam_weights(h, 2 * h, rotation, dtype=F64)
    lab = cubemap_to_erp(torch.arange(6.0, dtype=F64).view(1, 6, 1, 1, 1).expand(1, 6, 1, fs, fs).contiguous(),
                         h, 2 * h, rotation=rotation, mode="nearest")[0, 0]
    border = torch.zeros_like(lab, dtype=torch.bool)
    border[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    border[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    border[1:] |= lab[1:] != lab[:-1]
    border[:-1] |= lab[1:] != lab[:-1]
    # a pixel next to a border is at most ~1.5 ERP pixels (~1.5 * 4 / (pi * 2h) face units ...) from it:
    # t <= ~0.06 there, so w = 3t^2 - 2t^3 <= ~0.011; inside faces the weight reaches 1
    assert w[border].max() < 0.02
    assert w.max() > 0.999 and (w >= 0).all()


def test_second_pass_covers_the_first_passes_borders():
    # yaw alone already covers most of the borders; the crossings of the two edge networks cannot be avoided
    p5, mean = border_coverage(SEAM_BLEND_ROTATION, samples=512)
    assert mean > 0.25 and p5 >= 0.0
    assert border_coverage(torch.eye(3, dtype=F64), samples=64) == (0.0, 0.0)  # the same cube covers nothing


# ------------------------------------------------------------------------------------------------
# blending
# ------------------------------------------------------------------------------------------------
def test_blend_of_identical_passes_is_that_pass_and_alignment_removes_a_scale():
    d = torch.rand(2, 16, 32, dtype=F64) + 0.5
    w = torch.stack([erp_seam_weights(16, 32, dtype=F64), erp_seam_weights(16, 32, SEAM_BLEND_ROTATION, dtype=F64)])
    torch.testing.assert_close(blend_depth(torch.stack([d, d]), w), d)
    torch.testing.assert_close(blend_depth(torch.stack([d, 3.0 * d]), w), d)  # relative: scaled back to pass 1
    metric = blend_depth(torch.stack([d, 3.0 * d]), w, align=False)  # metric: not rescaled, a mix of both
    assert (metric > d * 1.01).all() and (metric < 3 * d * 0.99).all()
    # invalid pixels of one pass do not leak into the blend; the mask is the weighted vote
    m = torch.ones(2, 2, 16, 32, dtype=torch.bool)
    m[1, :, :, :5] = False
    bad = torch.stack([d, torch.full_like(d, 1e4)])
    out = blend_depth(bad, w, m, align=False)
    torch.testing.assert_close(out[..., :5], d[..., :5])
    vote = blend_masks(m, w)
    assert torch.equal(vote[..., :5], (w[0] >= w[1])[..., :5].expand(2, -1, -1) | (w[0] + 1e-3 >= w[1] + 1e-3)[..., :5])


def test_normals_of_the_rotated_pass_are_rotated_to_the_world():
    """Each pass sees the world normals in its own cube frame (R^T n); the blend must give the world normals."""
    r = SEAM_BLEND_ROTATION
    h = 16
    n_world = torch.nn.functional.normalize(torch.randn(1, 3, h, 2 * h, dtype=F64), dim=1)
    n_cube = rotate_vectors(n_world, r.T)
    w = torch.stack([erp_seam_weights(h, 2 * h, dtype=F64), erp_seam_weights(h, 2 * h, r, dtype=F64)])
    out = blend_normals(torch.stack([n_world, n_cube]), w, rotations=[None, r])
    torch.testing.assert_close(out, n_world)
    wrong = blend_normals(torch.stack([n_world, n_cube]), w)  # without rotating back
    assert (wrong - n_world).abs().max() > 0.3


# ------------------------------------------------------------------------------------------------
# through Pager.predict with a stand-in network whose faces disagree
# ------------------------------------------------------------------------------------------------
FS, H = 32, 64


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    """A Pager whose "network" returns the input faces' grey value plus a constant offset per face (depth) and
    the inward cube ray (normals, i.e. a sphere around the camera, in the cube's frame)."""
    from pager.model import Pager, build_tiny_checkpoint

    root = tmp_path_factory.mktemp("seamblend")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        dck = build_tiny_checkpoint(root / "d", "depth", face_size=FS)
        nck = build_tiny_checkpoint(root / "n", "normals", face_size=FS, base_dir=root / "d_base")
        model = Pager.from_pretrained({"depth": str(dck), "normals": str(nck)}, device="cpu").to(F64)
    state = {"offsets": torch.zeros(6, dtype=F64), "modality": "depth"}

    def encode_rgb(faces):
        return faces

    def predict_latent(modality, latent):
        state["modality"] = modality
        return latent

    def decode(latent):
        n = latent.shape[0]
        if state["modality"] == "depth":
            grey = latent.mean(1, keepdim=True) + state["offsets"].repeat(n // 6).view(n, 1, 1, 1)
            return grey.expand(-1, 3, -1, -1)
        inward = -cubemap_directions(latent.shape[-1], dtype=latent.dtype).repeat(n // 6, 1, 1, 1)
        if model.configs["normals"].normals_frame == "reference":  # the network's output frame mirrors z
            inward = inward * torch.tensor([1.0, 1.0, -1.0], dtype=inward.dtype).view(1, 3, 1, 1)
        return inward

    model.encode_rgb, model.predict_latent, model.decode = encode_rgb, predict_latent, decode
    return model, state


def _smooth_rgb():
    g = 0.5 * torch.tanh(field(erp_directions(H, 2 * H, dtype=F64)))
    return g[None, None].expand(1, 3, H, 2 * H)


def _border_inside_jumps(log_depth, labels):
    dh, lh = (log_depth[:, 1:] - log_depth[:, :-1]).abs(), labels[:, 1:] != labels[:, :-1]
    dv, lv = (log_depth[1:] - log_depth[:-1]).abs(), labels[1:] != labels[:-1]
    return torch.cat([dh[lh], dv[lv]]), torch.cat([dh[~lh], dv[~lv]])


def test_seam_blend_removes_per_face_steps_and_keeps_smooth_content(fake_model):
    model, state = fake_model
    rgb = _smooth_rgb()
    lab1 = face_labels(FS, H)
    # smooth content: the blend equals the single pass up to the resampling of the second pass
    state["offsets"] = torch.zeros(6, dtype=F64)
    single = model.predict(rgb, face_size=FS)
    blended = model.predict(rgb, face_size=FS, seam_blend=True)
    rel = (blended["depth"] / single["depth"] - 1).abs()
    assert rel.max() < 0.02
    # constant offsets per face: steps of 0.02 .. 0.1 in the [-1, 1] output (6 .. 33 % in depth)
    state["offsets"] = torch.tensor([0.0, 0.1, -0.06, 0.04, -0.05, 0.02], dtype=F64)
    stepped = model.predict(rgb, face_size=FS)["depth"][0].log()
    fixed = model.predict(rgb, face_size=FS, seam_blend=True)
    lab2 = cubemap_to_erp(torch.arange(6.0, dtype=F64).view(1, 6, 1, 1, 1).expand(1, 6, 1, FS, FS).contiguous(),
                          H, 2 * H, rotation=SEAM_BLEND_ROTATION, mode="nearest")[0, 0]
    assert local_border_jump_ratio(stepped, lab1) > 3  # the steps are there without blending
    # with blending a jump across a border of either cube is as large as the jumps just before and after it
    # (the steps became smooth transitions: offsets that disagree between faces have no seamless answer)
    for lab in (lab1, lab2):
        assert local_border_jump_ratio(fixed["depth"][0].log(), lab) < 1.3
    b0, _ = _border_inside_jumps(stepped, lab1)
    b1, _ = _border_inside_jumps(fixed["depth"][0].log(), lab1)
    # a step becomes a transition a few pixels wide (at these 32 px faces), so the jumps across the border
    # lines at least halve (measured: mean 0.39 -> 0.14); the largest stay near the few points where the
    # borders of the two cubes cross
    assert b1.mean() < 0.5 * b0.mean() and b1.quantile(0.9) < 0.5 * b0.quantile(0.9)
    assert fixed["depth_mask"].all() and fixed["depth"].shape == (1, H, 2 * H)


def test_seam_blend_normals_come_back_in_the_world_frame(fake_model):
    model, _ = fake_model
    out = model.predict(_smooth_rgb(), face_size=FS, seam_blend=True, modalities=["normals"])
    truth = -erp_directions(H, 2 * H, dtype=F64)  # the stand-in's sphere, in the world frame
    err = (out["normals"][0] - truth).norm(dim=0)
    assert err.max() < 0.05  # bilinear resampling of a smooth field on 32 px faces
    assert out["normals_mask"].all()


def test_app_passes_the_seam_option_to_the_pipeline(tmp_path):
    from PIL import Image

    from pager.app.core import DemoPredictor
    from pager.pipeline import PagerOutput

    seen = []

    class Recorder:
        modalities = ("depth",)

        def __call__(self, image, modalities=("depth",), face_size=None, show_progress=True, seam_blend=False, **kw):
            seen.append(seam_blend)
            h, w = image.shape[:2]
            return PagerOutput(depth=np.ones((1, h, w), np.float32), depth_mask=np.ones((1, h, w), bool),
                               mask=np.ones((1, h, w), bool), rgb=image[None], metadata=[{"depth_unit": "m"}])

    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "p.png")
    pred = DemoPredictor(Recorder(), output_root=tmp_path / "o")
    res = pred.run(str(tmp_path / "p.png"), modalities=["depth"], point_cloud=False)
    assert "seams blended" not in res.message
    res = pred.run(str(tmp_path / "p.png"), modalities=["depth"], point_cloud=False, seam_blend=True)
    assert seen == [False, True] and "seams blended" in res.message


def test_seam_blend_needs_exact_stitching(fake_model):
    model, _ = fake_model
    with pytest.raises(ValueError, match="seam_blend needs stitching='exact'"):
        model.predict(_smooth_rgb(), face_size=FS, seam_blend=True, stitching="reference")
    with pytest.raises(ValueError, match="needs stitching='exact'"):
        erp_to_cubemap(torch.rand(1, 1, 8, 16), 4, stitching="reference", rotation=SEAM_BLEND_ROTATION)
