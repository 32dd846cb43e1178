"""Cube padding: pad every cube face with the pixels of its neighbouring faces.

A face batch ``[N*6, C, F, F]`` (faces F, R, B, L, U, D of each panorama, consecutive) is padded so
that every padded pixel holds the neighbour-face pixel that lies next to it when the cube is folded:
padded row ``-k`` above face f is the k-th row of the neighbour counted from the shared edge, turned
as the unfolded cube requires. Corner pixels (outside both ranges) are the mean of the two adjacent
padded values (the one straight above/below the face's corner column and the one straight beside its
corner row). The whole padding is one precomputed index gather (small faces: the whole padded tensor;
large faces: a strided interior copy plus a gather of the border), plus a small gather for the corner
means, with the index tensors cached per (face size, sides, channels, device): no loop over faces.

The adjacency is derived geometrically from the face frames of :mod:`pager.geometry.cubemap`. Two modes:

``mode="reference"`` (default; what the released checkpoints were trained with)
    Each face is read as a grid of ``F x F`` cells, so padded row ``-d`` holds the neighbour's row ``d - 1``
    counted from the shared edge (its border row first). For ``pad=1`` this equals pytorch360convert's
    ``pad_cube_faces`` and the reference's table. With our edge-to-edge face grid (face pixel ``k`` at
    ``-1/2 + k/(F-1)``, see :mod:`pager.geometry`) the border rows of two neighbouring faces are the *same*
    3-D points, so this duplicates the shared edge: a stencil at a border pixel sees the positions
    ``(-1, 0, 0)`` on one face and ``(0, 0, +1)`` on the other, and the two faces compute different values
    for the same edge points (a visible step along face borders once stitched to ERP).
``mode="geometric"``
    Padded row ``-d`` holds the neighbour's row ``d`` counted from the shared edge (the shared edge row is
    skipped): the padded pixel at distance ``d`` pixels beyond the edge holds the neighbour sample at
    distance ``d`` from the edge, the exact continuation of the edge-to-edge grid over the folded cube.
    A symmetric stencil at a shared edge point then sees the same 3-D samples on both faces. A face has
    only ``F - 1`` rows beyond its shared edge: when a side exceeds that (degenerate tiny faces, e.g.
    a 1x1 latent face of an 8-pixel input), the reference table is used for that call instead.

Corners (outside both ranges) are in both modes the mean of the padded value straight above/below the
face's corner column and the one straight beside its corner row. In geometric mode both lie on the edge
shared by the two neighbouring faces (the edge leaving the cube corner), at distances ``d_row`` and
``d_col`` from the corner; for the diagonal ``d_row == d_col == d`` they are two samples of the same 3-D
point, which is where the diagonal direction projects (gnomonically, to first order in ``d/F``), so the
corner value is consistent, not a blend of unrelated pixels.

:class:`CubePadConv2d` and :func:`convert_to_cube_padding` turn the padded convolutions of any model
(diffusers UNet2DConditionModel / AutoencoderKL included) into cube-padded ones that share the same
Parameters, so ``state_dict()`` keys and values are unchanged.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from pager.geometry.caching import cached_tensors
import torch.nn as nn
import torch.nn.functional as F

from pager.geometry.cubemap import _FACE_FRAMES
from pager.geometry.sphere import _normalize_device

logger = logging.getLogger(__name__)

__all__ = [
    "CUBE_PADDING_MODES",
    "cube_pad",
    "cube_pad_asymmetric",
    "cube_pad_sources",
    "CubePadConv2d",
    "convert_to_cube_padding",
    "cube_padding_enabled",
    "cube_padding_mode",
]

#: ``"reference"``: the released checkpoints' padding (duplicates the shared edge row);
#: ``"geometric"``: the geometric continuation of the edge-to-edge face grid (skips it).
CUBE_PADDING_MODES: Tuple[str, ...] = ("reference", "geometric")

Sides = Tuple[int, int, int, int]  # (left, right, top, bottom), like F.pad's (l, r, t, b)


def _check_mode(mode: str) -> str:
    if mode not in CUBE_PADDING_MODES:
        raise ValueError(f"cube padding mode must be one of {CUBE_PADDING_MODES}, got {mode!r}")
    return mode


def _source_of(
    face: int, rows: torch.Tensor, cols: torch.Tensor, fs: int, mode: str = "reference"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold padded positions (exactly one of row/col outside [0, F)) of ``face`` onto the neighbour.

    ``mode="reference"`` reads faces as ``F x F`` cells (pixel k centred at ``-1/2 + (k+1/2)/F``);
    ``"geometric"`` uses the edge-to-edge sample grid (pixel k at ``-1/2 + k/(F-1)``), so that the
    shared edge row maps onto itself and padded row ``-d`` onto the neighbour's row ``d``.
    Returns (source face, source flat pixel index) as long tensors.
    """
    frames = _FACE_FRAMES
    n, r, u = frames[face]
    if mode == "geometric":
        step, off = 1.0 / (fs - 1), 0.0
    else:
        step, off = 1.0 / fs, 0.5
    a = -0.5 + (cols.double() + off) * step
    b = 0.5 - (rows.double() + off) * step
    # edge point (clamped into the face) and the overshoot beyond it
    a_edge, b_edge = a.clamp(-0.5, 0.5), b.clamp(-0.5, 0.5)
    over = (a - a_edge).abs() + (b - b_edge).abs()
    pts = 0.5 * n + a_edge[:, None] * r + b_edge[:, None] * u - over[:, None] * n  # [K, 3], on the neighbour
    normals = frames[:, 0]  # [6, 3]
    # the neighbour face is the one the overshoot direction points to
    out_dir = (a - a_edge)[:, None] * r + (b - b_edge)[:, None] * u
    src_face = (out_dir @ normals.T).argmax(dim=1)
    rs, us = frames[src_face, 1], frames[src_face, 2]
    a2 = (pts * rs).sum(1)
    b2 = (pts * us).sum(1)
    col2 = torch.round((a2 + 0.5) / step - off).long()
    row2 = torch.round((0.5 - b2) / step - off).long()
    if bool(((col2 < 0) | (col2 >= fs) | (row2 < 0) | (row2 >= fs)).any()):  # pragma: no cover - geometry bug guard
        raise RuntimeError("cube padding table: folded position outside the neighbour face")
    return src_face, row2 * fs + col2


