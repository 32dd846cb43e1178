"""Golden tests: our model on checkpoints in the released layout gives the original implementation's numbers.

``tests/data/reference_fidelity/`` (see its README) holds tiny random checkpoints (two written by the original
code itself), an input panorama, and what the original PaGeR code (prs-eth/PaGeR at af693157, diffusers 0.30.2)
computed from them at every stage, in float32 and float64.

Tolerances come from the numerics, not from one run: a float32 stage may differ from the golden float32 value by
``SAFETY`` times the larger of (a) the reference's own float32 error against its float64 run at that stage (where
the set holds both) and (b) our own float32 error against our float64 run on the same data, measured here. Both
float32 results are within their rounding error of the same float64 truth (the float64 runs agree to 1e-10), so
they can differ by at most about twice the larger error; ``SAFETY = 4`` leaves a factor 2 for rounding that
differs between machines. A mistake in a mechanism changes both of our runs alike (small own error) but moves them
away from the golden values by orders of magnitude more.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path
from typing import Dict

import pytest
import torch
from safetensors.torch import load_file

from pager.geometry.cubemap import erp_to_cubemap
from pager.model import Pager

DATA = Path(__file__).parent / "data" / "reference_fidelity"
CASES = sorted(json.loads((DATA / "cases.json").read_text()))
SAFETY = 4.0
FP64_BOUND = 1e-10  # float64 networks fed the same faces and prompt embedding
EPS32 = torch.finfo(torch.float32).eps


@functools.lru_cache(maxsize=1)
def golden() -> Dict[str, torch.Tensor]:
    return load_file(str(DATA / "reference_outputs.safetensors"))


def _sub(x: torch.Tensor) -> torch.Tensor:
    """The pixel subset of every face that the golden set keeps (both borders and every third row/column)."""
    idx = golden()["meta/face_pixel_index"]
    return x.index_select(-2, idx).index_select(-1, idx)


def _load(case: str) -> Pager:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enable_xformers: true in the YAML falls back to SDPA with a warning
        return Pager.from_pretrained(str(DATA / f"ck_{case}"), device="cpu")


def _record(model: Pager) -> Dict[str, torch.Tensor]:
    """Wrap the model's steps so that a ``predict`` call records faces, latent, UNet output and decoded faces."""
    rec: Dict[str, torch.Tensor] = {}
    encode, decode = model.encode_rgb, model.decode

    def enc(faces):
        rec["faces"] = faces.detach().clone()
        rec["latent"] = encode(faces)
        return rec["latent"]

    def dec(latent):
        rec["decoded"] = decode(latent)
        return rec["decoded"]

    model.encode_rgb, model.decode = enc, dec
    for unet in model.unets.values():
        unet.register_forward_hook(lambda _m, _i, out: rec.__setitem__("unet_v", out[0].detach().clone()))
    return rec


