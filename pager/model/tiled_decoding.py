"""Exact low-memory VAE decoding: the decoder run layer by layer in bands of rows, panorama-wide layers kept exact.

At the released face size (F = 768) the decoder's largest maps are ``[6, 256, 768, 768]`` (3.6 GB in float32):
the untiled decoder holds several of them at once (the nearest-upsampled map, its cube-padded copy, the
convolution's output, the GroupNorm output, the ResNet block's input kept for the residual). This module
computes the same function with far fewer of them alive.

Why not diffusers' ``AutoencoderKL.enable_tiling``: it decodes overlapping spatial tiles independently and blends
them, so every GroupNorm normalises each tile by that tile's own statistics and each tile's border is padded
without its neighbours; its output is a different function (visible tile seams and brightness shifts), and its
tiles would also cut the cube faces away from the neighbour faces that cube padding reads. In PaGeR the six cube
faces are one sample: every convolution pads a face with its neighbours' pixels, every GroupNorm takes one mean
and variance per panorama over all six faces, and the mid-block attention is joint over the six faces.

Scheme (exact: the same operations on the same values, up to float rounding of reordered sums):

- Panoramas are independent: a batch is decoded one panorama (six faces) at a time.
- Every convolution computes its output in bands of rows, each band over all six faces and all channels. The
  band of its padded input is built from the input rows it needs (the band plus the kernel's halo) and the
  cube-padding pixels of those rows. The padding pixels of the whole map (a ring of ``O(F)`` pixels per channel)
  are gathered once per layer with the tables of :func:`pager.geometry.cube_pad_sources`, so no padded copy of
  the map is ever built; plain zero-padded convolutions (models without cube padding) pad bands with zeros.
- A GroupNorm (+ SiLU) feeding a convolution is never materialised. Its panorama statistics come first, streamed
  over row bands (per band and (panorama, group): mean and variance over the faces, the group's channels and the
  band's pixels, in float64, merged exactly with the unequal-count formula of Chan, Golub & LeVeque 1979); then
  it is applied to each input band as the band is built. Normalising before or after padding is the same, since
  the padded pixels come from the same panorama and channel and get the same scale and shift; corner pixels (the
  mean of two neighbours) are averaged after normalisation, as in the untiled decoder.
- The nearest 2x upsampling before an upsampler's convolution happens per band as well (pixel copies).
- The second convolution of each ResNet block writes its output (plus the shortcut of the block's input) over
  its own input, band by band, keeping the few rows the next band still reads.
- The mid-block attention (joint over the six faces, at the latent resolution: small) runs as usual.

Alive at once: a ResNet block's input and its hidden map (its output overwrites the hidden map), or an
upsampler's input and output, plus one band. Measured figures: ``benchmarks/tiled_decoding.py`` and the README.
Inference only (no gradients); eager (a compiled decoder's graph is not used by this path).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pager.geometry.cube_padding import CubePadConv2d, _conv_sides, cube_pad_sources
from pager.model.panorama_layers import (
    PanoramaGroupNorm,
    _merge,
    _rough_channel_mean,
    centred_channel_sums,
    group_norm_affine,
    moments_from_centred_sums,
)

__all__ = ["TiledDecoding", "check_tiled_decoding_support", "check_tiled_encoding_support", "tiled_decode",
           "tiled_encode", "DEFAULT_BAND_MB"]

logger = logging.getLogger(__name__)

FACES = 6
#: Default memory of one band (its padded input plus output), MiB.
DEFAULT_BAND_MB = 64.0


@dataclass(frozen=True)
class TiledDecoding:
    """Settings of the tiled decoder.

    Args:
        band_mb: target memory of one band (padded input plus output of a convolution; the input band of the
            GroupNorm statistics), MiB; smaller saves little once bands are far below the maps' size.
        band_rows: fixed rows per band instead (``band_mb`` is then unused); for tests of the band logic.
    """

    band_mb: float = DEFAULT_BAND_MB
    band_rows: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.band_mb, bool) or not isinstance(self.band_mb, (int, float)) or not self.band_mb > 0:
            raise ValueError(f"band_mb must be a positive number of MiB, got {self.band_mb!r}")
        if self.band_rows is not None and (isinstance(self.band_rows, bool) or not isinstance(self.band_rows, int)
                                           or self.band_rows < 1):
            raise ValueError(f"band_rows must be a positive int or None, got {self.band_rows!r}")

    def rows(self, bytes_per_row: int) -> int:
        """Rows per band for a layer needing ``bytes_per_row`` bytes per output row."""
        if self.band_rows is not None:
            return self.band_rows
        return max(1, int(self.band_mb * 2**20) // max(int(bytes_per_row), 1))


# ----------------------------------------------------------------------------------------------------------
# structure check
# ----------------------------------------------------------------------------------------------------------
def _check_conv(conv: nn.Module, where: str, downsample: bool = False) -> None:
    """Stride-1 convolutions; with ``downsample``, the stride-2 one of a diffusers ``Downsample2D`` (whose
    ``(0, 1, 0, 1)`` zero padding a cube-padded convolution replaces by one-sided cube padding)."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"tiled VAE: {where} is a {type(conv).__name__}, expected an nn.Conv2d")
    allowed = ((1, 1), (2, 2)) if downsample else ((1, 1),)
    if tuple(conv.stride) not in allowed:
        raise ValueError(f"tiled VAE: {where} has stride {tuple(conv.stride)}; only "
                         f"{' or '.join(str(a) for a in allowed)} is supported here")
    if isinstance(conv, CubePadConv2d):
        if conv.input_zero_pad is not None and not (downsample and tuple(conv.input_zero_pad) == (0, 1, 0, 1)):
            raise ValueError(f"tiled VAE: {where} crops a zero-padded input {conv.input_zero_pad}; not supported")
    elif conv.padding_mode != "zeros":
        raise ValueError(f"tiled VAE: {where} pads with {conv.padding_mode!r}; only zeros or cube padding")


