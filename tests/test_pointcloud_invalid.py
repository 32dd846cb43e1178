"""Invalid pixels (sky, saturated depth, degenerate normals) stay out of point clouds unless asked for, in
every command that writes one: ``pager pointcloud IMAGE``, ``generate_point_cloud.py --depth_path`` and the app."""
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pager.app.core import DemoPredictor
from pager.cli import pointcloud as pc_cli
from pager.geometry import depth_to_normals, erp_directions
from pager.pipeline import PagerOutput

H, W = 32, 64
SKY_ROWS = 6  # "sky": saturated at the far end of the range, marked invalid in the depth mask
BAD_NORMAL_COLS = slice(10, 14)  # degenerate normals, marked invalid in the normals mask
FAR = 75.0


def _prediction():
    """Box-room depth with a saturated sky band, and its masks; normals ``[H, W, 3]``."""
    r = erp_directions(H, W, dtype=torch.float64).permute(1, 2, 0).numpy()
    with np.errstate(divide="ignore"):
        depth = np.where(r > 0, np.array([2.0, 1.2, 3.0]) / r, np.array([2.5, 1.5, 2.0]) / -r).min(-1)
    depth[:SKY_ROWS] = FAR
    depth = depth.astype(np.float32)
    depth_mask = np.ones((H, W), bool)
    depth_mask[:SKY_ROWS] = False
    normals_mask = np.ones((H, W), bool)
    normals_mask[:, BAD_NORMAL_COLS] = False
    normals = depth_to_normals(torch.from_numpy(depth)[None, None])[0].permute(1, 2, 0).numpy()
    return depth, depth_mask, normals, normals_mask


class StandInPipeline:
    """Returns :func:`_prediction` for any input, like ``PagerPipeline`` would."""

    modalities = ("depth", "normals")

    def __call__(self, image, modalities=("depth", "normals"), face_size=None, output_height=None, show_progress=True, **kw):
        depth, dm, normals, nm = _prediction()
        rgb = np.asarray(Image.open(image).convert("RGB")) if isinstance(image, str) else image
        return PagerOutput(depth=depth[None], normals=normals[None], depth_mask=dm[None], normals_mask=nm[None],
                           mask=(dm & nm)[None], rgb=rgb[None], metadata=[{"depth_unit": "m"}])


def _coded_rgb():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 4 * np.arange(H)[:, None]
    rgb[..., 1] = 2 * np.arange(W)[None, :]
    return rgb


def _pixels_of(path):
    """(row, column) of every point of a written cloud, from its coded colour."""
    loaded = trimesh.load(path)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    c = np.asarray(loaded.colors)[:, :3].astype(int)
    return c[:, 0] // 4, c[:, 1] // 2


def _image_mode(tmp_path, monkeypatch, keep):
    from pager.pipeline import PagerPipeline

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: StandInPipeline()))
    Image.fromarray(_coded_rgb()).save(tmp_path / "pano.png")
    out = tmp_path / "cloud.glb"
    args = [str(tmp_path / "pano.png"), "--out", str(out), "--keep_flying_pixels"] + (["--keep_invalid"] if keep else [])
    assert pc_cli.main(args) == 0
    return out


def _saved_mode(tmp_path, monkeypatch, keep):
    depth, dm, normals, nm = _prediction()
    (tmp_path / "d" / "eval").mkdir(parents=True)
    (tmp_path / "n" / "eval").mkdir(parents=True)
    np.savez(tmp_path / "d" / "eval" / "s.npz", depth, mask=dm, rgb=_coded_rgb())  # as inference.py writes them
    np.savez(tmp_path / "n" / "eval" / "s.npz", np.moveaxis(normals, -1, 0), mask=nm)
    args = ["--depth_path", str(tmp_path / "d"), "--normals_path", str(tmp_path / "n"), "--out", str(tmp_path / "o"),
            "--keep_flying_pixels"] + (["--keep_invalid"] if keep else [])
    assert pc_cli.main(args) == 0
    return tmp_path / "o" / "s.glb"


def _app(tmp_path, monkeypatch, keep):
    from pager.export import pointcloud as export_pc

    real = export_pc.erp_point_cloud
    monkeypatch.setattr("pager.export.erp_point_cloud",
                        lambda *a, **k: real(*a, **{**k, "remove_flying_pixels": False}))
    Image.fromarray(_coded_rgb()).save(tmp_path / "pano.png")
    res = DemoPredictor(StandInPipeline(), output_root=tmp_path / "app").run(
        str(tmp_path / "pano.png"), max_points=10**6, keep_invalid=keep)
    # the depth view shows the invalid pixels grey
    assert (res.depth_image[:SKY_ROWS, :W] == 128).all()
    assert not (res.depth_image[SKY_ROWS:, :W] == 128).all(-1).any()
    assert "invalid" in res.message
    return res.point_cloud


@pytest.mark.parametrize("entry", [_image_mode, _saved_mode, _app], ids=["pager-pointcloud-image", "saved-predictions", "app"])
def test_invalid_pixels_are_left_out_unless_kept(entry, tmp_path, monkeypatch):
    _, dm, _, nm = _prediction()
    (tmp_path / "default").mkdir()
    (tmp_path / "keep").mkdir()
    rows, cols = _pixels_of(entry(tmp_path / "default", monkeypatch, keep=False))
    valid = dm & nm
    assert valid[rows, cols].all()  # no invalid pixel became a point...
    assert len(rows) == valid.sum()  # ...and every valid one did
    rows, cols = _pixels_of(entry(tmp_path / "keep", monkeypatch, keep=True))
    assert len(rows) == H * W  # --keep_invalid: the sky dome and the bad-normal pixels are back
    assert (~dm[rows, cols]).sum() == SKY_ROWS * W


def test_saved_predictions_without_mask_warn(tmp_path, caplog, capsys):
    depth, *_ = _prediction()
    (tmp_path / "eval").mkdir()
    np.savez(tmp_path / "eval" / "s.npz", depth, rgb=_coded_rgb())  # e.g. the reference's own inference output
    assert pc_cli.main(["--depth_path", str(tmp_path), "--out", str(tmp_path / "o"), "--keep_flying_pixels"]) == 0
    assert "no validity 'mask'" in caplog.text
    rows, _ = _pixels_of(tmp_path / "o" / "s.glb")
    assert len(rows) == H * W
    np.savez(tmp_path / "eval" / "s.npz", depth, rgb=_coded_rgb(), mask=np.ones((3, 3), bool))
    capsys.readouterr()
    assert pc_cli.main(["--depth_path", str(tmp_path), "--out", str(tmp_path / "o2")]) == 1  # wrong mask size:
    assert "'mask' must have 32x64 pixels" in capsys.readouterr().err  # reported by name, not used
    assert not (tmp_path / "o2" / "s.glb").exists()