@functools.lru_cache(maxsize=None)
def run_case(case: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Our float32 run on ``input/erp`` (``Pager.predict``) and our float64 run fed the reference's float64 faces,
    empty-prompt embedding and (uv case) uv channels; every stage of both."""
    g = golden()
    model = _load(case)
    modality = model.modalities[0]
    rec32 = _record(model)
    out32 = model.predict(g["input/erp"], face_size=64)
    ours32 = {k: v.detach() for k, v in rec32.items()}
    ours32["erp"] = out32

    model64 = _load(case).to(torch.float64)
    model64.empty_prompt_embedding = g["empty_encoding/fp64"].clone()
    if f"{case}/fp32/pe_cubemap" in g:  # the reference computes its uv channels in float32, also in its fp64 run
        model64._uv_cache[(8, "cpu", torch.float64)] = g[f"{case}/fp32/pe_cubemap"].double()
    rec64 = _record(model64)
    with torch.no_grad():
        model64.decode(model64.predict_latent(modality, model64.encode_rgb(g["input/faces_fp64"])))
    ours64 = {k: v.detach() for k, v in rec64.items()}
    ours64["faces"] = erp_to_cubemap(g["input/erp"].double(), 64)[0]  # our own ERP->cube in float64
    return {"ours32": ours32, "ours64": ours64, "modality": modality, "model": model}


def _cube(decoded: torch.Tensor, modality: str) -> torch.Tensor:
    """The reference's ``cube_out``: decoded faces, depth as the mean of the 3 channels."""
    return decoded.mean(dim=1, keepdim=True) if modality == "depth" else decoded


def _check(stage: str, ours32: torch.Tensor, ours64: torch.Tensor, ref32: torch.Tensor, ref64=None) -> None:
    ours32, ours64, ref32 = ours32.double(), ours64.double(), ref32.double()
    own = (ours32 - ours64).abs().max().item()
    theirs = (ref32 - ref64).abs().max().item() if ref64 is not None else 0.0
    floor = EPS32 * ref32.abs().max().item()
    tol = SAFETY * max(own, theirs, floor)
    err = (ours32 - ref32).abs().max().item()
    assert err <= tol, (f"{stage}: max |ours - golden| = {err:.3g} > {tol:.3g} (SAFETY x max(own fp32 error {own:.3g}, "
                        f"reference fp32 error {theirs:.3g}, eps32 {floor:.3g}))")


def test_golden_set_is_complete():
    """Every case of cases.json has a checkpoint and every stage the tests compare."""
    g = golden()
    for case in CASES:
        assert (DATA / f"ck_{case}" / "config.yaml").is_file()
        assert (DATA / f"ck_{case}" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        for key in ("fp32/latent", "fp32/unet_v", "fp32/cube_out_subsampled", "fp64/unet_v", "fp64/decoded_subsampled"):
            assert f"{case}/{key}" in g
    assert len(CASES) == 8


@pytest.mark.parametrize("case", CASES)
def test_float32_stages_match_reference(case):
    """Loaded with ``Pager.from_pretrained`` and run on ``input/erp``: faces, latent, UNet output and decoded
    faces equal the reference's float32 run within float32 rounding."""
    g = golden()
    r = run_case(case)
    o32, o64, modality = r["ours32"], r["ours64"], r["modality"]
    faces_ref64 = g["input/faces_fp64"]
    # our float64 ERP->cube of the float32-rounded input vs the reference's float64 faces of the unrounded input:
    # bilinear weights are convex, so they differ by at most the input rounding (half an ulp of 1).
    assert (o64["faces"] - faces_ref64).abs().max().item() <= 2.0 ** -24
    _check("faces", o32["faces"][None].flatten(0, 1), o64["faces"], faces_ref64.float(), faces_ref64)
    _check("latent", o32["latent"], o64["latent"], g[f"{case}/fp32/latent"])
    _check("unet_v", o32["unet_v"], o64["unet_v"], g[f"{case}/fp32/unet_v"], g[f"{case}/fp64/unet_v"])
    cube32, cube64 = _sub(_cube(o32["decoded"], modality)), _sub(_cube(o64["decoded"], modality))
    ref_cube64 = _cube(g[f"{case}/fp64/decoded_subsampled"], modality)
    _check("cube_out", cube32, cube64, g[f"{case}/fp32/cube_out_subsampled"], ref_cube64)
    _check("empty_encoding", r["model"].empty_prompt_embedding, g["empty_encoding/fp64"], g["empty_encoding/fp32"],
           g["empty_encoding/fp64"])
    if f"{case}/fp32/pe_cubemap" in g:  # the uv channels fed to the UNet
        pe = r["model"].uv_encoding(8, torch.device("cpu"), torch.float32)
        assert (pe - g[f"{case}/fp32/pe_cubemap"]).abs().max().item() <= 4 * EPS32


@pytest.mark.parametrize("case", CASES)
def test_float64_network_matches_reference(case):
    """Fed the reference's float64 faces and empty-prompt embedding, our float64 UNet output and decoded faces
    agree with the reference's float64 run to 1e-10."""
    g = golden()
    o64 = run_case(case)["ours64"]
    err_v = (o64["unet_v"] - g[f"{case}/fp64/unet_v"]).abs().max().item()
    err_d = (_sub(o64["decoded"]) - g[f"{case}/fp64/decoded_subsampled"]).abs().max().item()
    assert err_v <= FP64_BOUND, f"{case}: UNet output differs by {err_v:.3g}"
    assert err_d <= FP64_BOUND, f"{case}: decoded faces differ by {err_d:.3g}"


def test_reference_written_checkpoints_load_with_their_yaml():
    """The checkpoints written by the original code load with its YAML layout (``modality: normal``, boolean
    ``vae_use_RoPE``, ``enable_xformers: true``) and keep the reference's meaning of each key."""
    normals = run_case("ref_written_normals")["model"]
    depth = run_case("ref_written_depth")["model"]
    assert normals.modalities == ("normals",) and depth.modalities == ("depth",)
    for model in (normals, depth):
        cfg = next(iter(model.configs.values()))
        assert cfg.vae_use_RoPE is True and model.vae_rope is False  # boolean true: VAE RoPE stays off there
        assert cfg.positional_encoding == "RoPE"
    assert run_case("depth_rope_vaeRoPE")["model"].vae_rope is True
    assert math.isclose(depth.configs["depth"].min_depth, 0.01) and math.isclose(depth.configs["depth"].max_depth, 75.0)
