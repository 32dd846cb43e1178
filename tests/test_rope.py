"""Sphere RoPE: position table against pytorch360convert's e2c, frequencies, rotation, relative positions."""

from __future__ import annotations

import math

import pytest
import torch

from pager.model.rope import (
    apply_sphere_rope,
    hw_from_token_count,
    reference_vae_positions,
    rope_cos_sin,
    rope_frequencies,
    rotate_tokens,
    sphere_rope_positions,
)

REF_W, REF_H = 3840, 2160


@pytest.fixture(scope="module")
def reference_erp() -> torch.Tensor:
    """The reference's 2-channel (theta, phi) ERP image, float64: theta = pi(2(x+1/2)/W - 1), phi = pi/2(2(y+1/2)/H - 1)."""
    x = torch.arange(REF_W, dtype=torch.float64) + 0.5
    y = torch.arange(REF_H, dtype=torch.float64) + 0.5
    theta = math.pi * (2.0 * x / REF_W - 1.0)
    phi = (math.pi / 2.0) * (2.0 * y / REF_H - 1.0)
    return torch.stack([theta.view(1, REF_W).expand(REF_H, REF_W), phi.view(REF_H, 1).expand(REF_H, REF_W)])


@pytest.mark.parametrize("hw", [8, 12, 16, 24, 32, 48, 64, 96, 1, 7, 9])
def test_positions_equal_e2c_of_reference_erp(reference_erp: torch.Tensor, hw: int) -> None:
    # float64 e2c is exact to ~1e-15 (the channels are linear, bilinear sampling reproduces them); odd hw
    # covers the degenerate tokens (back seam, U/D pole) where e2c clamps.
    from pytorch360convert import e2c

    faces = e2c(reference_erp, face_w=hw, mode="bilinear", cube_format="stack")  # [6, 2, hw, hw]
    expected = faces.permute(0, 2, 3, 1).reshape(-1, 2)  # (face, row, col) order
    pos = sphere_rope_positions(hw, dtype=torch.float64)
    assert pos.shape == (6 * hw * hw, 2) and pos.dtype == torch.float64
    assert (pos - expected).abs().max().item() < 1e-5
    pos32 = sphere_rope_positions(hw)  # default float32 table
    assert pos32.dtype == torch.float32
    assert (pos32.double() - expected).abs().max().item() < 1e-5


