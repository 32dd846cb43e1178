"""Rotary position embedding (RoPE) on sphere coordinates, exactly as the released PaGeR checkpoints use it.

Positions
    A panorama in a network is ``6 * hw * hw`` tokens: faces F, R, B, L, U, D (pytorch360convert's
    ``stack`` order), then rows, then columns. Token ``(f, i, j)`` gets the longitude ``theta`` and
    the latitude ``phi`` (radians) of the cube point of pytorch360convert's face grid
    ``a_k = -1/2 + k/(hw-1)`` (edge to edge), written in pytorch360convert's frame
    (x right, y up, z forward)::

        F(a_j, -a_i, 1/2)   R(1/2, -a_i, -a_j)   B(-a_j, -a_i, -1/2)
        L(-1/2, -a_i, a_j)  U(a_j, 1/2, a_i)     D(a_j, -1/2, -a_i)

        theta = atan2(x, z),  phi = -atan2(y, sqrt(x^2 + z^2))

    so ``phi`` is NEGATIVE at the top (the reference resamples an ERP image whose second channel
    grows downwards). Like that resampling, theta is clamped to ``+-pi*(1 - 1/3840)`` (both sides of the
    back seam map to ``+pi*(1 - 1/3840)``) and phi to ``+-pi/2*(1 - 1/2160)``; for even hw <= 1000 this never
    triggers, for odd hw it sets the back face's centre column. This closed form equals the reference's resampling of its 2160x3840 longitude /
    latitude image with pytorch360convert's ``e2c`` (tested to 1e-5 rad). It is *not* the geometry
    convention of :mod:`pager.geometry` (latitude positive up): it is a frozen table that trained weights
    depend on.

Rotation
    Head dimension ``D``, ``P = D // 2`` rotation pairs: the first ``floor(P/2)`` pairs carry ``theta``, the
    next ``P - floor(P/2)`` carry ``phi``. On an axis with ``n`` pairs, pair ``k`` has the frequency
    ``omega_k = 10000 ** (-2k/n)``. Pairs are interleaved (dims ``2k, 2k+1`` of the axis block) and
    rotated by ``alpha = position * omega_k``::

        y0 = x0 cos(alpha) - x1 sin(alpha)
        y1 = x0 sin(alpha) + x1 cos(alpha)

    An odd last dimension (``D`` odd) passes through unchanged. Angles, cosines and sines are computed in
    float64 and cached in the input's dtype; the rotation itself runs in the input's dtype.
"""

from __future__ import annotations

import math

import torch

from pager.geometry.caching import cached_tensors
from torch import Tensor

__all__ = [
    "ROPE_BASE",
    "sphere_rope_positions",
    "reference_vae_positions",
    "rope_frequencies",
    "rope_cos_sin",
    "apply_sphere_rope",
    "rotate_tokens",
    "hw_from_token_count",
]

ROPE_BASE = 10000.0
_FACES = 6
_REF_ERP_W, _REF_ERP_H = 3840, 2160  # size of the reference's longitude/latitude table