def _check_norm(norm: nn.Module, where: str) -> None:
    if not isinstance(norm, nn.GroupNorm):
        raise ValueError(f"tiled VAE: {where} is a {type(norm).__name__}, expected a GroupNorm")


def _check_resnet(block: nn.Module, where: str) -> None:
    if type(block).__name__ != "ResnetBlock2D":
        raise ValueError(f"tiled VAE: {where} is a {type(block).__name__}, expected a diffusers ResnetBlock2D")
    if block.upsample is not None or block.downsample is not None or block.time_emb_proj is not None:
        raise ValueError(f"tiled VAE: {where} resamples or takes a time embedding; not supported")
    if not isinstance(block.nonlinearity, nn.SiLU):
        raise ValueError(f"tiled VAE: {where} uses {type(block.nonlinearity).__name__}; only SiLU is supported")
    _check_norm(block.norm1, f"{where}.norm1")
    _check_norm(block.norm2, f"{where}.norm2")
    _check_conv(block.conv1, f"{where}.conv1")
    _check_conv(block.conv2, f"{where}.conv2")
    if block.conv2.in_channels != block.conv2.out_channels:
        raise ValueError(f"tiled VAE: {where}.conv2 changes the channel count; not supported")
    sc = block.conv_shortcut
    if sc is not None and (not isinstance(sc, nn.Conv2d) or _conv_sides(sc) != (0, 0, 0, 0)
                           or tuple(sc.kernel_size) != (1, 1) or tuple(sc.stride) != (1, 1)):
        raise ValueError(f"tiled VAE: {where}.conv_shortcut must be a 1x1 convolution")


def check_tiled_decoding_support(vae: nn.Module) -> None:
    """Raise ``ValueError`` naming the first layer of ``vae``'s decoder that :func:`tiled_decode` cannot run.

    Supported: diffusers' ``AutoencoderKL`` decoder with ``norm_type="group"`` (SD / SD-2 VAEs): ``conv_in``, a
    ``UNetMidBlock2D`` of ``ResnetBlock2D`` and attention, ``UpDecoderBlock2D`` blocks with nearest 2x
    ``Upsample2D`` convolutions, ``conv_norm_out`` + SiLU + ``conv_out``; stride-1 convolutions with cube padding
    or zero padding; GroupNorms panorama-wide or per face.
    """
    dec = getattr(vae, "decoder", None)
    if dec is None or type(dec).__name__ != "Decoder":
        raise ValueError(f"tiled decoding needs a diffusers AutoencoderKL (its Decoder), got {type(vae).__name__}")
    _check_conv(dec.conv_in, "decoder.conv_in")
    _check_mid_block(dec.mid_block, "decoder")
    for i, block in enumerate(dec.up_blocks):
        where = f"decoder.up_blocks.{i}"
        _check_block(block, where, "UpDecoderBlock2D")
        for j, up in enumerate(block.upsamplers or []):
            w = f"{where}.upsamplers.{j}"
            if (type(up).__name__ != "Upsample2D" or not up.use_conv or up.use_conv_transpose or not up.interpolate
                    or up.norm is not None or up.name != "conv"):
                raise ValueError(f"tiled VAE: {w} must be a diffusers Upsample2D (nearest 2x, then a convolution)")
            _check_conv(up.conv, f"{w}.conv")
    _check_output_layers(dec, "decoder")


