"""``torch.compile`` of the networks (issue 17, ``--compile``): one graph per network, eager numerics.

Cube padding, panorama-wide GroupNorm and sphere RoPE are custom operators in compiled code
(``pager::cube_pad``, ``pager::panorama_group_norm``, ``pager::rotate_tokens``). Without them every padding
was a graph break whose resumed frame was re-compiled per layer shape until dynamo's recompile limit, after
which the rest ran eagerly (a tiny model took 738 s to compile on 2 CPU cores, 270 s with the operators).
The tests trace with the ``aot_eager`` backend (dynamo + AOT autograd + fake tensors, no code generation):
graph breaks, recompilations and fake implementations whose shapes or strides differ from the real
kernels' all show there, in seconds.
"""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import pager.geometry.cube_padding  # noqa: F401  (registers pager::cube_pad)
import pager.model.panorama_layers  # noqa: F401  (registers pager::panorama_group_norm)
import pager.model.rope  # noqa: F401  (registers pager::rotate_tokens)
from pager.geometry.cube_padding import cube_pad
from pager.model import Pager, build_tiny_checkpoint
from pager.model.panorama_layers import panorama_group_norm
from pager.model.rope import rotate_tokens

OPCHECKS = ("test_schema", "test_faketensor")


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


CUBE_PAD_CASES = [
    ("contiguous fp32, 1 px", _rand(12, 3, 8, 8), [1, 1, 1, 1], "geometric"),
    ("channels_last, downsample sides", _rand(6, 5, 8, 8).to(memory_format=torch.channels_last), [0, 1, 0, 1], "reference"),
    ("bf16, large face (border gather path)", _rand(6, 2, 40, 40, dtype=torch.bfloat16), [2, 2, 2, 2], "geometric"),
]


@pytest.mark.parametrize("name,x,sides,mode", CUBE_PAD_CASES, ids=[c[0] for c in CUBE_PAD_CASES])
def test_cube_pad_operator(name, x, sides, mode):
    """The operator equals cube_pad; its fake implementation has the real output's shape, strides and dtype."""
    out = torch.ops.pager.cube_pad(x, sides, mode)
    ref = cube_pad(x, pad=None, sides=sides, mode=mode)
    assert torch.equal(out, ref) and out.stride() == ref.stride()
    torch.library.opcheck(torch.ops.pager.cube_pad.default, (x, sides, mode), test_utils=OPCHECKS)


GROUP_NORM_CASES = [
    ("4-D contiguous", _rand(12, 8, 6, 6), True),
    ("4-D channels_last", _rand(6, 8, 6, 6).to(memory_format=torch.channels_last), True),
    ("3-D tokens, no affine", _rand(6, 8, 20), False),
    ("bf16", _rand(6, 8, 6, 6, dtype=torch.bfloat16), True),
]


@pytest.mark.parametrize("name,x,affine", GROUP_NORM_CASES, ids=[c[0] for c in GROUP_NORM_CASES])
def test_panorama_group_norm_operator(name, x, affine):
    c = x.shape[1]
    weight = _rand(c, seed=1).to(x.dtype) if affine else None
    bias = _rand(c, seed=2).to(x.dtype) if affine else None
    args = (x, 4, weight, bias, 1e-5, 6)
    out = torch.ops.pager.panorama_group_norm(*args)
    ref = panorama_group_norm(*args)
    assert torch.equal(out, ref)
    torch.library.opcheck(torch.ops.pager.panorama_group_norm.default, args, test_utils=OPCHECKS)


ROTATE_CASES = [
    ("contiguous fp32", _rand(2, 3, 6 * 4 * 4, 8)),
    ("heads transposed (non-contiguous)", _rand(2, 6 * 4 * 4, 3, 8).transpose(1, 2)),
    ("bf16", _rand(1, 2, 6 * 2 * 2, 6, dtype=torch.bfloat16)),
]


@pytest.mark.parametrize("name,x", ROTATE_CASES, ids=[c[0] for c in ROTATE_CASES])
@pytest.mark.parametrize("order", ["face_row_col", "reference_vae"])
def test_rotate_tokens_operator(name, x, order):
    hw = int(round((x.shape[-2] / 6) ** 0.5))
    out = torch.ops.pager.rotate_tokens(x, hw, order)
    assert torch.equal(out, rotate_tokens(x, hw, order))
    torch.library.opcheck(torch.ops.pager.rotate_tokens.default, (x, hw, order), test_utils=OPCHECKS)


def test_compiled_pager_is_one_graph_per_network_and_predicts_as_eager(tmp_path, monkeypatch):
    """Pager.optimize(compile=True): no graph break, no recompilation on a second panorama of the same size, and
    the prediction of the eager model up to float32 rounding (both lie within rounding of the float64 model, so
    they differ by at most about twice that error; factor 4 for kernels that round differently). Sphere RoPE
    in the UNet and (reference token order) in the VAE mid-block; the ``eager`` backend (dynamo's tracing with
    fake tensors, no code generation: about 20 s here); the operators' channels_last and half-precision paths
    are checked above."""
    monkeypatch.setenv("PAGER_CACHE_DIR", str(tmp_path / "cache"))
    ck = str(build_tiny_checkpoint(tmp_path / "depth", seed=0, vae_use_RoPE="RoPE"))
    torch._dynamo.reset()
    counters.clear()
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = Pager.from_pretrained(ck, device="cpu").predict(x, face_size=16)
    ref64 = Pager.from_pretrained(ck, device="cpu").to(torch.float64).predict(x.double(), face_size=16)
    model = Pager.from_pretrained(ck, device="cpu").optimize(compile=True, compile_backend="eager")
    assert model.compiled
    out = model.predict(x, face_size=16)
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    graphs = counters["stats"]["unique_graphs"]
    # encoder, decoder, UNet (the RoPE VAE's mid-block attention inside the encoder / decoder graph)
    assert graphs == 3, dict(counters["stats"])
    for key in ("depth_values",):
        own = (ref[key].double() - ref64[key]).abs().max().item()
        diff = (out[key] - ref[key]).abs().max().item()
        assert diff <= 4 * max(own, torch.finfo(torch.float32).eps), (key, diff, own)
    again = model.predict(x.flip(-1), face_size=16)  # another panorama of the same size: no new graph
    assert counters["stats"]["unique_graphs"] == graphs
    assert torch.isfinite(again["depth_values"]).all()
    torch._dynamo.reset()
