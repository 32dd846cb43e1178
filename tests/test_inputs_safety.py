"""Inputs are validated, never silently altered, and file-system problems are one line naming the file.

- NaN/inf pixels are refused by name for every kind of input (file, numpy array, tensor, PIL image);
- float images (float TIFF, OpenEXR) with values outside [0, 1] are refused by name, or normalised linearly
  with ``normalize_input`` / ``--normalize_input`` and a warning -- never clipped;
- ``.exr`` decodes (OpenEXR package), values untouched;
- decompression bombs (PIL's limit) are refused by name, large images under twice the limit are decoded with a
  warning naming the file;
- over-long names, unwritable folders, corrupt safetensors: one line naming the file and the problem, no
  traceback, found before the model loads (full disks: test_outputs_safety.py).
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pager.io_utils import image_to_float, read_image
from pager.pipeline import load_rgb


def _float_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.float32), mode="F").save(path)
    return path


def _nan_inputs(tmp_path):
    a = np.random.default_rng(0).random((8, 16, 3)).astype(np.float32)
    a[2, 3, 1] = np.nan
    b = a.copy()
    b[2, 3, 1] = np.inf
    grey = a[:, :, 0].copy()
    grey[5, 7] = np.nan
    return {
        "numpy NaN": a,
        "numpy inf": b,
        "tensor NaN": torch.from_numpy(a).permute(2, 0, 1),
        "float TIFF file NaN": _float_tiff(tmp_path / "nan.tif", grey),
        "PIL float image inf": Image.fromarray(np.where(np.isnan(grey), np.inf, grey).astype(np.float32), mode="F"),
    }


@pytest.mark.parametrize("kind", ["numpy NaN", "numpy inf", "tensor NaN", "float TIFF file NaN", "PIL float image inf"])
def test_non_finite_pixels_are_refused_by_name(tmp_path, kind):
    item = _nan_inputs(tmp_path)[kind]
    with pytest.raises(ValueError, match=r"my-input: 1 NaN/inf pixel value\(s\)"):
        load_rgb(item, "my-input")
    with pytest.raises(ValueError, match="NaN/inf"):  # explicit normalisation does not hide them either
        load_rgb(item, "my-input", normalize=True)


@pytest.mark.parametrize("kind", ["float TIFF", "numpy float", "tensor float", "int32 array"])
def test_out_of_range_values_are_refused_or_normalised_explicitly(tmp_path, caplog, kind):
    rng = np.random.default_rng(1)
    grey = (rng.random((8, 16)) * 1000.0).astype(np.float32)
    grey[0, 0], grey[0, 1] = 0.0, 1000.0  # range exactly [0, 1000]
    item = {
        "float TIFF": _float_tiff(tmp_path / "hdr.tif", grey),
        "numpy float": np.repeat(grey[:, :, None], 3, axis=2),
        "tensor float": torch.from_numpy(grey)[None].repeat(3, 1, 1),
        "int32 array": np.rint(grey * 100).astype(np.int32),  # beyond 16 bits
    }[kind]
    with pytest.raises(ValueError, match=r"my-input: pixel values span \[0, (1000|100000)\]") as info:
        load_rgb(item, "my-input")
    assert "--normalize_input" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="pager.io_utils"):
        rgb = load_rgb(item, "my-input", normalize=True)
    assert any("my-input" in r.getMessage() and "normalised" in r.getMessage() for r in caplog.records)
    top = 100000.0 if kind == "int32 array" else 1000.0
    expected = np.rint(grey * 100) / top if kind == "int32 array" else grey / top
    np.testing.assert_allclose(rgb[:, :, 0], expected, rtol=1e-6, atol=1e-7)  # linear, nothing clipped
    assert rgb.max() == 1.0 and rgb.min() == 0.0


def test_in_range_float_and_integer_images_are_unchanged(tmp_path):
    grey = np.linspace(0, 1, 8 * 16, dtype=np.float32).reshape(8, 16)
    np.testing.assert_array_equal(load_rgb(_float_tiff(tmp_path / "ok.tif", grey), "ok")[:, :, 1], grey)
    ints = np.arange(8 * 16, dtype=np.int64).reshape(8, 16) * 2  # up to 254: 8-bit values
    np.testing.assert_allclose(image_to_float(ints)[:, :, 2], ints / 255.0, rtol=1e-6)


def test_exr_is_decoded_with_its_values(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    rng = np.random.default_rng(2)
    rgb = rng.random((8, 16, 3)).astype(np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": rgb}) as exr:
        exr.write(str(tmp_path / "pano.exr"))
    np.testing.assert_array_equal(read_image(tmp_path / "pano.exr"), rgb)
    np.testing.assert_array_equal(load_rgb(tmp_path / "pano.exr", "pano.exr"), rgb)
    with OpenEXR.File(header, {"RGB": rgb * 40.0}) as exr:  # an HDR panorama
        exr.write(str(tmp_path / "hdr.exr"))
    with pytest.raises(ValueError, match="hdr.exr: pixel values span"):
        load_rgb(tmp_path / "hdr.exr", str(tmp_path / "hdr.exr"))
    np.testing.assert_allclose(load_rgb(tmp_path / "hdr.exr", "hdr", normalize=True), rgb * 40.0 / (rgb.max() * 40.0),
                               rtol=1e-6)
    (tmp_path / "bad.exr").write_bytes(b"\x76\x2f\x31\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="bad.exr"):
        read_image(tmp_path / "bad.exr")


def test_decompression_bombs_are_refused_by_name(tmp_path, monkeypatch, caplog):
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own check, with a small limit
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "bomb.png")  # 2048 > 2 x 1000 pixels
    with pytest.raises(ValueError, match="bomb.png.*decompression"):
        read_image(tmp_path / "bomb.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "big.png")  # 1200: over the limit, under 2x
    with caplog.at_level(logging.WARNING, logger="pager.io_utils"):
        assert read_image(tmp_path / "big.png").shape == (30, 40, 3)
    assert any("big.png" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------------
# the command line: one line naming the file, before the model is loaded
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pager.model import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("inputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        ck = build_tiny_checkpoint(root / "tiny-depth", seed=0, base_dir=root / "base", face_size=16, max_depth=20.0)
    img = root / "pano.png"
    Image.fromarray((np.random.default_rng(0).random((16, 32, 3)) * 255).astype(np.uint8)).save(img)
    return {"root": root, "ckpt": ck, "img": img}


def _pager(argv):
    from pager.cli.main import main

    return main(argv)


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


def _one_line(err):
    """The stderr of a failed command: one line (besides progress bars), no traceback."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_bad_images_stop_predict_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    grey = np.full((16, 32), 500.0, np.float32)
    bad = {"hdr.tif": lambda p: _float_tiff(p, grey),
           "nan.tif": lambda p: _float_tiff(p, np.where(np.eye(16, 32) > 0, np.nan, 0.5)),
           "broken.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n truncated")}
    monkeypatch.setattr("pager.pipeline.PagerPipeline.from_pretrained", _no_model)
    for name, make in bad.items():
        make(tmp_path / name)
        rc = _pager(["predict", str(tiny["img"]), str(tmp_path / name), "--out", str(tmp_path / "out"),
                     "--checkpoint_path", str(tiny["ckpt"]), "--no_progress"])
        err = _one_line(capsys.readouterr().err)
        assert rc == 2 and name in err
    import PIL.Image

    with monkeypatch.context() as m:  # a decompression bomb (PIL's own check, with a small limit)
        m.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
        rc = _pager(["predict", str(tiny["img"]), "--out", str(tmp_path / "out"), "--checkpoint_path",
                     str(tiny["ckpt"]), "--no_progress"])
        err = _one_line(capsys.readouterr().err)
        assert rc == 2 and str(tiny["img"]) in err and "decompression" in err
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert _pager(["predict", str(tmp_path / "hdr.tif"), "--out", str(tmp_path / "out"), "--normalize_input",
                   "--checkpoint_path", str(tiny["ckpt"]), "--no_progress"]) == 0


