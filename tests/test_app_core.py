"""The demo's UI-free logic: upload checks and the files a prediction produces (with a stand-in pipeline)."""
import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pager.app.core import DemoPredictor, example_images, load_panorama, png16_scale_for
from pager.export import load_depth_png16, load_npz
from pager.geometry import depth_to_normals, erp_directions
from pager.pipeline import PagerOutput


def _box_depth(h, w):
    r = erp_directions(h, w, dtype=torch.float64).permute(1, 2, 0).numpy()
    with np.errstate(divide="ignore"):
        return np.where(r > 0, np.array([2.0, 1.2, 3.0]) / r, np.array([2.5, 1.5, 2.0]) / -r).min(-1).astype(np.float32)


class BoxRoomPipeline:
    """Stands in for PagerPipeline: predicts the exact box room for any input (metres)."""

    modalities = ("depth", "normals")

    def __init__(self):
        self.calls = []

    def __call__(self, image, modalities=("depth", "normals"), face_size=None, show_progress=True, **kw):
        self.calls.append((image.shape, tuple(modalities)))
        h, w = image.shape[:2]
        depth = _box_depth(h, w)
        normals = depth_to_normals(torch.from_numpy(depth)[None, None])[0].permute(1, 2, 0).numpy()
        mask = np.ones((h, w), bool)
        mask[0] = False  # pretend the top row is invalid
        return PagerOutput(
            depth=depth[None] if "depth" in modalities else None,
            normals=normals[None] if "normals" in modalities else None,
            depth_mask=mask[None], normals_mask=np.ones((1, h, w), bool), mask=mask[None],
            rgb=image[None], metadata=[{"depth_unit": "m", "source": "<array>"}],
        )


def _pano(tmp_path, w=64, h=32, name="pano.png"):
    rng = np.random.default_rng(0)
    path = tmp_path / name
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_load_panorama_accepts_2to1_and_rejects_bad_uploads(tmp_path):
    img = load_panorama(_pano(tmp_path))
    assert img.shape == (32, 64, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError, match="No image"):
        load_panorama(None)
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_panorama(fake)
    with pytest.raises(ValueError, match="not an equirectangular"):
        load_panorama(_pano(tmp_path, 40, 40, "square.png"))
    with pytest.raises(ValueError, match="huge image"):
        load_panorama(_pano(tmp_path, 128, 64, "big.png"), max_megapixels=0.005)
    with pytest.raises(ValueError, match="MB"):
        load_panorama(_pano(tmp_path), max_file_mb=1e-4)
    with pytest.raises(ValueError, match="too small"):
        load_panorama(_pano(tmp_path, 16, 8, "tiny.png"))
    # truncated JPEG: header readable, data not
    good = tmp_path / "cut.jpg"
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(good, quality=95)
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_panorama(good)


def test_bundled_examples_are_panoramas():
    examples = example_images()
    assert len(examples) >= 2
    for p in examples:
        img = load_panorama(p)
        assert img.shape[1] == 2 * img.shape[0]


def test_run_writes_every_output(tmp_path):
    pipe = BoxRoomPipeline()
    pred = DemoPredictor(pipe, output_root=tmp_path / "out", max_height=24)
    steps = []
    res = pred.run(_pano(tmp_path, 96, 48), max_points=1000, progress=lambda f, t: steps.append((f, t)))
    assert pipe.calls == [((24, 48, 3), ("depth", "normals"))]  # downscaled to max_height before predicting
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1][1] == "Done"
    names = [p.name for p in res.files]
    assert names == ["pager_depth_color.png", "pager_depth_16bit.png", "pager_normals.png",
                     "pager_prediction.npz", "pager_pointcloud.glb"]
    assert res.depth_image.shape[0] == 24 and res.depth_image.shape[1] > 48  # colour bar appended
    assert res.normals_image.shape == (24, 48, 3)
    truth = _box_depth(24, 48)
    back = load_depth_png16(res.files[1])
    assert np.isnan(back[0]).all()  # masked row stays invalid
    np.testing.assert_allclose(back[1:], truth[1:], atol=0.5 / 1000 + 1e-6)
    data = load_npz(res.files[3])
    np.testing.assert_array_equal(data["depth"], truth)
    assert data["normals"].shape == (3, 24, 48) and data["rgb"].shape == (24, 48, 3)
    assert json.loads(str(data["metadata"]))["depth_unit"] == "m"
    cloud = trimesh.load(res.point_cloud)
    (pc,) = cloud.geometry.values()
    assert 0 < len(pc.vertices) <= 1000
    assert "metres" in res.message and "points" in res.message


def test_run_choices_are_checked(tmp_path):
    pred = DemoPredictor(BoxRoomPipeline(), output_root=tmp_path / "out")
    pano = _pano(tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        pred.run(pano, modalities=[])
    with pytest.raises(ValueError, match="needs the depth"):
        pred.run(pano, modalities=["normals"], point_cloud=True)
    with pytest.raises(ValueError, match="needs the normals"):
        pred.run(pano, modalities=["depth"], point_cloud=True, color_by="normals")
    only_normals = pred.run(pano, modalities=["normals"], point_cloud=False)
    assert only_normals.depth_image is None and only_normals.point_cloud is None
    assert [p.name for p in only_normals.files] == ["pager_normals.png", "pager_prediction.npz"]


def test_png16_scale_fits_the_range():
    assert png16_scale_for(np.array([1.0, 60.0])) == 1000.0
    assert png16_scale_for(np.array([1.0, 75.0])) == 500.0
    assert png16_scale_for(np.array([1.0, 1000.0, np.nan])) == 50.0


def test_app_cli_defaults_to_localhost_and_fails_cleanly(tmp_path, capsys):
    import argparse

    from pager.app.cli import add_arguments, main

    args = add_arguments(argparse.ArgumentParser()).parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.checkpoint_path is None
    assert main(["--checkpoint_path", str(tmp_path / "no_such_checkpoint"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("app.py: error:") and "no_such_checkpoint" in err
