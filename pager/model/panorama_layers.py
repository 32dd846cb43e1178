"""Panorama-wide layers: the six cube faces of a panorama behave as ONE sample in VAE and UNet.

Inside the networks a batch is ``[B*6, C, H, W]``: panorama ``b`` owns rows ``6b .. 6b+5`` (faces F, R, B,
L, U, D). The released PaGeR checkpoints were trained with three mechanisms that make those six rows one
sample; a model without them loads the weights without any error and predicts wrong geometry.

1. :class:`PanoramaGroupNorm` -- every GroupNorm takes its per-group mean and variance over the six faces of
   its panorama together (``(B*6, C, H, W) -> (B, C, 6*H*W)`` semantics), never across panoramas.
2. :class:`PanoramaAttnProcessor` -- every self-attention (UNet transformer ``attn1``, VAE mid-block
   attention) attends over the tokens of all six faces at once: one sequence per panorama, tokens in
   (face, row, col) order. Cross-attention to the prompt embedding stays per face (the six faces share the
   same prompt, so joining them would not change anything).
3. Sphere RoPE (:mod:`pager.model.rope`) on queries and keys of self-attention after the head split, with
   the reference's exact position table, frequencies and interleaved rotation; never in cross-attention.
   Applied with every attention backend (the reference only applied it with xformers, but its released
   configs enable xformers).

RoPE token orders (``rope_token_order``)
    ``"face_row_col"`` (default, for new models): token (face f, row i, col j) is rotated by the position of
    (f, i, j). Consistent everywhere.
    ``"reference_vae"`` (compatibility mode for checkpoints whose config says ``vae_use_RoPE: "RoPE"``): the
    reference flattens 4-D attention inputs (the VAE mid-block attention: one head, D = 512) in (row, col,
    face) order but rotates sequence slot ``s`` with row ``s`` of the (face, row, col) position table, so
    token (f, i, j) is rotated by table row ``(i*hw + j)*6 + f``. This mode reproduces that pairing for 4-D
    inputs only; 3-D inputs (UNet transformers, already (face, row, col) in the reference) are unchanged.
    Attention has no mask here, so keeping our token order and permuting the positions gives outputs
    identical to the reference's.

The reference's switches: :func:`unet_rope_enabled` (``unet_positional_encoding: RoPE``) and
:func:`vae_rope_enabled` (VAE RoPE is on only for the *string* ``"RoPE"``; the boolean ``true`` of the
reference's ``base.yaml`` leaves it off).

Entry point: :func:`make_panorama_wide` converts a diffusers ``UNet2DConditionModel`` or ``AutoencoderKL``
in place (state_dict keys unchanged). Backends: ``"sdpa"`` (``F.scaled_dot_product_attention``, default),
``"xformers"`` (``xformers.ops.memory_efficient_attention``; falls back to SDPA with one warning when
unavailable), ``"math"`` (explicit float32 softmax, a slow reference for tests).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pager.model.rope import hw_from_token_count, rotate_tokens

__all__ = [
    "PanoramaGroupNorm",
    "PanoramaAttnProcessor",
    "panorama_group_norm",
    "make_panorama_wide",
    "set_attention_backend",
    "vae_rope_enabled",
    "unet_rope_enabled",
    "load_unet_config",
    "ATTENTION_BACKENDS",
    "ROPE_TOKEN_ORDERS",
]

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("sdpa", "xformers", "math")
ROPE_TOKEN_ORDERS = ("face_row_col", "reference_vae")
FACES = 6

_xformers_warned = False


# ----------------------------------------------------------------------------------------------------------
# GroupNorm
# ----------------------------------------------------------------------------------------------------------
def panorama_group_norm(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    faces: int = FACES,
) -> Tensor:
    """GroupNorm whose statistics span the ``faces`` consecutive batch rows of each panorama.

    Args:
        x: ``[B*faces, C, *]`` (e.g. ``[B*6, C, H, W]`` or ``[B*6, C, L]``), any memory format.
        weight, bias: ``[C]`` affine parameters or None.
    Returns:
        Tensor like x: ``y = (x - M) / sqrt(V + eps) * weight + bias`` with the mean ``M`` and the biased
        variance ``V`` per (panorama, group) over the group's channels and all positions of all faces,
        i.e. ``nn.GroupNorm`` of the six faces joined into one sample.

    Numerics (as accurate as ``nn.GroupNorm`` of the joined faces or better, issue 14.4): one mean ``M``
    and one ``1/sqrt(V + eps)`` per (panorama, group) are applied to all six faces (normalising each face
    by its own statistics first and rescaling afterwards rounds every face differently, and that rounding
    is then amplified by ``1/sqrt(V + eps)``).

    - Statistics: contiguous float32/float64 inputs take per-face mean and variance from PyTorch's GroupNorm
      kernel (a stable cascade sum; its output buffer is reused for the result); channels_last inputs
      (whose GroupNorm kernel cancels: sum of squares) per-channel sums and sums of squares of ``x - K`` (``K`` a
      per-channel mean of every 16th row, so the centred values are small and nothing cancels), in float32
      along each image row and in float64 over the rows (Welford's ``torch.var_mean`` is as accurate and
      about 6x slower in this layout); half-precision inputs per-channel moments over the panorama from the two-pass
      batch-norm statistics (float32 accumulation). Each set is merged
      in float64 with the exact equal-count combination ``M = mean(m_i)``, ``V = mean(v_i) + mean((m_i -
      M)^2)`` (Chan, Golub & LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
      variances").
    - float32/float64 output: ``y = (x - M_hi) * s + (bias - M_lo * s)`` with ``M = M_hi + M_lo`` split into
      x's precision and the remainder, ``s = weight / sqrt(V + eps)``: ``x - M_hi`` is exact near the mean,
      so the large ``x * s`` of ``nn.GroupNorm``'s one-pass ``x * s + t`` never cancels.
    - float16/bfloat16 output: one fused ``x * s + t`` pass in float32 (inference batch norm with ``M``,
      ``V``), rounded once to x's dtype, whose rounding dominates.
    - With gradients (training), or on devices other than CPU/CUDA: ``(x - M) / sqrt(V + eps) * weight +
      bias`` from differentiable tensor ops, statistics by ``torch.var_mean`` (Welford) over the panorama,
      in float32 for half inputs.
    """
    if x.ndim < 2:
        raise ValueError(f"panorama_group_norm expects [B*{faces}, C, ...], got shape {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    if n % faces:
        raise ValueError(
            f"panorama-wide GroupNorm needs a batch of whole panoramas ({faces} cube faces each), got a batch of "
            f"{n} faces (shape {tuple(x.shape)})"
        )
    if c % num_groups:
        raise ValueError(f"{c} channels cannot be split into {num_groups} groups")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if needs_grad or x.device.type not in ("cpu", "cuda") or x.numel() == 0:
        return _differentiable_group_norm(x, num_groups, weight, bias, eps, faces)
    if torch.compiler.is_compiling():
        # compiled inference: this function as one opaque operator (no graph break on its out= kernels), so the
        # compiled network normalises with exactly these numerics
        return torch.ops.pager.panorama_group_norm(x, num_groups, weight, bias, eps, faces)
    return _panorama_group_norm_fast(x, num_groups, weight, bias, eps, faces)


def _output_format(x: Tensor) -> torch.memory_format:
    """Memory format of :func:`panorama_group_norm`'s output: channels_last for channels_last 4-D input."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("pager::panorama_group_norm", mutates_args=())
def _panorama_group_norm_op(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, faces: int
) -> Tensor:
    """:func:`panorama_group_norm` without gradients as a custom operator (for ``torch.compile``)."""
    out = _panorama_group_norm_fast(x, num_groups, weight, bias, eps, faces)
    return out.contiguous(memory_format=_output_format(x))


@_panorama_group_norm_op.register_fake
def _panorama_group_norm_fake(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, faces: int
) -> Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).contiguous(memory_format=_output_format(x))