def _predict_argv(tiny, out):
    return ["predict", str(tiny["img"]), "--out", str(out), "--checkpoint_path", str(tiny["ckpt"]), "--no_progress"]


def _pointcloud_argv(tiny, out):
    return ["pointcloud", str(tiny["img"]), "--out", str(out / "pano.ply"), "--checkpoint_path", str(tiny["ckpt"])]


def test_file_system_problems_are_found_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pager.pipeline.PagerPipeline.from_pretrained", _no_model)
    long_input = tmp_path / ("p" * 245 + ".png")  # fits, but <stem>_depth16.png does not
    Image.open(tiny["img"]).save(long_input)
    assert _pager(["predict", str(long_input), "--out", str(tmp_path / "o"), "--checkpoint_path",
                   str(tiny["ckpt"])]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "too long" in err and "p" * 245 + "_depth" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert _pager(_predict_argv(tiny, blocker / "sub")) == 2
    assert str(blocker) in _one_line(capsys.readouterr().err)
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(os, "open", refusing_open)
    for argv in (_predict_argv(tiny, tmp_path / "locked" / "o"), _pointcloud_argv(tiny, tmp_path / "locked")):
        assert _pager(argv) == 2
        err = _one_line(capsys.readouterr().err)
        assert "Permission denied" in err and "locked" in err


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_corrupt_safetensors_is_one_line_naming_the_file(tiny, tmp_path, capsys, part):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny["ckpt"], ck)
    base = tmp_path / "base"
    shutil.copytree(tiny["root"] / "base", base)
    cfg = (ck / "config.yaml").read_text()
    (ck / "config.yaml").write_text(cfg.replace(str(tiny["root"] / "base"), str(base)))
    weights = (ck / "unet" if part == "unet" else base / "vae") / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    assert _pager(["predict", str(tiny["img"]), "--out", str(tmp_path / "o"), "--checkpoint_path", str(ck)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(weights) in err and "truncated or corrupt" in err


def _exif_jpeg(path, orientation):
    from PIL import Image

    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = 200  # left half bright: a rotation would move it
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=100)
    return rgb


@pytest.mark.parametrize("entry", ["read_image", "pipeline", "dataset", "video_frames"])
def test_exif_orientation_is_not_applied_but_named(tmp_path, caplog, entry):
    """A JPEG with EXIF Orientation 6 is read as stored (16x8 stays 16 wide) by every reader, and a warning names
    the file and the ignored tag; Orientation 1 warns about nothing."""
    import logging

    path = tmp_path / "pano.jpg"
    truth = _exif_jpeg(path, 6)

    def read(p):
        if entry == "read_image":
            from pager.io_utils import read_image

            return read_image(p)
        if entry == "pipeline":
            from pager.pipeline import load_rgb

            return np.rint(load_rgb(p, str(p)) * 255).astype(np.uint8)
        if entry == "dataset":
            from pager.data import build_dataset

            x = build_dataset("Images", tmp_path, "test")[0]["rgb"].numpy()
            return np.rint((x.transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
        from pager.video.io import open_source

        return next(iter(open_source(tmp_path).frames()))[2]

    with caplog.at_level(logging.WARNING):
        got = read(path)
    assert got.shape[:2] == (8, 16) and np.abs(got[..., :3].astype(int) - truth).max() <= 8  # JPEG rounding
    assert any("EXIF orientation 6" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read(path)  # the same file again (pager predict reads it before loading the model and when predicting)
    assert not [r for r in caplog.records if "EXIF" in r.getMessage()]
    _exif_jpeg(path, 1)
    with caplog.at_level(logging.WARNING):
        read(path)
    assert not [r for r in caplog.records if "EXIF" in r.getMessage()]


@pytest.mark.parametrize("entry", ["pipeline", "dataset"])
def test_tiny_and_non_2to1_images_same_rule_everywhere(tmp_path, caplog, entry):
    """``pager predict`` (the pipeline) and ``inference.py`` (a dataset's RGB-only samples) apply one rule: an
    image under 2x2 pixels is refused saying the minimum, a non-2:1 one is read stretched with a warning naming it."""
    import logging

    from PIL import Image

    def read(p):
        if entry == "pipeline":
            from pager.pipeline import load_rgb

            return load_rgb(p, str(p))
        from pager.data import build_dataset

        return build_dataset("Images", p.parent, "test")[0]["rgb"]

    one = tmp_path / "one" / "one.png"
    one.parent.mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(one)
    with pytest.raises(ValueError, match=r"one\.png.*1x1 is too small \(at least 2x2 pixels\)"):
        read(one)
    square = tmp_path / "sq" / "square.png"
    square.parent.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(square)
    if entry == "dataset":
        with caplog.at_level(logging.WARNING):
            assert tuple(read(square).shape) == (3, 6, 12)
        assert any("square.png: 6x6 is not a 2:1" in r.getMessage() for r in caplog.records)
    else:
        assert read(square).shape == (6, 6, 3)  # the pipeline warns when it predicts (tests/test_pipeline_inputs.py)