def _check_block(block: nn.Module, where: str, kind: str) -> None:
    """A diffusers up/down block of class ``kind`` whose ResNet blocks the tiled path runs (resamplers apart)."""
    if type(block).__name__ != kind:
        raise ValueError(f"tiled VAE: {where} is a {type(block).__name__}, expected {kind}")
    for j, res in enumerate(block.resnets):
        _check_resnet(res, f"{where}.resnets.{j}")


def _check_mid_block(mid: nn.Module, part: str) -> None:
    if mid is None or type(mid).__name__ != "UNetMidBlock2D":
        raise ValueError(f"tiled VAE: {part}.mid_block is a {type(mid).__name__}, expected UNetMidBlock2D")
    for i, res in enumerate(mid.resnets):
        _check_resnet(res, f"{part}.mid_block.resnets.{i}")


def _check_output_layers(net: nn.Module, part: str) -> None:
    _check_norm(net.conv_norm_out, f"{part}.conv_norm_out")
    if not isinstance(net.conv_act, nn.SiLU):
        raise ValueError(f"tiled VAE: {part}.conv_act is {type(net.conv_act).__name__}; only SiLU is supported")
    _check_conv(net.conv_out, f"{part}.conv_out")


def check_tiled_encoding_support(vae: nn.Module) -> None:
    """Raise ``ValueError`` naming the first layer of ``vae``'s encoder that :func:`tiled_encode` cannot run.

    Supported: diffusers' ``AutoencoderKL`` encoder of the SD / SD-2 VAEs: ``conv_in``, ``DownEncoderBlock2D``
    blocks of ``ResnetBlock2D`` and a stride-2 ``Downsample2D`` convolution (zero padding ``(0, 1, 0, 1)`` or
    its one-sided cube padding, or a padded convolution), a ``UNetMidBlock2D`` of ``ResnetBlock2D`` and attention,
    ``conv_norm_out`` + SiLU + ``conv_out``, an optional 1x1 ``quant_conv``; GroupNorms panorama-wide or per face.
    """
    enc = getattr(vae, "encoder", None)
    if enc is None or type(enc).__name__ != "Encoder":
        raise ValueError(f"tiled encoding needs a diffusers AutoencoderKL (its Encoder), got {type(vae).__name__}")
    _check_conv(enc.conv_in, "encoder.conv_in")
    for i, block in enumerate(enc.down_blocks):
        where = f"encoder.down_blocks.{i}"
        _check_block(block, where, "DownEncoderBlock2D")
        for j, down in enumerate(block.downsamplers or []):
            w = f"{where}.downsamplers.{j}"
            if type(down).__name__ != "Downsample2D" or not down.use_conv or down.norm is not None:
                raise ValueError(f"tiled VAE: {w} must be a diffusers Downsample2D with a convolution")
            _check_conv(down.conv, f"{w}.conv", downsample=True)
    _check_mid_block(enc.mid_block, "encoder")
    _check_output_layers(enc, "encoder")
    qc = getattr(vae, "quant_conv", None)
    if qc is not None and (not isinstance(qc, nn.Conv2d) or _conv_sides(qc) != (0, 0, 0, 0)
                           or tuple(qc.kernel_size) != (1, 1) or tuple(qc.stride) != (1, 1)):
        raise ValueError("tiled VAE: quant_conv must be a 1x1 convolution")


