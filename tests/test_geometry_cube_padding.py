"""Cube padding: analytic fold across all 12 edges, pytorch360convert cross-check, convolutions, models."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pager.geometry import (
    FACE_NAMES,
    CubePadConv2d,
    convert_to_cube_padding,
    cube_pad,
    cube_pad_asymmetric,
    cube_padding_enabled,
)

from tests.geometry_truth import VEC, field




def cell_point(face, r, c, fs):
    """Cube point of the cell centre (r, c) of a face (cells: F x F squares of side 1/F)."""
    n, rv, uv = VEC[face]
    a = -0.5 + (c + 0.5) / fs
    b = 0.5 - (r + 0.5) / fs
    return 0.5 * n + a * rv + b * uv


def folded_point(face, r, c, fs):
    """Position of the padded cell (r, c) (outside the face along one axis) after folding the
    flattened neighbourhood over the cube edge; also returns the face the point lies on."""
    n, rv, uv = VEC[face]
    a = -0.5 + (c + 0.5) / fs
    b = 0.5 - (r + 0.5) / fs
    ae, be = min(max(a, -0.5), 0.5), min(max(b, -0.5), 0.5)
    over = abs(a - ae) + abs(b - be)
    p = 0.5 * n + ae * rv + be * uv - over * n
    out_dir = (a - ae) * rv + (b - be) * uv
    neighbour = next(k for k in FACE_NAMES if torch.allclose(VEC[k][0], out_dir / out_dir.norm()))
    return p, neighbour


def analytic_cube(fs, n=1):
    vals = torch.empty(n * 6, 2, fs, fs, dtype=torch.float64)
    for f, name in enumerate(FACE_NAMES):
        for r in range(fs):
            for c in range(fs):
                vals[f::6, :, r, c] = field(cell_point(name, r, c, fs))
    return vals


@pytest.mark.parametrize("pad", [1, 2])
def test_pad_equals_field_at_folded_positions_all_edges(pad):
    fs = 6
    cube = analytic_cube(fs, n=2)
    out = cube_pad(cube, pad)
    assert out.shape == (12, 2, fs + 2 * pad, fs + 2 * pad)
    assert torch.equal(out[:, :, pad:-pad, pad:-pad], cube)
    pairs = set()
    for f, name in enumerate(FACE_NAMES):
        for rr in range(-pad, fs + pad):
            for cc in range(-pad, fs + pad):
                r_out, c_out = not 0 <= rr < fs, not 0 <= cc < fs
                got = out[f, :, rr + pad, cc + pad]
                if r_out and c_out:  # corner: mean of the padded value above/below and beside
                    pa, _ = folded_point(name, rr, min(max(cc, 0), fs - 1), fs)
                    pb, _ = folded_point(name, min(max(rr, 0), fs - 1), cc, fs)
                    want = 0.5 * (field(pa) + field(pb))
                elif r_out or c_out:
                    p, neighbour = folded_point(name, rr, cc, fs)
                    pairs.add((name, neighbour))
                    want = field(p)
                else:
                    continue
                assert torch.allclose(got, want, atol=1e-12), (name, rr, cc, got, want)
                assert torch.allclose(out[f + 6, :, rr + pad, cc + pad], want, atol=1e-12)  # 2nd panorama
    assert len(pairs) == 24  # 12 edges, walked in both directions


def test_pad1_matches_pytorch360convert():
    p360 = pytest.importorskip("pytorch360convert.pytorch360convert")
    torch.manual_seed(0)
    x = torch.randn(6, 3, 7, 7)
    ref = p360.pad_cube_faces(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # corners left at zero
    ours = cube_pad(x, 1)
    keep = torch.ones(9, 9, dtype=torch.bool)
    keep[0, 0] = keep[0, -1] = keep[-1, 0] = keep[-1, -1] = False
    assert torch.equal(ours[..., keep], ref[..., keep])
    assert torch.allclose(ours[:, :, 0, 0], 0.5 * (ours[:, :, 0, 1] + ours[:, :, 1, 0]))
    assert torch.allclose(ours[:, :, -1, -1], 0.5 * (ours[:, :, -1, -2] + ours[:, :, -2, -1]))


def test_one_sided_pad():
    torch.manual_seed(0)
    x = torch.randn(12, 2, 5, 5)
    full = cube_pad(x, 1)
    one = cube_pad_asymmetric(x, (0, 1, 0, 1))
    assert one.shape == (12, 2, 6, 6)
    assert torch.equal(one[..., :5, :5], x)
    assert torch.equal(one[..., :5, 5], full[..., 1:6, 6])  # right column from the neighbours
    assert torch.equal(one[..., 5, :5], full[..., 6, 1:6])  # bottom row
    assert torch.equal(one[..., 5, 5], full[..., 6, 6])  # corner: same mean
    assert torch.equal(cube_pad(x, sides=(0, 1, 0, 1)), one)


def test_constant_cubemap_conv_stays_constant():
    torch.manual_seed(0)
    x = torch.full((6, 4, 8, 8), 3.0)
    conv = nn.Conv2d(4, 5, 3, padding=1)
    cp = CubePadConv2d.from_conv(conv)
    y = cp(x)
    assert y.shape == (6, 5, 8, 8)
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), atol=1e-5)
    z = conv(x)  # zero padding darkens/brightens the border
    assert not torch.allclose(z, z[:, :, 4:5, 4:5].expand_as(z), atol=1e-3)


def test_cube_pad_conv_shares_parameters_and_matches_manual():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    cp = CubePadConv2d.from_conv(conv)
    assert cp.weight is conv.weight and cp.bias is conv.bias
    x = torch.randn(6, 3, 8, 8)
    want = F.conv2d(cube_pad(x, 1), conv.weight, conv.bias, stride=2)
    assert torch.allclose(cp(x), want)
    with pytest.raises(ValueError, match="multiple of 6"):
        cp(torch.randn(4, 3, 8, 8))


def tiny_unet():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    )


def tiny_vae():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(16, 32), latent_channels=4,
        norm_num_groups=8, layers_per_block=1,
    )


@pytest.mark.parametrize("make", [tiny_unet, tiny_vae])
def test_convert_diffusers_models(make):
    torch.manual_seed(0)
    model = make().eval()
    before = model.state_dict()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert not cube_padding_enabled(model)
    out = convert_to_cube_padding(model)
    assert out is model and cube_padding_enabled(model)
    after = model.state_dict()
    assert list(before) == list(after)
    assert all(before[k].data_ptr() == after[k].data_ptr() for k in before)
    n_converted = 0
    for name, m in model.named_modules():
        if name in convs:
            orig = convs[name]
            if isinstance(m, CubePadConv2d):
                n_converted += 1
                assert m.weight is orig.weight
            else:
                assert m is orig and orig.padding == (0, 0)  # 1x1 convs untouched
    assert n_converted > 0
    # idempotent
    mods = list(model.modules())
    convert_to_cube_padding(model)
    assert all(a is b for a, b in zip(mods, model.modules()))
    with torch.no_grad():
        if make is tiny_vae:
            x = torch.randn(6, 3, 16, 16)
            y = model(x).sample
            assert y.shape == x.shape and torch.isfinite(y).all()
            # Downsample2D(padding=0) uses one-sided cube padding instead of its zero pad
            ds = model.encoder.down_blocks[0].downsamplers[0]
            assert ds.conv.cube_sides == (0, 1, 0, 1) and ds.conv.input_zero_pad == (0, 1, 0, 1)
            h = torch.randn(6, 16, 8, 8)
            want = F.conv2d(cube_pad_asymmetric(h, (0, 1, 0, 1)), ds.conv.weight, ds.conv.bias, stride=2)
            assert torch.allclose(ds(h), want, atol=1e-6)
        else:
            y = model(torch.randn(6, 4, 8, 8), 999, torch.randn(6, 2, 16)).sample
            assert y.shape == (6, 4, 8, 8) and torch.isfinite(y).all()


def test_convert_handles_aliases_and_bare_conv():
    class Down(nn.Module):  # mimics Downsample2D(name="conv"): two attribute names, one module
        def __init__(self):
            super().__init__()
            conv = nn.Conv2d(2, 2, 3, padding=1)
            self.Conv2d_0 = conv
            self.conv = conv

    m = Down()
    convert_to_cube_padding(m)
    assert isinstance(m.conv, CubePadConv2d) and m.conv is m.Conv2d_0
    bare = nn.Conv2d(2, 2, 3, padding=1)
    assert isinstance(convert_to_cube_padding(bare), CubePadConv2d)
    one = nn.Conv2d(2, 2, 1)
    assert convert_to_cube_padding(one) is one


def test_dtypes_and_grad():
    for dt in (torch.float16, torch.bfloat16):
        y = cube_pad(torch.randn(6, 2, 4, 4).to(dt), 1)
        assert y.dtype == dt and torch.isfinite(y.float()).all()
    x = torch.randn(6, 2, 4, 4, requires_grad=True)
    cube_pad(x, 2).sum().backward()
    # every pixel is used once inside plus as a copy in the neighbours' pads (> 1 near edges)
    assert x.grad.min() >= 1 and x.grad.max() > 1


def test_bad_input():
    with pytest.raises(ValueError):
        cube_pad(torch.randn(5, 2, 4, 4), 1)
    with pytest.raises(ValueError):
        cube_pad(torch.randn(6, 2, 4, 5), 1)
    with pytest.raises(ValueError):
        cube_pad(torch.randn(6, 2, 4, 4), 5)


def test_both_gather_strategies_agree(monkeypatch):
    import pager.geometry.cube_padding as cp

    torch.manual_seed(0)
    x = torch.randn(12, 3, 9, 9, requires_grad=True)
    small = cp.cube_pad(x, sides=(1, 2, 0, 1))
    g_small = torch.autograd.grad(small.square().sum(), x)[0]
    cp._pad_index.cache_clear()
    monkeypatch.setattr(cp, "_FULL_GATHER_MAX_FACE", 0)  # force the interior-copy + border-gather path
    try:
        large = cp.cube_pad(x, sides=(1, 2, 0, 1))
        g_large = torch.autograd.grad(large.square().sum(), x)[0]
    finally:
        cp._pad_index.cache_clear()
    assert torch.equal(small, large) and torch.allclose(g_small, g_large)


@pytest.mark.parametrize("full_gather_max", [32, 0])  # both strategies: whole-tensor gather, interior copy + border
@pytest.mark.parametrize("mode", ["reference", "geometric"])
@pytest.mark.parametrize("sides", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 2, 2, 2), (1, 2, 0, 1)])
def test_channels_last_padding_equals_contiguous(monkeypatch, full_gather_max, mode, sides):
    """channels_last input (the fast path) pads to exactly the same values, stays channels_last, same gradients."""
    import pager.geometry.cube_padding as cp

    monkeypatch.setattr(cp, "_FULL_GATHER_MAX_FACE", full_gather_max)
    cp._pad_index.cache_clear()
    try:
        x = torch.randn(12, 5, 7, 7, generator=torch.Generator().manual_seed(1), requires_grad=True)
        xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        ref = cp.cube_pad(x, sides=sides, mode=mode)
        out = cp.cube_pad(xc, sides=sides, mode=mode)
        assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, ref)
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
        assert torch.equal(torch.autograd.grad((out * g).sum(), xc)[0], torch.autograd.grad((ref * g).sum(), x)[0])
    finally:
        cp._pad_index.cache_clear()
