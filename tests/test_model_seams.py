"""Seams: with cube padding a tiny random model has no face borders; with zero padding it has.

A spatially uniform panorama is the one input whose ideal prediction is known exactly for ANY weights:
every pixel sees the same neighbourhood, so a fully cube-padded network (VAE + UNet, panorama-wide
norms and attention) must return a uniform prediction, and in ERP the jumps across face borders must be
no larger than those inside faces. Zero padding makes every face border visible. Float64 keeps the
GroupNorms (zero variance on a uniform input) from amplifying rounding noise.

(Natural inputs are not a usable oracle for random weights: random 3x3 kernels are not rotation
invariant, so faces seen in different orientations give different textures on either side of a border
even with perfect padding; benchmarks/inference.py --seams prints that measurement.)
"""
from __future__ import annotations

import pytest
import torch

from pager.geometry.cubemap import cubemap_to_erp
from pager.model import Pager, build_tiny_checkpoint

FS, H = 32, 64



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster (and far faster on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("seams")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        yield build_tiny_checkpoint(root / "ck", seed=0)


def face_labels() -> torch.Tensor:
    cube = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(1, 6, 1, FS, FS).contiguous()
    return cubemap_to_erp(cube, H, 2 * H, mode="nearest")[0, 0]


def border_and_inside_jumps(erp: torch.Tensor):
    """Mean |difference| of ERP neighbours across a face border and inside faces."""
    lab = face_labels()
    dh, lh = (erp[:, 1:] - erp[:, :-1]).abs(), lab[:, 1:] != lab[:, :-1]
    dv, lv = (erp[1:] - erp[:-1]).abs(), lab[1:] != lab[:-1]
    assert lh.any() and lv.any()
    return torch.cat([dh[lh], dv[lv]]).mean().item(), torch.cat([dh[~lh], dv[~lv]]).mean().item()


def predict_uniform(checkpoint, cube_padding: bool):
    m = Pager.from_pretrained(str(checkpoint), cube_padding=cube_padding, device="cpu").to(torch.float64)
    faces = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64).view(1, 1, 3, 1, 1).expand(1, 6, 3, FS, FS)
    with torch.no_grad():
        cube = m.forward_faces(faces.contiguous(), "depth").mean(2, keepdim=True)
    return cube, cubemap_to_erp(cube, H, 2 * H)[0, 0]


def test_cube_padded_prediction_has_no_face_borders(checkpoint):
    cube, erp = predict_uniform(checkpoint, cube_padding=True)
    assert float(cube.max() - cube.min()) < 1e-6  # uniform up to rounding, as it must be
    border, inside = border_and_inside_jumps(erp)
    assert border <= 3 * inside + 1e-7

    cube0, erp0 = predict_uniform(checkpoint, cube_padding=False)
    border0, inside0 = border_and_inside_jumps(erp0)
    assert float(cube0.max() - cube0.min()) > 0.1
    assert border0 > 1.5 * inside0  # zero padding: face borders stand out
    assert border0 > 1e4 * max(border, 1e-12)