@cached_tensors(maxsize=64)
def _pad_table(fs: int, sides: Sides, mode: str = "reference"):
    """Channel-independent table of the padded pixels of one panorama's 6 faces.

    Returns (dst_face, dst_pixel, src_face, src_pixel) for edge pixels and
    (dst_face, dst_pixel, src_face_a, src_pixel_a, src_face_b, src_pixel_b) for corner pixels, where
    pixels are flat indices in the padded face (dst) or the unpadded face (src).
    """
    left, right, top, bottom = sides
    hp, wp = fs + top + bottom, fs + left + right
    rr, cc = torch.meshgrid(torch.arange(hp) - top, torch.arange(wp) - left, indexing="ij")
    rr, cc = rr.reshape(-1), cc.reshape(-1)
    row_out = (rr < 0) | (rr >= fs)
    col_out = (cc < 0) | (cc >= fs)
    edge = row_out ^ col_out
    corner = row_out & col_out
    dst_pix_all = torch.arange(hp * wp)
    er, ec, e_dst = rr[edge], cc[edge], dst_pix_all[edge]
    has_corners = bool(corner.any())
    cr, ccn, c_dst = rr[corner], cc[corner], dst_pix_all[corner]
    e_lists = [[], [], [], []]
    c_lists = [[], [], [], [], [], []]
    for f in range(6):  # table construction only (cached), not the hot path
        sf, sp = _source_of(f, er, ec, fs, mode)
        e_lists[0].append(torch.full_like(sf, f))
        e_lists[1].append(e_dst)
        e_lists[2].append(sf)
        e_lists[3].append(sp)
        if has_corners:
            # value straight above/below (same row, column clamped into the face) and straight beside
            sfa, spa = _source_of(f, cr, ccn.clamp(0, fs - 1), fs, mode)
            sfb, spb = _source_of(f, cr.clamp(0, fs - 1), ccn, fs, mode)
            c_lists[0].append(torch.full_like(sfa, f))
            c_lists[1].append(c_dst)
            c_lists[2].append(sfa)
            c_lists[3].append(spa)
            c_lists[4].append(sfb)
            c_lists[5].append(spb)
    edges = tuple(torch.cat(x) for x in e_lists)
    corners = tuple(torch.cat(x) for x in c_lists) if c_lists[0] else None
    return edges, corners