def hw_from_token_count(num_tokens: int, faces: int = _FACES) -> int:
    """Face side ``hw`` (tokens) of a panorama sequence of ``num_tokens = faces * hw * hw`` tokens.

    Raises ``ValueError`` when ``num_tokens`` is not of that form.
    """
    num_tokens = int(num_tokens)
    if num_tokens <= 0 or num_tokens % faces:
        raise ValueError(
            f"sphere RoPE needs a sequence of {faces}*hw*hw panorama tokens, got {num_tokens} tokens "
            f"(not a multiple of {faces})"
        )
    hw = math.isqrt(num_tokens // faces)
    if hw * hw * faces != num_tokens:
        raise ValueError(
            f"sphere RoPE needs a sequence of {faces}*hw*hw panorama tokens (square faces), got {num_tokens} "
            f"tokens = {faces} x {num_tokens // faces}, which is not a square"
        )
    return hw


def _check_hw(hw: int) -> int:
    if isinstance(hw, bool) or not isinstance(hw, int) or hw < 1:
        raise ValueError(f"hw (face side in tokens) must be a positive int, got {hw!r}")
    return hw


@cached_tensors(maxsize=32)
def _positions_f64(hw: int) -> Tensor:
    """(theta, phi) of every token, float64 on CPU, order (face, row, col): [6*hw*hw, 2]."""
    with torch.inference_mode(False), torch.no_grad():
        # pytorch360convert's grid: linspace(-0.5, 0.5, hw) == -1/2 + k/(hw-1) (and [-0.5] when hw == 1).
        # Mirrored coordinates are taken by flipping the grid (as xyzcube does) rather than negating it, so
        # that the degenerate tokens of odd hw (back-face seam, U/D pole) get exactly e2c's values.
        a = torch.linspace(-0.5, 0.5, hw, dtype=torch.float64)
        aj = a.view(1, hw).expand(hw, hw)  # a_j (column)
        ai = a.view(hw, 1).expand(hw, hw)  # a_i (row)
        neg_aj = a.flip(0).view(1, hw).expand(hw, hw)  # "-a_j" = xyzcube's flipped x
        neg_ai = -a.view(hw, 1).expand(hw, hw)  # "-a_i" = xyzcube's y
        pos_ai = -a.flip(0).view(hw, 1).expand(hw, hw)  # "a_i" = xyzcube's flipped y
        half = torch.full((hw, hw), 0.5, dtype=torch.float64)
        # (x right, y up, z forward) of pytorch360convert, faces F, R, B, L, U, D:
        # F(a_j,-a_i,1/2) R(1/2,-a_i,-a_j) B(-a_j,-a_i,-1/2) L(-1/2,-a_i,a_j) U(a_j,1/2,a_i) D(a_j,-1/2,-a_i)
        x = torch.stack([aj, half, neg_aj, -half, aj, aj])
        y = torch.stack([neg_ai, neg_ai, neg_ai, neg_ai, half, -half])
        z = torch.stack([half, neg_aj, -half, aj, pos_ai, neg_ai])
        theta = torch.atan2(x, z)
        phi = -torch.atan2(y, torch.sqrt(x * x + z * z))
        # The reference samples a 3840x2160 table whose outermost pixel centres sit half a pixel inside
        # +-pi and +-pi/2; e2c clamps beyond them (and wraps theta < -lim to the last column, +lim).
        # This only touches the back face's centre column when hw is odd (theta = -pi there).
        lim_theta = math.pi * (1.0 - 1.0 / _REF_ERP_W)
        lim_phi = 0.5 * math.pi * (1.0 - 1.0 / _REF_ERP_H)
        theta = torch.where(theta.abs() > lim_theta, torch.full_like(theta, lim_theta), theta)
        phi = phi.clamp(-lim_phi, lim_phi)
        return torch.stack([theta.reshape(-1), phi.reshape(-1)], dim=-1)


@cached_tensors(maxsize=64)
def _positions_cached(hw: int, device: torch.device, dtype: torch.dtype, token_order: str) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        pos = _positions_f64(hw)
        if token_order == "reference_vae":
            pos = pos[_reference_vae_index(hw)]
        return pos.to(dtype=dtype).to(device)  # cast on the CPU first (MPS has no float64)


def _norm_device(device: torch.device | str | None) -> torch.device:
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def sphere_rope_positions(hw: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sphere positions of the tokens of one panorama, as the released checkpoints were trained with.

    Args:
        hw: face side in tokens (latent face size at that UNet level, e.g. 96/48/24/12 for 768-px faces).
    Returns:
        ``[6*hw*hw, 2]`` = (theta, phi) in radians, tokens in (face F,R,B,L,U,D; row; column) order,
        theta = longitude in (-pi, pi], phi = latitude NEGATIVE at the top. Cached per
        (hw, device, dtype): do not modify the returned tensor in place.
    """
    return _positions_cached(_check_hw(hw), _norm_device(device), dtype, "face_row_col")


def _reference_vae_index(hw: int) -> Tensor:
    # The reference lays the VAE tokens out in (row, col, face) order and rotates sequence slot s with row s
    # of the (face, row, col) position table. Our tokens are (face, row, col); token (f, i, j) sits at slot
    # s = (i*hw + j)*6 + f in the reference's sequence.
    slots = torch.arange(_FACES * hw * hw).view(hw, hw, _FACES)  # [i, j, f] -> slot
    return slots.permute(2, 0, 1).reshape(-1)  # [f, i, j] -> slot


def reference_vae_positions(hw: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Positions that reproduce the reference's VAE RoPE pairing, for tokens in (face, row, col) order.

    The reference's VAE attention sees the tokens in (row, col, face) order but rotates them with the
    (face, row, col) table of :func:`sphere_rope_positions`. Returning, for our token (f, i, j), the table
    row that the reference used at that token's slot ``(i*hw + j)*6 + f`` gives identical attention outputs
    (attention without a mask is equivariant to a joint permutation of queries, keys and values).

    Returns:
        ``[6*hw*hw, 2]`` (theta, phi) in radians, cached; do not modify in place.
    """
    return _positions_cached(_check_hw(hw), _norm_device(device), dtype, "reference_vae")


def rope_frequencies(head_dim: int, dtype: torch.dtype = torch.float64, base: float = ROPE_BASE) -> tuple[Tensor, Tensor]:
    """Per-axis rotation frequencies for a head dimension ``head_dim``.

    Returns:
        ``(omega_theta, omega_phi)``: ``[floor(P/2)]`` and ``[P - floor(P/2)]`` with ``P = head_dim // 2``;
        on an axis with ``n`` pairs ``omega_k = base ** (-2k/n)`` (radians per radian of position).
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2:
        raise ValueError(f"head_dim must be an int >= 2 for RoPE, got {head_dim!r}")
    pairs = head_dim // 2
    n_theta = pairs // 2
    n_phi = pairs - n_theta

    def axis(n: int) -> Tensor:
        k = torch.arange(n, dtype=torch.float64)
        return (base ** (-2.0 * k / max(n, 1))).to(dtype)

    return axis(n_theta), axis(n_phi)


@cached_tensors(maxsize=64)
def _cos_sin_cached(
    hw: int, head_dim: int, device: torch.device, dtype: torch.dtype, token_order: str
) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False), torch.no_grad():
        pos = _positions_f64(hw)
        if token_order == "reference_vae":
            pos = pos[_reference_vae_index(hw)]
        angles = _angles(pos, head_dim)
        return angles.cos().to(dtype=dtype).to(device), angles.sin().to(dtype=dtype).to(device)


def _angles(positions: Tensor, head_dim: int) -> Tensor:
    """[N, P] rotation angles (float64) of positions [N, 2]."""
    w_theta, w_phi = rope_frequencies(head_dim, dtype=torch.float64)
    pos = positions.detach().to(device="cpu", dtype=torch.float64)  # float64 on CPU (MPS has no float64)
    return torch.cat([pos[:, :1] * w_theta, pos[:, 1:2] * w_phi], dim=-1)


def rope_cos_sin(
    hw: int,
    head_dim: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    token_order: str = "face_row_col",
) -> tuple[Tensor, Tensor]:
    """Cached cosine and sine tables ``[6*hw*hw, head_dim // 2]`` of the rotation angles of one panorama.

    ``token_order`` is ``"face_row_col"`` (:func:`sphere_rope_positions`) or ``"reference_vae"``
    (:func:`reference_vae_positions`). Do not modify the returned tensors in place.
    """
    if token_order not in ("face_row_col", "reference_vae"):
        raise ValueError(f"token_order must be 'face_row_col' or 'reference_vae', got {token_order!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2:
        raise ValueError(f"head_dim must be an int >= 2 for RoPE, got {head_dim!r}")
    return _cos_sin_cached(_check_hw(hw), head_dim, _norm_device(device), dtype, token_order)


def rope_tables(hw: int, head_dim: int, device: torch.device, dtype: torch.dtype, token_order: str) -> tuple[Tensor, Tensor]:
    """:func:`rope_cos_sin` (cached), also from ``torch.compile``'d code (looked up outside the graph, never re-traced)."""
    if torch.compiler.is_compiling():
        return _rope_cos_sin_eager(hw, head_dim, device, dtype, token_order)
    return rope_cos_sin(hw, head_dim, device, dtype, token_order)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs of x [..., N, D] by cos/sin [N, P] (P = D // 2), in x's dtype."""
    pairs = cos.shape[-1]
    rot = x[..., : 2 * pairs].unflatten(-1, (pairs, 2))
    x0, x1 = rot[..., 0], rot[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    if x.shape[-1] > 2 * pairs:
        out = torch.cat([out, x[..., 2 * pairs :]], dim=-1)
    return out


_rope_cos_sin_eager = torch.compiler.disable(rope_cos_sin, recursive=True)


@cached_tensors(maxsize=64)
def _rotation_table(hw: int, head_dim: int, device: torch.device, dtype: torch.dtype, token_order: str) -> Tensor:
    """``cos + i sin`` of :func:`rope_cos_sin`: ``[6*hw*hw, head_dim // 2]`` complex (of float32 / float64)."""
    cos, sin = rope_cos_sin(hw, head_dim, device, dtype, token_order)
    return torch.complex(cos, sin)


def rotate_tokens(x: Tensor, hw: int, token_order: str = "face_row_col") -> Tensor:
    """Sphere RoPE of queries or keys ``[..., 6*hw*hw, D]`` of one panorama per batch row (see the module docstring).

    Float32 / float64 on CPU and CUDA: each interleaved pair ``(x0, x1)`` is the complex number ``x0 + i x1``
    multiplied by ``cos(alpha) + i sin(alpha)`` (one kernel, the same products and sums as the formula);
    otherwise (half precision, MPS) the formula's real operations. In ``torch.compile``'d inference this runs
    as one custom operator (``pager::rotate_tokens``, no graph break); compiled with gradients, the formula's
    real operations are traced.
    """
    if torch.compiler.is_compiling() and not (torch.is_grad_enabled() and x.requires_grad):
        return torch.ops.pager.rotate_tokens(x, hw, token_order)
    return _rotate_tokens_eager(x, hw, token_order)


@torch.library.custom_op("pager::rotate_tokens", mutates_args=())
def _rotate_tokens_op(x: Tensor, hw: int, token_order: str) -> Tensor:
    """:func:`rotate_tokens` as a custom operator for compiled inference (a new contiguous tensor)."""
    return _rotate_tokens_eager(x, hw, token_order).contiguous()


@_rotate_tokens_op.register_fake
def _rotate_tokens_fake(x: Tensor, hw: int, token_order: str) -> Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _rotate_tokens_eager(x: Tensor, hw: int, token_order: str) -> Tensor:
    """:func:`rotate_tokens` in eager mode (or traced with gradients, then without the complex kernel)."""
    head_dim = x.shape[-1]
    pairs = head_dim // 2
    complex_ok = (
        x.dtype in (torch.float32, torch.float64)
        and x.device.type in ("cpu", "cuda")
        and head_dim == 2 * pairs
        and not torch.compiler.is_compiling()
        and x.stride(-1) == 1
        and all(st % 2 == 0 for st in x.stride()[:-1])
        and x.storage_offset() % 2 == 0
    )
    if complex_ok:
        table = _rotation_table(hw, head_dim, _norm_device(x.device), x.dtype, token_order)
        z = torch.view_as_complex(x.unflatten(-1, (pairs, 2)))
        return torch.view_as_real(z * table).flatten(-2)
    cos, sin = rope_tables(hw, head_dim, x.device, x.dtype, token_order)
    return _rotate(x, cos, sin)


def apply_sphere_rope(x: Tensor, positions: Tensor | None = None, token_order: str = "face_row_col") -> Tensor:
    """Rotate queries or keys of panorama tokens by their sphere position (see the module docstring).

    Args:
        x: ``[B, heads, N, D]`` (any leading dims; the last two must be tokens and head channels), tokens of
            one panorama per batch row in (face, row, col) order, ``N = 6*hw*hw``.
        positions: ``[N, 2]`` (theta, phi) radians; default: :func:`sphere_rope_positions` of
            ``hw = sqrt(N/6)`` (or :func:`reference_vae_positions` with ``token_order="reference_vae"``).
    Returns:
        Tensor of x's shape and dtype (new tensor; x is not modified).
    Raises:
        ValueError: if ``N`` is not ``6*hw*hw`` (when positions are derived) or positions are not ``[N, 2]``.
    """
    if x.ndim < 2:
        raise ValueError(f"apply_sphere_rope expects x of shape [B, heads, N, D], got {tuple(x.shape)}")
    num_tokens, head_dim = x.shape[-2], x.shape[-1]
    if head_dim < 2:
        raise ValueError(f"head dimension must be >= 2 for RoPE, got {head_dim}")
    if positions is None:
        hw = hw_from_token_count(num_tokens)
        cos, sin = rope_cos_sin(hw, head_dim, x.device, x.dtype, token_order)
    else:
        if positions.shape != (num_tokens, 2):
            raise ValueError(
                f"positions must have shape [N, 2] = [{num_tokens}, 2] for x of shape {tuple(x.shape)}, "
                f"got {tuple(positions.shape)}"
            )
        angles = _angles(positions, head_dim)
        cos = angles.cos().to(dtype=x.dtype).to(x.device)
        sin = angles.sin().to(dtype=x.dtype).to(x.device)
    return _rotate(x, cos, sin)