def _panorama_group_norm_fast(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, faces: int
) -> Tensor:
    """:func:`panorama_group_norm` of validated input without gradients on CPU / CUDA (its Numerics section)."""
    n, c = x.shape[0], x.shape[1]
    b, cg = n // faces, c // num_groups
    f64 = torch.float64
    half = x.dtype in (torch.float16, torch.bfloat16)
    channels_last = x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if half:
        # per panorama: per-channel moments in float32, merged, then one mixed-precision batch-norm pass
        w = weight.float() if weight is not None else None
        bb = bias.float() if bias is not None else None
        outs = []
        for i in range(b):
            xs = x[i * faces : (i + 1) * faces]
            mean_c, var_c = _channel_moments(xs, torch.float32)
            mean, var = _merge(mean_c.to(f64).view(num_groups, cg), var_c.to(f64).view(num_groups, cg))
            rm = mean.repeat_interleave(cg).float()
            rv = var.repeat_interleave(cg).float()
            outs.append(F.batch_norm(xs, rm, rv, w, bb, False, 0.0, eps))
        return outs[0] if b == 1 else torch.cat(outs)
    bshape = (n, c) + (1,) * (x.ndim - 2)

    def per_face(t: Tensor) -> Tensor:
        return t.to(x.dtype).repeat_interleave(faces, dim=0).view(bshape)

    if channels_last:
        # ``out = x - K`` with K a per-channel estimate of the mean, then sums and sums of squares of the centred
        # values: fast in this layout (Welford's var_mean is ~6x slower here), and accurate because the centred
        # values are small (sums of x itself would cancel) and summed in short runs merged in float64
        out = torch.empty_like(x)
        ref = _rough_channel_mean(x, faces)  # [b, C], x.dtype
        torch.sub(x, per_face(ref), out=out)
        s1, s2 = (s.view(b, faces, c).sum(dim=1) for s in centred_channel_sums(out))  # [b, C]
        mean_c, var_c = moments_from_centred_sums(s1, s2, faces * x.shape[2] * x.shape[3], ref)
        mean, var = _merge(mean_c.view(b, num_groups, cg), var_c.view(b, num_groups, cg))  # [b, G]
    else:
        x = x.contiguous()
        out, mean_f, rstd_f = torch.ops.aten.native_group_norm(x, None, None, n, c, x.numel() // (n * c), num_groups, eps)
        mean_f = mean_f.to(f64).view(b, faces, num_groups).transpose(1, 2)  # [b, G, faces]
        var_f = (rstd_f.to(f64).reciprocal().square() - eps).clamp_min(0.0).view(b, faces, num_groups).transpose(1, 2)
        mean, var = _merge(mean_f, var_f)  # [b, G]
    if not channels_last:
        ref = mean.repeat_interleave(cg, dim=1).to(x.dtype)  # the mean's high part: x - ref is exact near the mean
        torch.sub(x, per_face(ref), out=out)
    scale, shift = group_norm_affine(mean, var, cg, eps, weight, bias, ref)
    return torch.addcmul(per_face(shift), out, per_face(scale), out=out)


def group_norm_affine(
    mean: Tensor, var: Tensor, cg: int, eps: float, weight: Tensor | None, bias: Tensor | None, ref: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per-channel float64 ``scale`` and ``shift`` ``[b, C]`` of a GroupNorm with group moments ``mean``, ``var``
    ``[b, G]`` (float64; ``cg`` channels per group), such that ``(x - ref) * scale + shift`` equals
    ``(x - mean) / sqrt(var + eps) * weight + bias``; ``ref`` ``[b, C]`` (None: 0) is a value near the mean that
    the caller subtracts first, so that no large terms cancel (the mean's high part, or a rough mean).
    """
    f64 = torch.float64
    scale = torch.rsqrt(var + eps).repeat_interleave(cg, dim=1)
    if weight is not None:
        scale = scale * weight.to(f64)
    centre = mean.repeat_interleave(cg, dim=1)
    if ref is not None:
        centre = centre - ref.to(f64)
    shift = -centre * scale
    if bias is not None:
        shift = shift + bias.to(f64)
    return scale, shift


def centred_channel_sums(d: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and sum of squares of ``d`` ``[N, C, H, W]`` per (sample, channel): two float64 ``[N, C]`` tensors.

    ``d`` should already be centred near its mean (``x - K``, K a rough per-channel mean), so that the sum of
    squares does not cancel. Sums run along image rows in d's precision (short, vectorised over channels in the
    channels_last layout, whose memory is ``[N*H, W, C]``; along W in the contiguous one), then over rows in
    float64. About 4x faster than ``torch.var_mean`` over ``(2, 3)`` of a channels_last map on a CPU, 2x of a
    contiguous one.
    """
    n, c, h, w = d.shape
    if d.is_contiguous(memory_format=torch.channels_last) and not d.is_contiguous():
        rows = d.permute(0, 2, 3, 1).reshape(n * h, w, c)  # a view
        s1 = rows.sum(dim=1).to(torch.float64).view(n, h, c).sum(dim=1)
        s2 = torch.linalg.vector_norm(rows, dim=1).to(torch.float64).square().view(n, h, c).sum(dim=1)
        return s1, s2
    d = d.contiguous()
    s1 = d.sum(dim=3).to(torch.float64).sum(dim=2)
    s2 = torch.linalg.vector_norm(d, dim=3).to(torch.float64).square().sum(dim=2)
    return s1, s2


def moments_from_centred_sums(s1: Tensor, s2: Tensor, count: int, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance (float64, shape of ``s1``) of ``count`` values ``x`` from the sums ``s1`` of
    ``x - ref`` and ``s2`` of ``(x - ref)^2`` (:func:`centred_channel_sums`): ``mean = ref + s1/n``,
    ``var = s2/n - (s1/n)^2`` (clamped at 0)."""
    shift = s1 / count
    return shift + ref.to(torch.float64), (s2 / count - shift.square()).clamp_min(0.0)


def _rough_channel_mean(x: Tensor, faces: int) -> Tensor:
    """Per-panorama, per-channel mean of a subset of rows of ``x`` ``[B*faces, C, H, W]``: ``[B, C]`` in x.dtype.

    Only a centring value for :func:`panorama_group_norm` (any value near the mean keeps the centred values
    small); every ``H // 16``-th row is enough and costs a sixteenth of a pass.
    """
    step = max(1, x.shape[2] // 16)
    rows = x[:, :, ::step]
    b, c = x.shape[0] // faces, x.shape[1]
    return rows.reshape(b, faces, c, -1).mean(dim=(1, 3), dtype=torch.float32).to(x.dtype)


def _channel_moments(xs: Tensor, param_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``xs`` ``[N, C, *]`` over N and positions (two-pass), in ``param_dtype``."""
    c = xs.shape[1]
    # float32 running buffers select float32 statistics for half inputs (momentum 0 leaves them unchanged)
    scratch_m = torch.zeros(c, device=xs.device, dtype=param_dtype)
    scratch_v = torch.ones(c, device=xs.device, dtype=param_dtype)
    if xs.ndim == 2:
        xs = xs.unsqueeze(-1)
    return torch.batch_norm_update_stats(xs, scratch_m, scratch_v, 0.0)


def _merge(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Merge equal-count (mean, biased variance) pairs along the last dim (Chan et al. 1979): ``[..., k] -> [...]``."""
    m = mean.mean(dim=-1)
    return m, var.mean(dim=-1) + (mean - m.unsqueeze(-1)).square().mean(dim=-1)


def _differentiable_group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, faces: int
) -> Tensor:
    """Panorama GroupNorm from differentiable tensor ops (gradients flow through the statistics)."""
    n, c = x.shape[0], x.shape[1]
    b, cg = n // faces, c // num_groups
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xg = x.to(compute).reshape(b, faces, num_groups, -1)  # [b, faces, G, cg * L]
    var, mean = torch.var_mean(xg, dim=(1, 3), correction=0, keepdim=True)  # [b, 1, G, 1]
    y = (xg - mean) * torch.rsqrt(var + eps)
    y = y.reshape(b, faces, c, -1)
    if weight is not None:
        y = y * weight.to(compute).view(1, 1, c, 1)
    if bias is not None:
        y = y + bias.to(compute).view(1, 1, c, 1)
    return y.reshape(x.shape).to(x.dtype)


class PanoramaGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with statistics over the six faces of each panorama (see :func:`panorama_group_norm`).

    Same parameters and state_dict keys as ``nn.GroupNorm``; input ``[B*faces, C, *]``, several panoramas
    per batch are independent.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
        faces: int = FACES,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, device=device, dtype=dtype, **kwargs)
        self.faces = int(faces)

    @classmethod
    def from_group_norm(cls, norm: nn.GroupNorm, faces: int = FACES) -> "PanoramaGroupNorm":
        """A PanoramaGroupNorm sharing ``norm``'s Parameter objects (no copy) and training mode."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for key, value in vars(norm).items():  # num_groups, num_channels, eps, affine (torch version agnostic)
            if not key.startswith("_") and key != "training":
                setattr(new, key, value)
        new.register_parameter("weight", norm.weight)  # the same Parameter objects (or None)
        new.register_parameter("bias", norm.bias)
        for name, hook_dict in (("_forward_pre_hooks", norm._forward_pre_hooks), ("_forward_hooks", norm._forward_hooks)):
            if hook_dict:
                logger.warning("GroupNorm forward hooks (%s) are not carried over to PanoramaGroupNorm", name)
        new.faces = int(faces)
        new.train(norm.training)
        return new

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.GroupNorm's name
        return panorama_group_norm(input, self.num_groups, self.weight, self.bias, self.eps, self.faces)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", faces={self.faces}"


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------
def _xformers_ops() -> Any | None:
    try:
        import xformers.ops  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken install
        return None
    return xformers.ops


def _math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Reference attention on [B, heads, N, D]: softmax(q k^T * scale + mask) v in float32."""
    scores = torch.einsum("bhnd,bhmd->bhnm", q.float(), k.float()) * scale
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.float()
    return torch.einsum("bhnm,bhmd->bhnd", scores.softmax(dim=-1), v.float()).to(q.dtype)


class PanoramaAttnProcessor:
    """diffusers attention processor: joint six-face self-attention with optional sphere RoPE.

    Args:
        joint: self-attention over the tokens of all ``faces`` faces of a panorama (tokens in (face, row,
            col) order). Cross-attention (``encoder_hidden_states`` given) is always per face.
        rope: rotate queries and keys of (joint) self-attention by :mod:`pager.model.rope`.
        rope_token_order: ``"face_row_col"`` or ``"reference_vae"`` (module docstring).
        backend: ``"sdpa"`` (default), ``"xformers"`` (SDPA with one warning when unavailable), ``"math"``.
        faces: faces per panorama (6).

    Handles ``attn.spatial_norm``, ``attn.group_norm`` (panorama-wide when joint, even when it is a plain
    ``nn.GroupNorm``), ``norm_cross``, ``norm_q``/``norm_k``, 4-D ``[B*6, C, H, W]`` and 3-D ``[B*6, L, C]``
    inputs, ``residual_connection`` and ``rescale_output_factor`` like diffusers' ``AttnProcessor2_0``; the
    softmax scale is ``attn.scale``. An attention mask is only supported per face (cross-attention or
    ``joint=False``).
    """

    def __init__(
        self,
        joint: bool = True,
        rope: bool = False,
        rope_token_order: str = "face_row_col",
        backend: str = "sdpa",
        faces: int = FACES,
    ) -> None:
        if rope_token_order not in ROPE_TOKEN_ORDERS:
            raise ValueError(f"rope_token_order must be one of {ROPE_TOKEN_ORDERS}, got {rope_token_order!r}")
        if rope and not joint:
            raise ValueError("sphere RoPE needs joint six-face attention (joint=True): positions span the panorama")
        if rope and faces != FACES:
            raise ValueError(f"sphere RoPE is defined for {FACES} cube faces, got faces={faces}")
        if int(faces) < 1:
            raise ValueError(f"faces must be >= 1, got {faces}")
        self.joint = bool(joint)
        self.rope = bool(rope)
        self.rope_token_order = rope_token_order
        self.faces = int(faces)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {value!r}")
        self._backend = value

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(joint={self.joint}, rope={self.rope}, "
            f"rope_token_order={self.rope_token_order!r}, backend={self.backend!r}, faces={self.faces})"
        )

    # -- attention kernels on [B, heads, N, D] -----------------------------------------------------------
    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
        backend = self.backend
        if backend == "xformers":
            ops = _xformers_ops()
            if ops is None or q.device.type != "cuda":
                global _xformers_warned
                if not _xformers_warned:
                    why = "xformers is not installed" if ops is None else f"xformers needs CUDA tensors, got {q.device}"
                    logger.warning("attention backend 'xformers' requested but %s; using PyTorch SDPA", why)
                    _xformers_warned = True
                backend = "sdpa"
            else:
                bias = None
                if mask is not None:
                    bias = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2]).to(q.dtype)
                out = ops.memory_efficient_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, scale=scale
                )
                return out.transpose(1, 2)
        if backend == "math":
            return _math_attention(q, k, v, mask, scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            n_img, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.reshape(n_img, channel, height * width).transpose(1, 2)
        elif input_ndim != 3:
            raise ValueError(f"attention input must be [N, C, H, W] or [N, L, C], got shape {tuple(hidden_states.shape)}")
        n_img, seq_len, _ = hidden_states.shape

        is_self = encoder_hidden_states is None
        joint = self.joint and is_self
        if joint and n_img % self.faces:
            raise ValueError(
                f"joint panorama attention needs a batch of whole panoramas ({self.faces} faces each), got "
                f"{n_img} faces"
            )
        if joint and attention_mask is not None:
            raise ValueError("an attention mask is not supported in joint panorama self-attention")

        if attn.group_norm is not None:
            gn = attn.group_norm
            if joint and not isinstance(gn, PanoramaGroupNorm):
                hidden_states = panorama_group_norm(
                    hidden_states.transpose(1, 2), gn.num_groups, gn.weight, gn.bias, gn.eps, self.faces
                ).transpose(1, 2)
            else:
                hidden_states = gn(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if is_self:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        heads = attn.heads
        head_dim = key.shape[-1] // heads
        # sequences: one per panorama (joint) or one per face
        batch = n_img // self.faces if joint else n_img
        query = query.reshape(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.reshape(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.reshape(batch, -1, heads, head_dim).transpose(1, 2)

        if attention_mask is not None:
            kv_len = encoder_hidden_states.shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, kv_len, batch)
            attention_mask = attention_mask.view(batch, heads, -1, attention_mask.shape[-1])

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.rope and joint:
            num_tokens = query.shape[2]
            hw = hw_from_token_count(num_tokens, self.faces)
            order = "reference_vae" if (self.rope_token_order == "reference_vae" and input_ndim == 4) else "face_row_col"
            query = rotate_tokens(query, hw, order)
            key = rotate_tokens(key, hw, order)

        out = self._attend(query, key, value, attention_mask, float(attn.scale))
        out = out.transpose(1, 2).reshape(n_img, seq_len, heads * head_dim).to(query.dtype)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(n_img, -1, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# ----------------------------------------------------------------------------------------------------------
# Model conversion
# ----------------------------------------------------------------------------------------------------------
def _attention_class() -> type:
    from diffusers.models.attention_processor import Attention

    return Attention


def make_panorama_wide(
    model: nn.Module,
    *,
    rope: bool = False,
    rope_token_order: str = "face_row_col",
    attention_backend: str = "sdpa",
    faces: int = FACES,
) -> nn.Module:
    """Make every GroupNorm and attention of a diffusers UNet / VAE panorama-wide, in place.

    Swaps each ``nn.GroupNorm`` for a :class:`PanoramaGroupNorm` sharing its Parameters (state_dict keys and
    values unchanged; idempotent) and sets a :class:`PanoramaAttnProcessor` on every diffusers ``Attention``:
    self-attention modules get ``joint=True, rope=rope``, cross-attention modules ``joint=False, rope=False``.

    Args:
        model: e.g. ``UNet2DConditionModel`` or ``AutoencoderKL`` (any nn.Module).
        rope: sphere RoPE in self-attention (:func:`unet_rope_enabled` / :func:`vae_rope_enabled`).
        rope_token_order: ``"face_row_col"`` or ``"reference_vae"`` (module docstring).
        attention_backend: ``"sdpa"``, ``"xformers"`` or ``"math"``.
    Returns:
        The same model.
    """
    if rope_token_order not in ROPE_TOKEN_ORDERS:
        raise ValueError(f"rope_token_order must be one of {ROPE_TOKEN_ORDERS}, got {rope_token_order!r}")
    if attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
    if isinstance(faces, bool) or not isinstance(faces, int) or faces < 1:
        raise ValueError(f"faces must be a positive int, got {faces!r}")

    # 1. GroupNorms: replace in every parent that holds one (a shared module stays shared)
    converted: dict[int, PanoramaGroupNorm] = {}
    n_norms = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PanoramaGroupNorm):
                child.faces = faces
            elif isinstance(child, nn.GroupNorm):
                if type(child) is not nn.GroupNorm:
                    logger.warning("converting GroupNorm subclass %s at %r", type(child).__name__, name)
                new = converted.get(id(child))
                if new is None:
                    new = converted[id(child)] = PanoramaGroupNorm.from_group_norm(child, faces)
                    n_norms += 1
                setattr(parent, name, new)
            elif type(child).__name__ == "AdaGroupNorm":
                logger.warning("%s at %r is not made panorama-wide (unsupported)", type(child).__name__, name)

    # 2. attention processors
    attention_cls = _attention_class()
    n_self = n_cross = 0
    for module in model.modules():
        if isinstance(module, attention_cls):
            if module.is_cross_attention:
                proc = PanoramaAttnProcessor(joint=False, rope=False, backend=attention_backend, faces=faces)
                n_cross += 1
            else:
                proc = PanoramaAttnProcessor(
                    joint=True, rope=rope, rope_token_order=rope_token_order, backend=attention_backend, faces=faces
                )
                n_self += 1
            module.set_processor(proc)
    logger.debug(
        "make_panorama_wide(%s): %d GroupNorms, %d self- and %d cross-attention modules (rope=%s, order=%s, %s)",
        type(model).__name__, n_norms, n_self, n_cross, rope, rope_token_order, attention_backend,
    )
    return model


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Switch every :class:`PanoramaAttnProcessor` of ``model`` to ``backend`` ("sdpa", "xformers", "math").

    Raises ValueError for an unknown backend or when the model has no panorama processors
    (call :func:`make_panorama_wide` first).
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    attention_cls = _attention_class()
    found = 0
    for module in model.modules():
        if isinstance(module, attention_cls) and isinstance(module.processor, PanoramaAttnProcessor):
            module.processor.backend = backend
            found += 1
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no PanoramaAttnProcessor; call make_panorama_wide(model) first"
        )


# ----------------------------------------------------------------------------------------------------------
# Reference switches and configs
# ----------------------------------------------------------------------------------------------------------
def vae_rope_enabled(value: Any) -> bool:
    """The reference's VAE RoPE switch: on only for the string ``"RoPE"``.

    ``vae_use_RoPE: true`` (a boolean, as in the reference's ``base.yaml``) leaves VAE RoPE OFF, as the
    reference's comparison with ``"RoPE"`` did; checkpoints trained that way have no VAE RoPE.
    """
    if isinstance(value, str) and value == "RoPE":
        return True
    if value is True or (isinstance(value, str) and value.strip().lower() in ("rope", "true")):
        logger.info("vae_use_RoPE=%r: VAE RoPE stays off (the reference only turns it on for the string 'RoPE')", value)
    return False


def unet_rope_enabled(positional_encoding: Any) -> bool:
    """True when a checkpoint's ``unet_positional_encoding`` asks for sphere RoPE (the string ``"RoPE"``).

    Raises ValueError for a near miss such as ``"rope"`` (the reference would not treat it as RoPE either,
    so it is more likely a typo in a config of ours than a meaningful value).
    """
    if isinstance(positional_encoding, str):
        if positional_encoding == "RoPE":
            return True
        if positional_encoding.strip().lower() == "rope":
            raise ValueError(
                f"unet_positional_encoding={positional_encoding!r}: write 'RoPE' (case-sensitive, as the reference)"
            )
    return False


def load_unet_config(config: Mapping[str, Any] | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a UNet ``config.json`` (dict or path) into diffusers' arguments and the reference's extras.

    diffusers' ``UNet2DConditionModel.from_config`` / ``from_pretrained`` accept unknown keys such as the
    reference's ``use_RoPE`` with a warning and ignore them; this helper removes them up front (no warning)
    and returns them so that the caller can act on them.

    Returns:
        ``(diffusers_config, extras)``: ``diffusers_config`` has only keys that ``UNet2DConditionModel``
        accepts (plus diffusers' own ``_``-prefixed metadata); ``extras`` the rest, e.g. ``{"use_RoPE": True}``.
    """
    from diffusers import UNet2DConditionModel

    if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__"):
        import json
        import os

        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"UNet config not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                config = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"UNet config {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, Mapping):
        raise ValueError(f"UNet config must be a mapping or a path to config.json, got {type(config).__name__}")
    accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
    clean: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in config.items():
        if key in accepted or key.startswith("_"):
            clean[key] = value
        else:
            extras[key] = value
    return clean, extras