# Faces up to this size are padded by one gather that also moves the interior (fewer, larger ops win on
# small maps); larger faces copy the interior with a strided copy and gather only the border.
_FULL_GATHER_MAX_FACE = 32


@cached_tensors(maxsize=256)
def _pad_index_one(fs: int, sides: Sides, channels: int, mode: str = "reference"):
    """Flat (long, CPU) gather/scatter indices over one panorama ``[6*C*F*F] -> [6*C*Hp*Wp]``."""
    left, right, top, bottom = sides
    hp, wp = fs + top + bottom, fs + left + right
    src_stride_f, dst_stride_f = channels * fs * fs, channels * hp * wp
    ch = torch.arange(channels).view(channels, 1)

    def flat(face, pix, stride_f, plane):
        return (face.view(1, -1) * stride_f + ch * plane + pix.view(1, -1)).reshape(-1)

    edges, corners = _pad_table(fs, sides, mode)
    df, dp, sf, sp = edges
    e_dst = flat(df, dp, dst_stride_f, hp * wp)
    e_src = flat(sf, sp, src_stride_f, fs * fs)
    out = {}
    if corners is not None:
        cf, cp, fa, pa, fb, pb = corners
        out["c_dst"] = flat(cf, cp, dst_stride_f, hp * wp)
        out["c_src_a"] = flat(fa, pa, src_stride_f, fs * fs)
        out["c_src_b"] = flat(fb, pb, src_stride_f, fs * fs)
    if fs <= _FULL_GATHER_MAX_FACE:
        # one index for the whole padded output: interior pixels map to themselves, corners to
        # source a (overwritten by the mean afterwards)
        full = torch.empty(6 * channels * hp * wp, dtype=torch.long)
        rr, cc = torch.meshgrid(torch.arange(fs), torch.arange(fs), indexing="ij")
        faces = torch.arange(6).repeat_interleave(fs * fs)
        inner_dst = flat(faces, ((rr + top) * wp + cc + left).reshape(-1).repeat(6), dst_stride_f, hp * wp)
        inner_src = flat(faces, (rr * fs + cc).reshape(-1).repeat(6), src_stride_f, fs * fs)
        full[inner_dst] = inner_src
        full[e_dst] = e_src
        if corners is not None:
            full[out["c_dst"]] = out["c_src_a"]
        out["full"] = full
    else:
        out["e_dst"] = e_dst
        out["e_src"] = e_src
    return out, src_stride_f * 6, dst_stride_f * 6


@cached_tensors(maxsize=256)
def _pad_index(fs: int, sides: Sides, channels: int, n: int, device: torch.device, mode: str = "reference"):
    """1-D indices over a whole batch of ``n`` panoramas (flat input / output), on ``device``; int32
    where it fits (1-D ``index_select`` with them is the fastest gather on the CPU)."""
    one, src_size, dst_size = _pad_index_one(fs, sides, channels, mode)
    src_off = (torch.arange(n) * src_size).view(n, 1)
    dst_off = (torch.arange(n) * dst_size).view(n, 1)
    dtype = torch.int32 if max(n * src_size, n * dst_size) < 2**31 else torch.long
    out = {}
    for key, val in one.items():
        off = dst_off if key in ("c_dst", "e_dst") else src_off
        if key == "full":
            off = src_off  # values index the input; positions follow the output layout
        out[key] = (off + val.view(1, -1)).reshape(-1)
    if "c_src_a" in out:
        # both sources of every corner in one index: [a (all corners), b (all corners)]
        out["c_src_ab"] = torch.cat((out.pop("c_src_a"), out.pop("c_src_b")))
    # index_copy_ needs long indices; index_select takes int32
    return {k: v.to(torch.long if k.endswith("_dst") else dtype).to(device) for k, v in out.items()}