# ----------------------------------------------------------------------------------------------------------
# GroupNorm: statistics streamed over bands, then applied per band
# ----------------------------------------------------------------------------------------------------------
class _BandNorm:
    """A GroupNorm followed by SiLU, applied to any set of pixels: per-sample ``[N, C]`` scale and shift.

    Full-precision inputs: ``y = (x - M_hi) * s + t`` with ``M = M_hi + M_lo`` split as in
    :func:`pager.model.panorama_layers.panorama_group_norm`; half inputs: ``y = x * s + t`` in float32, rounded
    once (as its mixed-precision batch-norm pass).
    """

    def __init__(self, norm: nn.GroupNorm, mean: Tensor, var: Tensor, faces: int, dtype: torch.dtype) -> None:
        cg = norm.num_channels // norm.num_groups
        self.half = dtype in (torch.float16, torch.bfloat16)
        mean_hi = None if self.half else mean.repeat_interleave(cg, dim=1).to(dtype)  # [Ns, C]
        scale, shift = group_norm_affine(mean, var, cg, norm.eps, norm.weight, norm.bias, mean_hi)
        self.mean_hi = None if mean_hi is None else mean_hi.repeat_interleave(faces, dim=0)
        comp = torch.float32 if self.half else dtype
        self.scale = scale.to(comp).repeat_interleave(faces, dim=0)  # [N, C]
        self.shift = shift.to(comp).repeat_interleave(faces, dim=0)
        self.dtype = dtype

    def __call__(self, t: Tensor, samples: Optional[Tensor] = None) -> Tensor:
        """``t`` ``[N, C, *]`` (all samples) or ``[M, C]`` values of the samples ``samples`` ``[M]``; a new tensor."""
        if samples is None:
            view = (t.shape[0], t.shape[1]) + (1,) * (t.ndim - 2)
            pick = lambda p: p.view(view)  # noqa: E731
        else:
            pick = lambda p: p.index_select(0, samples)  # noqa: E731
        if self.half:
            y = torch.addcmul(pick(self.shift), t.float(), pick(self.scale)).to(self.dtype)
        else:
            y = torch.sub(t, pick(self.mean_hi))
            y = torch.addcmul(pick(self.shift), y, pick(self.scale), out=y)
        return F.silu(y, inplace=True)


