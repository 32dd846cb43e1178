"""Atomic writes, image decoding, and the depth <-> [-1, 1] mapping."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pager.geometry.depth_encoding import affine_normalize_depth, decode_depth, encode_depth
from pager.io_utils import atomic_save, atomic_write, image_to_float, read_image


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.bin"
    atomic_save(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left behind
    with pytest.raises(FileExistsError):
        atomic_save(target, b"new", overwrite=False)


def test_read_image_modes(tmp_path):
    rgb = (np.arange(4 * 8 * 3) % 256).astype(np.uint8).reshape(4, 8, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    depth16 = np.array([[0, 1000], [65535, 7]], dtype=np.uint16)
    Image.fromarray(depth16).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint16 and np.array_equal(out[..., 0], depth16)
    gray = image_to_float(out)
    assert gray.shape == (2, 2, 3) and gray[1, 0, 0] == pytest.approx(1.0)
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_depth_encoding_hand_values():
    # log range 0.01..75 m: the middle of [-1, 1] is the geometric mean sqrt(0.01 * 75).
    mid = decode_depth(torch.tensor([0.0]), 0.01, 75.0, log_scale=True)
    assert mid.item() == pytest.approx(math.sqrt(0.75), rel=1e-5)
    assert encode_depth(torch.tensor([0.01, 75.0, 1000.0]), 0.01, 75.0).tolist() == pytest.approx([-1.0, 1.0, 1.0])
    lin = decode_depth(torch.tensor([-1.0, 0.0, 1.0]), 1.0, 11.0, log_scale=False)
    assert lin.tolist() == pytest.approx([1.0, 6.0, 11.0])
    d = torch.tensor([0.5, 3.0, 20.0])
    assert decode_depth(encode_depth(d, 0.01, 75.0), 0.01, 75.0).tolist() == pytest.approx(d.tolist(), rel=1e-5)
    with pytest.raises(ValueError):
        encode_depth(d, 0.0, 10.0)


def test_affine_normalize_uses_quantiles_of_valid_pixels():
    depth = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[..., 0, :] = False  # the values 0..9 do not count
    out = affine_normalize_depth(depth, mask, 0.0, 1.0)
    assert out[0, 0, 1, 0].item() == pytest.approx(-1.0)
    assert out[0, 0, 9, 9].item() == pytest.approx(1.0)