# torch.compile: dynamo must not trace the construction of the cached tables (it would rebuild them inside the
# compiled graph on every call); the look-up runs outside the graph (one graph break per padding).
_pad_index_eager = torch.compiler.disable(_pad_index, recursive=True)


def _indices(fs: int, sides: Sides, channels: int, n: int, device: torch.device, mode: str) -> Dict[str, torch.Tensor]:
    """:func:`_pad_index` (cached), also from compiled code."""
    if torch.compiler.is_compiling():
        return _pad_index_eager(fs, sides, channels, n, device, mode)
    return _pad_index(fs, sides, channels, n, device, mode)


def _as_sides(pad: Optional[int], sides: Optional[Sequence[int]]) -> Sides:
    """``sides`` (left, right, top, bottom) if given, else ``pad`` on all four sides."""
    if sides is None:
        if pad is None:
            raise ValueError("cube_pad needs pad or sides")
        sides = (pad, pad, pad, pad)
    sd = tuple(int(s) for s in sides)
    if len(sd) != 4:
        raise ValueError(f"sides must be (left, right, top, bottom), got {tuple(sides)!r}")
    return sd  # type: ignore[return-value]


def cube_pad(
    faces: torch.Tensor, pad: Optional[int] = 1, sides: Optional[Sequence[int]] = None, mode: str = "reference"
) -> torch.Tensor:
    """Pad every cube face with its neighbours' pixels: ``[N*6, C, F, F] -> [N*6, C, F+t+b, F+l+r]``.

    ``pad`` pads all four sides; ``sides=(left, right, top, bottom)``, when given, overrides it and pads
    each side separately (e.g. ``(0, 1, 0, 1)`` before a stride-2 convolution with padding 0). Every
    side must lie in ``[0, F]``; in geometric mode, sides beyond ``F-1`` (tiny faces) use the reference
    table for the whole call.
    ``mode``: ``"reference"`` (released checkpoints: padded row ``-d`` is the neighbour's row ``d-1`` from
    the shared edge) or ``"geometric"`` (the neighbour's row ``d``: the continuation of the edge-to-edge
    grid); see the module docstring.
    Faces of each panorama are consecutive in the order F, R, B, L, U, D. Differentiable; float dtypes.
    """
    _check_mode(mode)
    if not isinstance(faces, torch.Tensor) or faces.dim() != 4:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces must be a tensor [N*6, C, F, F], got {shape}")
    n6, c, h, w = faces.shape
    if n6 % 6 != 0 or h != w:
        raise ValueError(f"faces must be [N*6, C, F, F] (batch a multiple of 6, square faces), got {tuple(faces.shape)}")
    sd = _as_sides(pad, sides)
    if any(s < 0 or s > h for s in sd):
        raise ValueError(f"cube padding sides must lie in [0, face size {h}], got {sd}")
    mode = _effective_mode(h, sd, mode)  # the neighbour has only F-1 rows beyond the shared edge (module docstring)
    if not faces.dtype.is_floating_point:
        raise ValueError(f"cube_pad needs a floating point tensor, got {faces.dtype}")
    if sd == (0, 0, 0, 0):
        return faces
    if torch.compiler.is_compiling() and not (torch.is_grad_enabled() and faces.requires_grad):
        # one opaque operator in the compiled graph instead of a graph break per padding (whose resumed frames
        # are re-compiled for every layer shape)
        return torch.ops.pager.cube_pad(faces, list(sd), mode)
    return _cube_pad_eager(faces, sd, mode)


def _cube_pad_eager(faces: torch.Tensor, sd: Sides, mode: str) -> torch.Tensor:
    """:func:`cube_pad` of validated arguments (sides not all zero), in eager mode."""
    n6, c, h, w = faces.shape
    left, right, top, bottom = sd
    n = n6 // 6
    hp, wp = h + top + bottom, w + left + right
    if c > 1 and faces.is_contiguous(memory_format=torch.channels_last) and not faces.is_contiguous():
        return _cube_pad_channels_last(faces, sd, mode)
    idx = _indices(h, sd, c, n, _normalize_device(faces.device), mode)
    xf = faces.contiguous().view(-1)
    if "full" in idx:
        of = xf.index_select(0, idx["full"])
        out = of.view(n6, c, hp, wp)
    else:
        out = faces.new_empty((n6, c, hp, wp))
        out[:, :, top : top + h, left : left + w] = faces
        of = out.view(-1)
        of.index_copy_(0, idx["e_dst"], xf.index_select(0, idx["e_src"]))
    if "c_dst" in idx:
        corner = xf.index_select(0, idx["c_src_ab"]).view(2, -1).mean(dim=0)
        of.index_copy_(0, idx["c_dst"], corner)
    return out


