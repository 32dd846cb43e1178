"""Pager numerics: the single-step formula, batches of panoramas, dtypes, gradients, normals frame, layers."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from pager.model import Pager, build_tiny_checkpoint


@pytest.fixture(scope="module")
def cks(tmp_path_factory):
    root = tmp_path_factory.mktemp("num")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        base = root / "base"
        out = {
            "depth": build_tiny_checkpoint(root / "depth", seed=0, base_dir=base),
            "normals_ref": build_tiny_checkpoint(root / "nref", modality="normals", positional_encoding="uv", seed=1, base_dir=base),
            "normals_pager": build_tiny_checkpoint(root / "npag", modality="normals", positional_encoding="uv", seed=1,
                                                   base_dir=base, normals_frame="pager"),
        }
        yield out


@pytest.fixture(scope="module")
def model(cks):
    return Pager.from_pretrained({"depth": str(cks["depth"]), "normals": str(cks["normals_ref"])}, device="cpu")


def erp(seed: int, b: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 64, generator=g) * 2 - 1


def test_single_step_formula(model):
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(6, 4, 16, 16, generator=g)
    unet = model.unets["depth"]
    cond = model.empty_prompt_embedding.expand(6, -1, -1)
    with torch.no_grad():
        v = unet(torch.cat([lat, torch.zeros_like(lat)], 1), torch.full((6,), 999), cond).sample
        old = model.alpha_prod
        try:
            model.alpha_prod = 0.36
            z = model.predict_latent("depth", lat)
        finally:
            model.alpha_prod = old
    assert torch.allclose(z, -math.sqrt(1 - 0.36) * v, atol=1e-6)


def test_batch_of_two_equals_two_single_runs(model):
    x = torch.cat([erp(1), erp(2)])
    both = model.predict(x, face_size=32)
    for i in range(2):
        one = model.predict(x[i:i + 1], face_size=32)
        for key in ("depth", "normals"):
            assert torch.allclose(both[key][i], one[key][0], atol=1e-5), key
        assert torch.equal(both["depth_mask"][i], one["depth_mask"][0])


def test_outputs_shapes_units_and_masks(model):
    out = model.predict(erp(3), face_size=32, output_size=(20, 40))
    assert out["depth"].shape == (1, 20, 40) and out["normals"].shape == (1, 3, 20, 40)
    assert out["depth"].min() >= 0.01 - 1e-6 and out["depth"].max() <= 75.0 + 1e-3
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(1, 20, 40), atol=1e-4)
    assert out["depth_mask"].dtype == torch.bool and out["normals_mask"].dtype == torch.bool
    with pytest.raises(ValueError, match="multiple of"):
        model.predict(erp(3), face_size=30)
    with pytest.raises(ValueError, match="not loaded"):
        model.predict(erp(3), modalities=["curvature"])


def test_normals_frame_reference_negates_z(cks):
    x = erp(4)
    ref = Pager.from_pretrained(str(cks["normals_ref"]), device="cpu").predict(x, face_size=32)["normals"]
    ours = Pager.from_pretrained(str(cks["normals_pager"]), device="cpu").predict(x, face_size=32)["normals"]
    assert torch.allclose(ref[:, :2], ours[:, :2], atol=1e-6)
    assert torch.allclose(ref[:, 2], -ours[:, 2], atol=1e-6)


@pytest.mark.parametrize("dtype,used", [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.bfloat16)])
def test_half_precision_cpu_smoke(cks, dtype, used, caplog):
    """Half precision on the CPU runs in bfloat16 (float16 CPU kernels are emulated and very slow: a warning)."""
    import pager.model.pager_model as pm

    pm._CPU_FP16_WARNED = False
    x = erp(5)
    full = Pager.from_pretrained(str(cks["depth"]), device="cpu").predict(x, face_size=32)
    with caplog.at_level("WARNING"):
        half = Pager.from_pretrained(str(cks["depth"]), device="cpu", torch_dtype=dtype)
    assert half.dtype == used and half.unets["depth"].dtype == used
    assert any("float16 is very slow on the CPU" in r.getMessage() for r in caplog.records) == (dtype == torch.float16)
    out = half.predict(x, face_size=32)
    assert out["depth"].dtype == torch.float32 and torch.isfinite(out["depth"]).all()
    assert (out["depth_values"] - full["depth_values"]).abs().mean() < 0.05


def test_forward_faces_trains_unet_not_vae(cks):
    m = Pager.from_pretrained(str(cks["depth"]), device="cpu")
    m.unets["depth"].train()
    g = torch.Generator().manual_seed(6)
    faces = torch.rand(1, 6, 3, 16, 16, generator=g) * 2 - 1
    pred = m.forward_faces(faces, "depth")
    assert pred.shape == (1, 6, 3, 16, 16)
    pred.abs().mean().backward()
    assert all(p.grad is None for p in m.vae.parameters())
    grads = [p.grad for p in m.unets["depth"].parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="B, 6, 3"):
        m.forward_faces(faces[:, :5], "depth")


def test_every_layer_is_cube_padded_and_panorama_wide(model):
    from pager.geometry.cube_padding import CubePadConv2d
    from pager.model.panorama_layers import PanoramaAttnProcessor, PanoramaGroupNorm

    for net in [model.vae, *model.unets.values()]:
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(isinstance(c, CubePadConv2d) for c in convs if c.kernel_size != (1, 1))
        norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and all(isinstance(n, PanoramaGroupNorm) for n in norms)
        procs = list(net.attn_processors.values())
        assert procs and all(isinstance(p, PanoramaAttnProcessor) for p in procs)


def test_enable_xformers_falls_back_to_sdpa(cks):
    from pager.model.pager_model import xformers_available

    if xformers_available():
        pytest.skip("xformers is installed")
    import pager.model.pager_model as pm

    pm._XFORMERS_FALLBACK_WARNED = False
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("pager").addHandler(handler)
    try:
        m = Pager.from_pretrained(str(cks["depth"]), device="cpu", enable_xformers=True)
        m.predict(erp(3), face_size=16)
        Pager.from_pretrained(str(cks["depth"]), device="cpu", enable_xformers=True)
    finally:
        logging.getLogger("pager").removeHandler(handler)
    assert m.attention_backend == "sdpa"
    assert sum("xformers" in r.getMessage() for r in records) == 1  # one warning per process, not one per load
