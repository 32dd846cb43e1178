"""The embedded default model (pager/weights/default): offline loading, shapes, and real depth skill.

The behavioural check renders procedural panoramas from seeds of the held-out set (``pager synth --seed 900000``,
disjoint from the training seed 1000) and requires the model's depth, aligned with log_shift, to beat the best
constant prediction (also log_shift-aligned) by a clear margin, and its normals to beat a constant normal.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pager.model.loading import DEFAULT_WEIGHTS_DIR

HELDOUT_SEED = 900000  # base seed of the held-out evaluation set (training used 1000)
HEIGHT = 256  # the training resolution (faces of 128 px)
SCENES = [("indoor", 0), ("indoor", 1), ("outdoor", 0), ("outdoor", 1)]


@pytest.fixture(scope="module")
def model():
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from pager.model import Pager

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        yield Pager.from_pretrained("default", device="cpu")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@pytest.fixture(scope="module")
def panoramas():
    from pager.data.synthetic import render_scene
    from pager.data.synthetic.writer import scene_seed

    return [render_scene(scene_seed(HELDOUT_SEED, kind, i), height=HEIGHT, kind=kind) for kind, i in SCENES]


def test_package_is_small_and_safetensors_only():
    files = [f for f in Path(DEFAULT_WEIGHTS_DIR).rglob("*") if f.is_file()]
    assert files, f"no files under {DEFAULT_WEIGHTS_DIR}"
    total = sum(f.stat().st_size for f in files)
    assert total < 25 * 2**20, f"default model is {total / 2**20:.1f} MiB (limit 25)"
    suffixes = {f.suffix for f in files}
    assert not suffixes & {".bin", ".pt", ".pth", ".ckpt", ".pkl"}, suffixes
    for modality in ("depth", "normals"):
        assert (DEFAULT_WEIGHTS_DIR / modality / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_loads_offline_with_both_modalities(model):
    assert set(model.modalities) == {"depth", "normals"}
    assert model.default_face_size % model.face_multiple == 0
    # the architecture of pager.model.default_arch, with its code path (cube padding, panorama layers, RoPE)
    from pager.model.default_arch import DEFAULT_UNET_CHANNELS, DEFAULT_VAE_CHANNELS

    assert tuple(model.vae.config.block_out_channels) == DEFAULT_VAE_CHANNELS
    for unet in model.unets.values():
        assert tuple(unet.config.block_out_channels) == DEFAULT_UNET_CHANNELS
    assert model.cube_padding and model.panorama_layers
    assert all(c.positional_encoding == "RoPE" for c in model.configs.values())


@pytest.fixture(scope="module")
def predictions(model, panoramas):
    """All panoramas predicted in one batch: ``{"depth": [N, H, W], "normals": [N, 3, H, W]}``."""
    rgb = torch.stack([torch.from_numpy(p.rgb).permute(2, 0, 1).float() / 127.5 - 1.0 for p in panoramas])
    with torch.no_grad():
        return model.predict(rgb, modalities=("depth", "normals"))


def test_outputs_have_input_shape_and_are_finite(predictions, panoramas):
    out = {k: v[:1] for k, v in predictions.items()}
    h, w = panoramas[0].depth.shape
    assert out["depth"].shape == (1, h, w)
    assert out["normals"].shape == (1, 3, h, w)
    assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(1, h, w), atol=1e-3)


def test_depth_and_normals_beat_constant_predictions(predictions, panoramas):
    """Held-out scenes (2 indoor, 2 outdoor): every depth map beats the best constant depth (both aligned with
    log_shift, as the evaluation does), and on average by a clear margin; the same for normals against the best
    constant normal (the normalised mean ground-truth normal). A random-weight model of the same architecture
    fails this (its indoor AbsRel is worse than the constant's)."""
    from pager.evaluation.metrics import align_prediction, depth_metrics, normals_metrics

    ours_d, base_d, ours_n, base_n = [], [], [], []
    for i, pano in enumerate(panoramas):
        out = {k: v[i : i + 1] for k, v in predictions.items()}
        gt = torch.from_numpy(pano.depth)[None, None].float()
        mask = torch.from_numpy(pano.mask)[None, None] & (gt > 0)
        pred = align_prediction(out["depth"][:, None], gt, mask, "log_shift")
        const = align_prediction(torch.ones_like(gt), gt, mask, "log_shift")
        ours_d.append(float(depth_metrics(pred, gt, mask)["abs_rel"][0]))
        base_d.append(float(depth_metrics(const, gt, mask)["abs_rel"][0]))
        assert math.isfinite(ours_d[-1])
        assert ours_d[-1] < base_d[-1], f"{pano.kind} {i}: AbsRel {ours_d[-1]:.3f} vs constant {base_d[-1]:.3f}"

        gn = torch.from_numpy(pano.normals).permute(2, 0, 1)[None].float()
        nmask = mask & (gn.norm(dim=1, keepdim=True) > 0.5)
        mean_n = (gn * nmask).sum(dim=(0, 2, 3))
        const_n = (mean_n / mean_n.norm()).view(1, 3, 1, 1).expand_as(gn)
        ours_n.append(float(normals_metrics(out["normals"], gn, nmask)["median"][0]))
        base_n.append(float(normals_metrics(const_n, gn, nmask)["median"][0]))
        assert ours_n[-1] < base_n[-1], f"{pano.kind} {i}: normals {ours_n[-1]:.1f} vs constant {base_n[-1]:.1f} deg"
    assert np.mean(ours_d) < 0.6 * np.mean(base_d), (ours_d, base_d)
    assert np.mean(ours_n) < 0.5 * np.mean(base_n), (ours_n, base_n)