@torch.library.custom_op("pager::cube_pad", mutates_args=())
def _cube_pad_op(faces: torch.Tensor, sides: List[int], mode: str) -> torch.Tensor:
    """:func:`cube_pad` as a custom operator, for ``torch.compile``'d inference (traced without graph breaks)."""
    return _cube_pad_eager(faces, tuple(sides), mode)  # type: ignore[arg-type]


@_cube_pad_op.register_fake
def _cube_pad_fake(faces: torch.Tensor, sides: List[int], mode: str) -> torch.Tensor:
    n6, c, h, w = faces.shape
    left, right, top, bottom = sides
    channels_last = c > 1 and faces.is_contiguous(memory_format=torch.channels_last) and not faces.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return faces.new_empty((n6, c, h + top + bottom, w + left + right)).contiguous(memory_format=fmt)


def _effective_mode(fs: int, sd: Sides, mode: str) -> str:
    """The table :func:`cube_pad` uses: geometric sides beyond ``F - 1`` fall back to the reference table."""
    return "reference" if mode == "geometric" and max(sd) > fs - 1 else mode


@cached_tensors(maxsize=64)
def cube_pad_sources(fs: int, sides: Sequence[int], mode: str = "reference") -> Dict[str, torch.Tensor]:
    """Where every padded pixel of :func:`cube_pad` comes from, as (face, row, col) triples (long, CPU).

    For faces of size ``fs`` padded by ``sides = (left, right, top, bottom)`` in ``mode`` (with the same
    geometric-to-reference fallback for tiny faces as :func:`cube_pad`) returns

    - ``"edge_dst"`` ``[K, 3]``: (face, row, col) of the padded pixels beside exactly one side of the face, in
      the padded face's coordinates (rows ``0 .. fs+top+bottom-1``, the face's own rows start at ``top``);
    - ``"edge_src"`` ``[K, 3]``: the (face, row, col) of the unpadded faces whose value each one copies;
    - ``"corner_dst"``, ``"corner_src_a"``, ``"corner_src_b"`` ``[Kc, 3]``: corner pixels and the two pixels
      whose mean they hold (``Kc = 0`` when no two adjacent sides are padded).

    Faces are indices into one panorama's F, R, B, L, U, D. Entries are sorted by destination row, so that a
    band of padded rows can be filled from a contiguous slice (``pager.model.tiled_decoding`` pads row bands
    of a tensor this way, without building the whole padded tensor). ``cube_pad(x)`` equals: interior copied,
    ``out[f, :, r, c] = x[f', :, r', c']`` for every edge entry, and the mean of the two sources at corners.
    """
    _check_mode(mode)
    sd = _as_sides(None, sides)
    if fs < 1 or any(s < 0 or s > fs for s in sd):
        raise ValueError(f"cube padding sides must lie in [0, face size {fs}], got {sd}")
    left, right, top, bottom = sd
    wp = fs + left + right
    edges, corners = _pad_table(fs, sd, _effective_mode(fs, sd, mode))

    def triple(face: torch.Tensor, pix: torch.Tensor, width: int) -> torch.Tensor:
        return torch.stack((face, pix // width, pix % width), dim=1)

    df, dp, sf, sp = edges
    out = {"edge_dst": triple(df, dp, wp), "edge_src": triple(sf, sp, fs)}
    if corners is not None:
        cf, cp, fa, pa, fb, pb = corners
        out.update(corner_dst=triple(cf, cp, wp), corner_src_a=triple(fa, pa, fs), corner_src_b=triple(fb, pb, fs))
    else:
        empty = torch.zeros((0, 3), dtype=torch.long)
        out.update(corner_dst=empty, corner_src_a=empty, corner_src_b=empty)
    for kind, keys in (("edge", ("edge_dst", "edge_src")), ("corner", ("corner_dst", "corner_src_a", "corner_src_b"))):
        order = torch.sort(out[f"{kind}_dst"][:, 1], stable=True).indices
        for key in keys:
            out[key] = out[key][order].contiguous()
    return out


def _cube_pad_channels_last(faces: torch.Tensor, sd: Sides, mode: str) -> torch.Tensor:
    """:func:`cube_pad` of a channels_last batch: the same tables over pixels, moving whole channel vectors.

    In memory a channels_last ``[N*6, C, F, F]`` is ``[N*6*F*F, C]``; the single-channel index tables of
    :func:`_pad_index` address its rows, so every gather copies ``C`` contiguous values at once. Returns a
    channels_last tensor equal to the contiguous path's result.
    """
    n6, c, h, w = faces.shape
    left, right, top, bottom = sd
    hp, wp = h + top + bottom, w + left + right
    idx = _indices(h, sd, 1, n6 // 6, _normalize_device(faces.device), mode)
    rows = faces.permute(0, 2, 3, 1).reshape(n6 * h * w, c)  # a view for channels_last input
    if "full" in idx:
        out_rows = rows.index_select(0, idx["full"])
    else:
        out_rows = faces.new_empty((n6 * hp * wp, c))
        out_rows.view(n6, hp, wp, c)[:, top : top + h, left : left + w] = rows.view(n6, h, w, c)
        out_rows.index_copy_(0, idx["e_dst"], rows.index_select(0, idx["e_src"]))
    if "c_dst" in idx:
        corner = rows.index_select(0, idx["c_src_ab"]).view(2, -1, c).mean(dim=0)
        out_rows.index_copy_(0, idx["c_dst"], corner)
    return out_rows.view(n6, hp, wp, c).permute(0, 3, 1, 2)


def cube_pad_asymmetric(faces: torch.Tensor, sides: Sequence[int], mode: str = "reference") -> torch.Tensor:
    """:func:`cube_pad` with per-side amounts ``(left, right, top, bottom)``."""
    return cube_pad(faces, pad=None, sides=sides, mode=mode)


# --------------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------------
def _conv_sides(conv: nn.Conv2d) -> Sides:
    """(left, right, top, bottom) padding of a Conv2d, 'same'/'valid' resolved."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        # 'same' (stride 1): PyTorch puts the odd extra pixel on the right/bottom
        th = conv.dilation[0] * (conv.kernel_size[0] - 1)
        tw = conv.dilation[1] * (conv.kernel_size[1] - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


class CubePadConv2d(nn.Conv2d):
    """A Conv2d over cube faces ``[N*6, C, F, F]`` that cube-pads its input, then convolves with padding 0.

    Built by :meth:`from_conv`, it shares the ``weight``/``bias`` Parameter objects of the original
    convolution (no copy), so a parent model's ``state_dict()`` is unchanged.

    ``input_zero_pad=(l, r, t, b)`` declares that the caller already zero-padded the input by that much
    (diffusers' ``Downsample2D`` with ``padding=0`` pads ``(0, 1, 0, 1)`` before its convolution); that
    zero border is cropped and replaced by cube padding.

    ``cube_padding_mode`` (``"reference"`` or ``"geometric"``, see :func:`cube_pad`) may be changed later
    (e.g. by :func:`convert_to_cube_padding`); it only selects the padding table.
    """

    cube_sides: Sides
    input_zero_pad: Optional[Sides]
    cube_padding_mode: str

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        sides: Optional[Sequence[int]] = None,
        input_zero_pad: Optional[Sequence[int]] = None,
        mode: str = "reference",
    ) -> "CubePadConv2d":
        """Wrap ``conv`` (sharing its Parameters); ``sides`` default to its own padding."""
        _check_mode(mode)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        sd = _conv_sides(conv) if sides is None else tuple(int(s) for s in sides)
        if len(sd) != 4 or any(s < 0 for s in sd):
            raise ValueError(f"sides must be 4 non-negative ints (left, right, top, bottom), got {sd!r}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",  # no allocation / initialisation: the Parameters are replaced below
        )
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        new.train(conv.training)
        new.cube_sides = sd  # type: ignore[assignment]
        new.input_zero_pad = tuple(int(s) for s in input_zero_pad) if input_zero_pad is not None else None  # type: ignore[assignment]
        new.original_padding = conv.padding
        new.cube_padding_mode = mode
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.input_zero_pad is not None:
            left, right, top, bottom = self.input_zero_pad
            x = x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]
        x = cube_pad(x, pad=None, sides=self.cube_sides, mode=getattr(self, "cube_padding_mode", "reference"))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:  # noqa: D102
        s = super().extra_repr() + f", cube_sides={self.cube_sides}, mode={getattr(self, 'cube_padding_mode', 'reference')!r}"
        if self.input_zero_pad is not None:
            s += f", input_zero_pad={self.input_zero_pad}"
        return s


def _is_zero_pad_downsample(parent: nn.Module, child: nn.Module) -> bool:
    """diffusers' Downsample2D(use_conv=True, padding=0): F.pad (0, 1, 0, 1) zeros, then a stride-2 conv."""
    return (
        type(parent).__name__ == "Downsample2D"
        and getattr(parent, "use_conv", False)
        and getattr(parent, "padding", None) == 0
        and getattr(parent, "conv", None) is child
    )


def convert_to_cube_padding(module: nn.Module, mode: str = "reference") -> nn.Module:
    """Swap, in place, every padded ``nn.Conv2d`` of ``module`` for a :class:`CubePadConv2d` sharing its
    Parameters (``state_dict()`` keys unchanged), plus the zero-padded stride-2 convolution of diffusers'
    ``Downsample2D(padding=0)`` (one-sided cube padding right/bottom). Unpadded convolutions (1x1) are left
    alone. Idempotent: already converted layers are kept (same objects) and only get their
    ``cube_padding_mode`` set to ``mode`` (``"reference"`` or ``"geometric"``, see :func:`cube_pad`).
    Returns ``module`` (or, if ``module`` itself is a padded Conv2d, its replacement).
    """
    _check_mode(mode)
    if isinstance(module, CubePadConv2d):
        module.cube_padding_mode = mode
        return module
    if isinstance(module, nn.Conv2d):
        if _conv_sides(module) != (0, 0, 0, 0):
            return CubePadConv2d.from_conv(module, mode=mode)
        return module
    replaced: Dict[int, nn.Module] = {}
    count = updated = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, CubePadConv2d):
                if getattr(child, "cube_padding_mode", "reference") != mode:
                    updated += 1
                child.cube_padding_mode = mode
                continue
            if child is None or not isinstance(child, nn.Conv2d):
                continue
            new = replaced.get(id(child))
            if new is None:
                if _is_zero_pad_downsample(parent, child):
                    new = CubePadConv2d.from_conv(child, sides=(0, 1, 0, 1), input_zero_pad=(0, 1, 0, 1), mode=mode)
                elif _conv_sides(child) != (0, 0, 0, 0):
                    new = CubePadConv2d.from_conv(child, mode=mode)
                else:
                    continue
                replaced[id(child)] = new
                count += 1
            setattr(parent, name, new)  # also re-points aliases (Downsample2D's conv / Conv2d_0)
    logger.debug("convert_to_cube_padding(mode=%s): %d convolutions converted, %d switched mode", mode, count, updated)
    return module


def cube_padding_enabled(module: nn.Module) -> bool:
    """True if ``module`` is or contains a :class:`CubePadConv2d`."""
    return any(isinstance(m, CubePadConv2d) for m in module.modules())


def cube_padding_mode(module: nn.Module) -> Optional[str]:
    """The padding mode of the :class:`CubePadConv2d` layers of ``module`` (``"reference"`` or
    ``"geometric"``), None if it has none; ValueError if its layers use different modes."""
    modes = {getattr(m, "cube_padding_mode", "reference") for m in module.modules() if isinstance(m, CubePadConv2d)}
    if len(modes) > 1:
        raise ValueError(f"module mixes cube padding modes {sorted(modes)}; convert it again with one mode")
    return modes.pop() if modes else None
