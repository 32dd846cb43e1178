"""PagerPipeline: every accepted input kind gives the same prediction for the same pixels; bad inputs fail clearly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pager.model import build_tiny_checkpoint
from pager.pipeline import PagerOutput, PagerPipeline


FS = 16


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        base = root / "base"
        d = build_tiny_checkpoint(root / "d", seed=0, base_dir=base)
        n = build_tiny_checkpoint(root / "n", modality="normals", seed=1, base_dir=base, normals_frame="pager")
        yield PagerPipeline.from_pretrained({"depth": str(d), "normals": str(n)}, device="cpu")


@pytest.fixture(scope="module")
def rgb8():
    return (np.random.default_rng(0).random((16, 32, 3)) * 255).astype(np.uint8)


def run(pipe, images, **kw):
    kw.setdefault("face_size", FS)
    kw.setdefault("show_progress", False)
    return pipe(images, **kw)


def test_all_input_kinds_agree(pipe, rgb8, tmp_path):
    Image.fromarray(rgb8).save(tmp_path / "a.png")
    inputs = [
        Image.fromarray(rgb8),
        rgb8,
        rgb8.astype(np.uint16) * 257,
        rgb8.astype(np.float32) / 255.0,
        torch.from_numpy(rgb8).permute(2, 0, 1).float() / 255.0,
        torch.from_numpy(rgb8).permute(2, 0, 1).contiguous(),
        str(tmp_path / "a.png"),
        tmp_path / "a.png",
    ]
    out = run(pipe, inputs)
    assert isinstance(out, PagerOutput) and len(out) == len(inputs)
    assert out.depth.shape == (len(inputs), 16, 32) and out.normals.shape == (len(inputs), 16, 32, 3)
    assert out.mask.shape == (len(inputs), 16, 32) and out.rgb.dtype == np.uint8
    for k in range(1, len(inputs)):
        assert np.allclose(out.depth[k], out.depth[0], rtol=1e-4, atol=1e-5), k
        assert np.allclose(out.normals[k], out.normals[0], atol=1e-4), k
    assert np.array_equal(out.rgb[0], rgb8)
    assert np.allclose(np.linalg.norm(out.normals, axis=-1), 1.0, atol=1e-4)
    assert np.array_equal(out.mask, out.depth_mask & out.normals_mask)
    assert out.metadata[6]["source"].endswith("a.png") and out.metadata[0]["depth_unit"] == "relative"


def test_grayscale_rgba_and_16bit_files(pipe, rgb8, tmp_path):
    grey8 = rgb8[:, :, 0]
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    rgba = np.concatenate([rgb8, np.full((16, 32, 1), 7, np.uint8)], axis=2)
    out = run(pipe, [np.repeat(grey8[:, :, None], 3, 2), Image.fromarray(grey8), str(tmp_path / "g16.png"),
                     rgb8, Image.fromarray(rgba)], modalities=["depth"])
    assert out.normals is None and out.normals_mask is None
    assert np.allclose(out.depth[1], out.depth[0], atol=1e-5)
    assert np.allclose(out.depth[2], out.depth[0], atol=1e-4)  # 16-bit grey file == same grey
    assert np.array_equal(out.depth[4], out.depth[3])  # alpha dropped


def test_batching_and_sizes(pipe, rgb8):
    rng = np.random.default_rng(1)
    other = (rng.random((16, 32, 3)) * 255).astype(np.uint8)
    one = [run(pipe, im).depth[0] for im in (rgb8, other)]
    two = run(pipe, [rgb8, other], batch_size=2).depth
    assert np.allclose(two[0], one[0], atol=1e-5) and np.allclose(two[1], one[1], atol=1e-5)
    wide = (rng.random((10, 40, 3)) * 255).astype(np.uint8)
    with pytest.warns(UserWarning, match="not a 2:1"):
        mixed = run(pipe, [rgb8, wide], batch_size=2)
    assert isinstance(mixed.depth, list) and mixed.depth[1].shape == (10, 40) and mixed.normals[1].shape == (10, 40, 3)
    up = run(pipe, rgb8, output_height=24)
    assert up.depth.shape == (1, 24, 48) and up.rgb.shape == (1, 24, 48, 3)


def test_folder_and_modalities(pipe, rgb8, tmp_path):
    for name in ("b.png", "a.jpg"):
        Image.fromarray(rgb8).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    out = run(pipe, tmp_path, modalities="normals")
    assert [m["source"].split("/")[-1] for m in out.metadata] == ["a.jpg", "b.png"]
    assert out.depth is None and out.normals.shape == (2, 16, 32, 3)
    with pytest.raises(ValueError, match="unknown modality"):
        run(pipe, rgb8, modalities=["height"])


def test_bad_inputs_name_the_culprit(pipe, rgb8, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        run(pipe, [rgb8, bad])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        run(pipe, tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(pipe, rgb8.astype(np.float32))  # float arrays must be in [0, 1]
    with pytest.raises(ValueError, match="unsupported image type"):
        run(pipe, {"not": "an image"})
    with pytest.raises(ValueError, match="channels-last"):
        run(pipe, np.zeros((3, 16, 32), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(pipe, rgb8)  # a proper 2:1 panorama raises no warning