def test_positions_hand_computed() -> None:
    # hw = 2: a = (-1/2, 1/2). Front face, row 0, col 0: point (-1/2, 1/2, 1/2) (x right, y up, z forward)
    pos = sphere_rope_positions(2, dtype=torch.float64).view(6, 2, 2, 2)
    assert pos[0, 0, 0, 0].item() == pytest.approx(-math.pi / 4, abs=1e-12)
    assert pos[0, 0, 0, 1].item() == pytest.approx(-math.atan(0.5 / math.sqrt(0.5)), abs=1e-12)  # negative at top
    # Right face (index 1), row 1, col 1: (1/2, -1/2, -1/2) -> theta = atan2(1/2, -1/2) = 3pi/4, phi > 0 (below)
    assert pos[1, 1, 1, 0].item() == pytest.approx(3 * math.pi / 4, abs=1e-12)
    assert pos[1, 1, 1, 1].item() == pytest.approx(math.atan(0.5 / math.sqrt(0.5)), abs=1e-12)
    # Up face (index 4): all four tokens are cube corners above the horizon (phi negative); row 0, col 0 is
    # (-1/2, 1/2, -1/2) -> theta = atan2(-1/2, -1/2) = -3pi/4. Down face: below (phi positive).
    corner = math.atan(0.5 / math.sqrt(0.5))
    assert torch.allclose(pos[4, ..., 1], torch.full((2, 2), -corner, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(pos[5, ..., 1], torch.full((2, 2), corner, dtype=torch.float64), atol=1e-12)
    assert pos[4, 0, 0, 0].item() == pytest.approx(-3 * math.pi / 4, abs=1e-12)


def test_positions_cached_and_validated() -> None:
    assert sphere_rope_positions(8) is sphere_rope_positions(8)
    assert sphere_rope_positions(8, dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="hw"):
        sphere_rope_positions(0)
    assert hw_from_token_count(6 * 24 * 24) == 24
    for bad in (7, 6 * 24 * 24 + 6, 6 * 5):
        with pytest.raises(ValueError, match="6\\*hw\\*hw"):
            hw_from_token_count(bad)


def test_frequencies() -> None:
    w_t, w_p = rope_frequencies(64)
    assert w_t.shape == (16,) and w_p.shape == (16,)
    assert w_t[0].item() == 1.0
    assert w_t[1].item() == pytest.approx(10000 ** (-2 / 16))
    assert w_p[15].item() == pytest.approx(10000 ** (-30 / 16))
    w_t, w_p = rope_frequencies(6)  # P = 3 pairs: 1 for theta, 2 for phi
    assert w_t.tolist() == [1.0] and w_p.tolist() == pytest.approx([1.0, 1e-4])
    w_t, w_p = rope_frequencies(512)  # VAE mid-block attention: 128 + 128 pairs
    assert w_t.shape == (128,) and w_p[64].item() == pytest.approx(10000 ** (-128 / 128))


def test_rotation_by_hand() -> None:
    # D = 4: pair 0 (dims 0, 1) carries theta, pair 1 (dims 2, 3) carries phi, both with omega 1
    a, b = 0.3, -1.1
    pos = torch.tensor([[a, b]] * 6, dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).expand(1, 1, 6, 4)
    y = apply_sphere_rope(x, pos)[0, 0, 0]
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    expected = [1 * ca - 2 * sa, 1 * sa + 2 * ca, 3 * cb - 4 * sb, 3 * sb + 4 * cb]
    assert y.tolist() == pytest.approx(expected, abs=1e-12)
    # D = 10 (P = 5: 2 theta pairs, 3 phi pairs), element by element with python loops
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1, 6, 10, generator=g, dtype=torch.float64)
    pos = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = apply_sphere_rope(x, pos)
    for n in range(6):
        for p in range(5):
            axis, k, count = (0, p, 2) if p < 2 else (1, p - 2, 3)
            alpha = pos[n, axis].item() * 10000 ** (-2 * k / count)
            x0, x1 = x[0, 0, n, 2 * p].item(), x[0, 0, n, 2 * p + 1].item()
            assert y[0, 0, n, 2 * p].item() == pytest.approx(x0 * math.cos(alpha) - x1 * math.sin(alpha), abs=1e-12)
            assert y[0, 0, n, 2 * p + 1].item() == pytest.approx(x0 * math.sin(alpha) + x1 * math.cos(alpha), abs=1e-12)
    # odd head dim: last channel passes through
    x5 = torch.arange(5, dtype=torch.float64).expand(1, 1, 6, 5)
    assert apply_sphere_rope(x5, pos)[0, 0, 0, 4].item() == 4.0


def test_rotation_preserves_norms_and_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6 * 4 * 4, 64, generator=g, dtype=torch.float64)
    y = apply_sphere_rope(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    yb = apply_sphere_rope(x.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16
    assert (yb.double() - y).abs().max().item() < 0.05
    with pytest.raises(ValueError, match="6\\*hw\\*hw"):
        apply_sphere_rope(torch.randn(1, 1, 50, 8))
    with pytest.raises(ValueError, match="positions"):
        apply_sphere_rope(torch.randn(1, 1, 6, 8), torch.zeros(5, 2))


def test_dot_product_depends_only_on_position_difference() -> None:
    g = torch.Generator().manual_seed(1)
    n, d = 6, 16
    q = torch.randn(1, 1, n, d, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, n, d, generator=g, dtype=torch.float64)
    pq = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 6
    pk = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 6

    def dots(pos_q: torch.Tensor, pos_k: torch.Tensor) -> torch.Tensor:
        return (apply_sphere_rope(q, pos_q) * apply_sphere_rope(k, pos_k)).sum(-1)

    base = dots(pq, pk)
    delta = torch.tensor([0.7, -1.3], dtype=torch.float64)  # different shift per axis
    assert torch.allclose(dots(pq + delta, pk + delta), base, atol=1e-10)
    # shifting only one axis of both also keeps it; shifting only q does not
    assert torch.allclose(dots(pq + delta * torch.tensor([1.0, 0.0]), pk + delta * torch.tensor([1.0, 0.0])), base, atol=1e-10)
    assert not torch.allclose(dots(pq + delta, pk), base, atol=1e-3)


def test_cos_sin_table_matches_positions() -> None:
    hw, d = 4, 8
    cos, sin = rope_cos_sin(hw, d, dtype=torch.float64)
    pos = sphere_rope_positions(hw, dtype=torch.float64)
    # pairs: 2 for theta (omega 1, 1e-4), 2 for phi (omega 1, 1e-4)
    assert torch.allclose(cos[:, 1], torch.cos(pos[:, 0] * 1e-4), atol=1e-12)
    assert torch.allclose(sin[:, 2], torch.sin(pos[:, 1]), atol=1e-12)


def test_reference_vae_positions_pairing() -> None:
    # The reference's VAE sequence is (row, col, face); slot s is rotated with table row s.
    hw = 3
    table = sphere_rope_positions(hw, dtype=torch.float64)
    ours = reference_vae_positions(hw, dtype=torch.float64).view(6, hw, hw, 2)
    for f in range(6):
        for i in range(hw):
            for j in range(hw):
                slot = (i * hw + j) * 6 + f
                assert torch.equal(ours[f, i, j], table[slot])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("order", ["face_row_col", "reference_vae"])
def test_rotate_tokens_equals_the_rotation_formula(dtype: torch.dtype, order: str) -> None:
    """The attention's fast rotation (complex product for float32/64) gives the formula's values, in every layout.

    Truth: the formula in float64 (``apply_sphere_rope`` on float64 positions); the fast path rounds like the
    formula in ``dtype`` (one product and one sum per output), so it is within a few ulps of the float64 value.
    """
    hw, heads, d = 3, 2, 8
    g = torch.Generator().manual_seed(11)
    base = torch.randn(2, 6 * hw * hw, heads, d, generator=g, dtype=torch.float64)
    positions = sphere_rope_positions if order == "face_row_col" else reference_vae_positions
    truth = apply_sphere_rope(base.transpose(1, 2), positions(hw, dtype=torch.float64))  # [2, heads, N, d]
    eps = torch.finfo(dtype).eps
    layouts = {
        "attention (transposed view)": base.to(dtype).transpose(1, 2),
        "contiguous": base.to(dtype).transpose(1, 2).contiguous(),
        "odd offset (falls back)": torch.cat([torch.zeros(1, dtype=dtype), base.to(dtype).transpose(1, 2).reshape(-1)])[1:]
        .view(2, heads, 6 * hw * hw, d),
    }
    for name, x in layouts.items():
        y = rotate_tokens(x, hw, order)
        assert y.dtype == dtype and y.shape == x.shape and not y.is_complex(), name
        err = (y.double() - truth).abs().max().item()
        assert err <= 8 * eps * truth.abs().max().item(), (name, err)
    x = base.float().transpose(1, 2).requires_grad_()
    rotate_tokens(x, hw, order).square().sum().backward()  # a rotation keeps norms: d|Rx|^2/dx = 2x
    assert torch.allclose(x.grad, 2 * x.detach(), atol=1e-5)