def _norm_stats(norm: nn.GroupNorm, x: Tensor, cfg: TiledDecoding) -> _BandNorm:
    """Panorama (or per-face, for a plain ``nn.GroupNorm``) statistics of ``x`` ``[N, C, H, W]``, streamed over bands.

    Per band: mean and biased variance of every (face, channel) over the band's pixels (sums of the values
    centred by a rough per-channel mean, :func:`pager.model.panorama_layers.centred_channel_sums`; float32 for
    half inputs), merged in float64 into one pair per (panorama, group) and band with the
    equal-count formula ``M = mean(m_i)``, ``V = mean(v_i) + mean((m_i - M)^2)``, then over bands with the
    unequal-count one ``M = sum(n_i m_i) / n``, ``V = sum(n_i (v_i + (m_i - M)^2)) / n`` (Chan, Golub & LeVeque
    1979), as :func:`pager.model.panorama_layers.panorama_group_norm` merges its per-face moments.
    """
    faces = norm.faces if isinstance(norm, PanoramaGroupNorm) else 1
    n, c, h, w = x.shape
    if n % faces:
        raise ValueError(f"panorama-wide GroupNorm needs whole panoramas ({faces} faces), got {n} faces")
    groups, ns = norm.num_groups, n // faces
    half = x.dtype in (torch.float16, torch.bfloat16)
    rows = cfg.rows(n * c * w * (4 if half else 1))
    means: List[Tensor] = []
    variances: List[Tensor] = []
    counts: List[int] = []
    for r0 in range(0, h, rows):
        xb = x[:, :, r0:r0 + rows]
        counts.append(xb.shape[2])
        xs = xb.float() if half else xb
        ref = _rough_channel_mean(xs, 1)  # [N, C]: centring values, so that the sums of squares do not cancel
        s1, s2 = centred_channel_sums(xs - ref[:, :, None, None])
        m, v = moments_from_centred_sums(s1, s2, xb.shape[2] * w, ref)  # [N, C] float64
        # [Ns, G, faces * channels per group]: the equal-count merge of the panorama GroupNorm
        m = m.view(ns, faces, groups, c // groups).transpose(1, 2).reshape(ns, groups, -1)
        v = v.view(ns, faces, groups, c // groups).transpose(1, 2).reshape(ns, groups, -1)
        mean, var = _merge(m, v)
        means.append(mean)
        variances.append(var)
    wts = torch.tensor(counts, dtype=torch.float64, device=x.device).view(-1, 1, 1) / h
    m_all, v_all = torch.stack(means), torch.stack(variances)  # [bands, Ns, G]
    mean = (wts * m_all).sum(dim=0)
    var = (wts * (v_all + (m_all - mean).square())).sum(dim=0)
    return _BandNorm(norm, mean, var, faces, x.dtype)


# ----------------------------------------------------------------------------------------------------------
# banded convolution
# ----------------------------------------------------------------------------------------------------------
class _Ring:
    """The cube-padding pixels of a whole (virtually upsampled, normalised) map, sorted by padded row.

    ``sample``, ``row``, ``col`` ``[M]`` (long): where each value goes in the padded map (rows and columns in
    padded coordinates); ``values`` ``[M, C]``.
    """

    def __init__(self, x: Tensor, sides: Tuple[int, int, int, int], mode: str, up: int,
                 pre: Optional[_BandNorm]) -> None:
        n, c, h, _ = x.shape
        size = h * up
        tables = cube_pad_sources(size, sides, mode)
        dev = x.device
        base = torch.arange(n // FACES, device=dev).view(-1, 1) * FACES  # panoramas' first samples

        def flat(tri: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
            tri = tri.to(dev)
            return ((base + tri[:, 0]).reshape(-1), tri[:, 1].repeat(n // FACES), tri[:, 2].repeat(n // FACES))

        def gather(tri: Tensor) -> Tensor:
            s, r, q = flat(tri)
            vals = x[s, :, torch.div(r, up, rounding_mode="floor"), torch.div(q, up, rounding_mode="floor")]  # [M, C]
            return pre(vals, s) if pre is not None else vals

        parts = [(flat(tables["edge_dst"]), gather(tables["edge_src"]))]
        if tables["corner_dst"].shape[0]:
            # the mean of the two (normalised) neighbours, as cube_pad's corner gather
            corner = torch.stack((gather(tables["corner_src_a"]), gather(tables["corner_src_b"]))).mean(dim=0)
            parts.append((flat(tables["corner_dst"]), corner))
        sample = torch.cat([p[0][0] for p in parts])
        row = torch.cat([p[0][1] for p in parts])
        col = torch.cat([p[0][2] for p in parts])
        values = torch.cat([p[1] for p in parts])
        order = torch.sort(row, stable=True).indices
        self.sample, self.row, self.col, self.values = sample[order], row[order], col[order], values[order]

    def fill(self, band: Tensor, p0: int, p1: int) -> None:
        """Write the ring pixels of padded rows ``[p0, p1)`` into ``band`` ``[N, C, p1 - p0, Wp]``."""
        lo, hi = (int(v) for v in torch.searchsorted(self.row, torch.tensor([p0, p1], device=self.row.device)))
        if hi > lo:
            band[self.sample[lo:hi], :, self.row[lo:hi] - p0, self.col[lo:hi]] = self.values[lo:hi]


def _conv_bands(
    conv: nn.Conv2d,
    x: Tensor,
    cfg: TiledDecoding,
    *,
    up: int = 1,
    pre: Optional[_BandNorm] = None,
    residual: Optional[Callable[[int, int, Tensor], Tensor]] = None,
    inplace: bool = False,
    zero_sides: Optional[Tuple[int, int, int, int]] = None,
) -> Tensor:
    """``conv(pad(pre(upsample(x))))`` ``[N, Cout, Ho, Wo]`` computed in bands of output rows.

    ``pad`` is the convolution's own padding (cube padding for a :class:`CubePadConv2d`, else zeros; a plain
    convolution's zero padding may be given as ``zero_sides`` ``(left, right, top, bottom)`` instead, e.g. the
    ``(0, 1, 0, 1)`` of diffusers' ``Downsample2D``), ``upsample`` nearest by ``up``, ``pre`` a :class:`_BandNorm`
    (GroupNorm + SiLU); the convolution's stride is kept (output row ``o`` reads padded rows ``o * stride`` on).
    ``residual(o0, o1, y)`` maps the output rows ``[o0, o1)`` to the stored result. ``inplace``: the result
    overwrites ``x`` (same shape; ``up == 1``, stride 1).
    """
    n, cin, h, w = x.shape
    hv, wv = h * up, w * up
    if isinstance(conv, CubePadConv2d):
        sides, cube = tuple(conv.cube_sides), True
        mode = getattr(conv, "cube_padding_mode", "reference")
    else:
        sides, cube, mode = (_conv_sides(conv) if zero_sides is None else tuple(zero_sides)), False, "reference"
    left, right, top, bottom = sides
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    hp, wp = hv + top + bottom, wv + left + right
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    cout = conv.out_channels
    fmt = torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()) \
        else torch.contiguous_format
    if inplace:
        if up != 1 or (sh, sw) != (1, 1) or (cout, ho, wo) != (cin, h, w):
            raise ValueError("an in-place banded convolution must keep the shape of its input")
        out = x
    else:
        out = torch.empty((n, cout, ho, wo), dtype=x.dtype, device=x.device, memory_format=fmt)
    ring = _Ring(x, sides, mode, up, pre) if cube and any(sides) else None
    halo = dh * (kh - 1)
    # per output row: sh rows of padded input and of the pre/upsample temporary, one output row
    rows = cfg.rows(x.element_size() * n * (2 * cin * wp * sh + cout * wo))
    carry: Optional[Tensor] = None  # in place: the original rows [carry_start, o0) that were overwritten
    carry_start = 0

    def source(a: int, b: int, o0: int) -> Tensor:
        """Original rows [a, b) of x (in place: rows below o0 come from the carry)."""
        if not inplace or a >= o0 or carry is None:
            return x[:, :, a:b]
        parts = [carry[:, :, a - carry_start:min(b, o0) - carry_start]]
        if b > o0:
            parts.append(x[:, :, o0:b])
        return torch.cat(parts, dim=2)

    for o0 in range(0, ho, rows):
        o1 = min(o0 + rows, ho)
        p0, p1 = o0 * sh, (o1 - 1) * sh + halo + 1  # rows of the padded input (0 = the first padding row)
        band = torch.empty((n, cin, p1 - p0, wp), dtype=x.dtype, device=x.device, memory_format=fmt)
        a, b = max(p0 - top, 0), min(p1 - top, hv)  # rows of the (upsampled) map in this band
        if not cube:
            band.zero_()
        if b > a:
            sa, sb = a // up, (b - 1) // up + 1
            src = source(sa, sb, o0)
            src = pre(src) if pre is not None else src
            if up > 1:
                src = src.repeat_interleave(up, dim=2)[:, :, a - sa * up:b - sa * up].repeat_interleave(up, dim=3)
            band[:, :, a + top - p0:b + top - p0, left:left + wv] = src
            del src
        if ring is not None:
            ring.fill(band, p0, p1)
        y = F.conv2d(band, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
        del band
        if residual is not None:
            y = residual(o0, o1, y)
        if inplace and top:
            keep = x[:, :, o0:o1].clone()
            carry = keep if carry is None else torch.cat((carry, keep), dim=2)
            start = max(o1 - top, carry_start)
            carry, carry_start = carry[:, :, start - carry_start:], start
        out[:, :, o0:o1] = y
        del y
    return out


# ----------------------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------------------
def _resnet(block: nn.Module, x: Tensor, cfg: TiledDecoding) -> Tensor:
    """diffusers ``ResnetBlock2D`` (no time embedding): ``(shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))) / s``.

    Alive: ``x`` and the hidden map, which the output overwrites.
    """
    hidden = _conv_bands(block.conv1, x, cfg, pre=_norm_stats(block.norm1, x, cfg))
    shortcut, scale = block.conv_shortcut, block.output_scale_factor

    def add_input(o0: int, o1: int, y: Tensor) -> Tensor:
        xs = x[:, :, o0:o1]
        if shortcut is not None:
            xs = shortcut(xs)
        return (xs + y) / scale

    return _conv_bands(block.conv2, hidden, cfg, pre=_norm_stats(block.norm2, hidden, cfg), residual=add_input,
                       inplace=True)


def _mid_block(mid: nn.Module, x: Tensor, cfg: TiledDecoding) -> Tensor:
    """diffusers ``UNetMidBlock2D``: ResNet blocks in bands; its attention (joint over the six faces, at the latent
    resolution: small) runs as usual."""
    x = _resnet(mid.resnets[0], x, cfg)
    for attn, res in zip(mid.attentions, mid.resnets[1:]):
        if attn is not None:
            x = attn(x, temb=None)
        x = _resnet(res, x, cfg)
    return x


def _decode_panorama(vae: nn.Module, z: Tensor, cfg: TiledDecoding) -> Tensor:
    """One panorama's six faces of (unscaled) latents ``[6, c, h, w]`` -> decoded ``[6, 3, F, F]``."""
    dec = vae.decoder
    if getattr(vae, "post_quant_conv", None) is not None:
        z = vae.post_quant_conv(z)
    x = _conv_bands(dec.conv_in, z, cfg)
    del z
    x = _mid_block(dec.mid_block, x, cfg)
    for block in dec.up_blocks:
        for res in block.resnets:
            x = _resnet(res, x, cfg)
        for up in block.upsamplers or []:
            x = _conv_bands(up.conv, x, cfg, up=2)
    return _conv_bands(dec.conv_out, x, cfg, pre=_norm_stats(dec.conv_norm_out, x, cfg))


def _downsample(down: nn.Module, x: Tensor, cfg: TiledDecoding) -> Tensor:
    """diffusers ``Downsample2D`` (a stride-2 convolution) in bands; its ``(0, 1, 0, 1)`` zero padding (``padding=0``)
    is applied per band (or, for a cube-padded convolution, its one-sided cube padding), never to the whole map."""
    conv = down.conv
    zero_sides = (0, 1, 0, 1) if down.padding == 0 and not isinstance(conv, CubePadConv2d) else None
    return _conv_bands(conv, x, cfg, zero_sides=zero_sides)


def _encode_panorama(vae: nn.Module, x: Tensor, cfg: TiledDecoding) -> Tensor:
    """One panorama's six RGB faces ``[6, 3, F, F]`` -> the encoder's moments ``[6, 2c, F/s, F/s]`` (after
    ``quant_conv``), as ``vae.encode(x).latent_dist.parameters``."""
    enc = vae.encoder
    h = _conv_bands(enc.conv_in, x, cfg)
    for block in enc.down_blocks:
        for res in block.resnets:
            h = _resnet(res, h, cfg)
        for down in block.downsamplers or []:
            h = _downsample(down, h, cfg)
    h = _mid_block(enc.mid_block, h, cfg)
    h = _conv_bands(enc.conv_out, h, cfg, pre=_norm_stats(enc.conv_norm_out, h, cfg))
    if getattr(vae, "quant_conv", None) is not None:
        h = vae.quant_conv(h)
    return h


@torch.no_grad()
def tiled_encode(vae: nn.Module, x: Tensor, cfg: Optional[TiledDecoding] = None) -> Tensor:
    """The moments of ``vae.encode(x)`` (``latent_dist.parameters``: mean and log-variance, ``[B*6, 2c, h, w]``) of
    RGB faces ``x`` ``[B*6, 3, F, F]`` with bounded memory.

    The same function as the untiled encoder up to float rounding, by the scheme of the module docstring (stride-2
    downsampling convolutions read two padded rows per output row); panoramas are encoded one after the other.
    Inference only (runs under ``torch.no_grad``). ``DiagonalGaussianDistribution(moments).mode()`` is the latent.

    Raises:
        ValueError: a batch that is not whole panoramas, or an encoder layout :func:`check_tiled_encoding_support`
            refuses.
    """
    check_tiled_encoding_support(vae)
    return _per_panorama(_encode_panorama, vae, x, cfg or TiledDecoding(), "tiled encoding needs faces [B*6, C, F, F]")


def _per_panorama(run: Callable[[nn.Module, Tensor, TiledDecoding], Tensor], vae: nn.Module, x: Tensor,
                  cfg: TiledDecoding, what: str) -> Tensor:
    """``run`` on each panorama's six faces of ``x`` ``[B*6, ...]`` in turn, concatenated."""
    if x.dim() != 4 or x.shape[0] % FACES:
        raise ValueError(f"{what} of whole panoramas, got {tuple(x.shape)}")
    outs = [run(vae, x[i:i + FACES], cfg) for i in range(0, x.shape[0], FACES)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


@torch.no_grad()
def tiled_decode(vae: nn.Module, z: Tensor, cfg: Optional[TiledDecoding] = None) -> Tensor:
    """``vae.decode(z)`` of latents ``[B*6, c, h, w]`` (already divided by the scaling factor) with bounded memory.

    The same function as the untiled decoder (module docstring), up to float rounding; panoramas are decoded one
    after the other. Inference only (runs under ``torch.no_grad``). Returns ``[B*6, 3, F, F]`` in the latents'
    dtype and memory format.

    Raises:
        ValueError: a batch that is not whole panoramas, or a decoder layout :func:`check_tiled_decoding_support`
            refuses.
    """
    check_tiled_decoding_support(vae)
    return _per_panorama(_decode_panorama, vae, z, cfg or TiledDecoding(), "tiled decoding needs latents [B*6, c, h, w]")
