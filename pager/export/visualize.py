"""Turn predictions into pictures: depth colormaps with a metre colour bar, normals as RGB, error maps, mosaics.

Every function takes a ``torch.Tensor`` or a ``numpy.ndarray`` and returns ``uint8`` images ``[H, W, 3]``
(``[B, H, W, 3]`` for batched input), ready for :func:`pager.export.files.save_image`.

Colour conventions
------------------
* Depth: matplotlib colormap (``Spectral`` by default, like the reference's example images); the
  nearest valid depth maps to the low end of the colormap (red for Spectral) and the ``percentile``-th
  percentile of the valid depths to the high end (blue); farther pixels are clipped to it.
* Normals: ``rgb = round((n + 1) / 2 * 255)`` per component of the unit normal in our world frame
  (see :mod:`pager.geometry`): red = x (forward), green = y (up), blue = z (right).
* Invalid pixels (non-finite, ``mask == False``) get ``invalid_color`` (grey by default).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

INVALID_GREY: Tuple[int, int, int] = (128, 128, 128)


def _row_bands(shape: Tuple[int, ...]):
    from pager.export.files import _row_bands as bands

    return bands(shape)


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Detach a tensor to a float32/bool numpy array (any device, any float dtype)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.dtype == torch.bool:
            return x.numpy()
        return x.to(torch.float32).numpy()
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_:
            return x
        return x.astype(np.float32, copy=False)
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _mask_numpy(mask: Optional[ArrayLike], shape: Tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Boolean mask broadcastable to ``shape`` (None means all valid)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = _to_numpy(mask, name)
    m = m.astype(bool) if m.dtype != np.bool_ else m
    try:
        return np.broadcast_to(m, shape)
    except ValueError as exc:
        raise ValueError(f"{name} of shape {m.shape} does not match the image shape {shape}") from exc


def _get_cmap(cmap: str):
    import matplotlib

    try:
        return matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from exc


def _apply_cmap(values01: np.ndarray, valid: np.ndarray, cmap: str, invalid_color: Sequence[int]) -> np.ndarray:
    """Map values in [0, 1] through a colormap; invalid pixels get ``invalid_color``. Returns uint8 [..., 3]."""
    lut = (_get_cmap(cmap)(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    idx = np.clip(np.rint(np.nan_to_num(values01, nan=0.0) * 255.0), 0, 255).astype(np.intp)
    out = lut[idx]
    out[~valid] = np.asarray(invalid_color, dtype=np.uint8)
    return out


def depth_range(
    depth: ArrayLike, mask: Optional[ArrayLike] = None, percentile: float = 99.0
) -> Tuple[float, float]:
    """Colour range ``(vmin, vmax)`` in metres used by :func:`colorize_depth` for one ``[H, W]`` depth map.

    ``vmin`` is the smallest valid depth, ``vmax`` the ``percentile``-th percentile of the valid depths.
    Raises ``ValueError`` when no pixel is valid.
    """
    d = _to_numpy(depth, "depth")
    valid = np.isfinite(d) & _mask_numpy(mask, d.shape)
    if not valid.any():
        raise ValueError("depth has no valid (finite, unmasked) pixel to set a colour range")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    vals = d[valid]  # a copy: partitioned in place by the percentile
    vmin = float(vals.min())
    vmax = float(np.percentile(vals, percentile, overwrite_input=True))
    return vmin, vmax


def _normalise_depth(d: np.ndarray, vmin: float, vmax: float, inverse: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if inverse:
            # colour by inverse depth (disparity): near surfaces keep the contrast, far ones are compressed
            lo, hi = 1.0 / max(vmax, 1e-12), 1.0 / max(vmin, 1e-12)
            x = (hi - 1.0 / np.maximum(d, 1e-12)) / max(hi - lo, 1e-12)
        else:
            x = (d - vmin) / max(vmax - vmin, 1e-12)
    return np.clip(x, 0.0, 1.0)


def colorize_depth(
    depth: ArrayLike,
    mask: Optional[ArrayLike] = None,
    cmap: str = "Spectral",
    percentile: float = 99.0,
    inverse: bool = False,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    invalid_color: Sequence[int] = INVALID_GREY,
    colorbar: bool = False,
    colorbar_label: str = "depth [m]",
) -> np.ndarray:
    """Colour a depth map: ``[H, W]`` -> uint8 ``[H, W, 3]``; ``[B, H, W]`` -> ``[B, H, W, 3]``.

    Args:
        depth: range in metres (any positive unit works; the colour bar says metres).
        mask: bool, same shape (or broadcastable); ``False`` pixels and non-finite depths are drawn
            in ``invalid_color``.
        cmap: matplotlib colormap name; ``vmin`` (default: the nearest valid depth) maps to its low
            end, ``vmax`` (default: the ``percentile``-th percentile of the valid depths, per image)
            to its high end; values beyond are clipped.
        inverse: colour by inverse depth (disparity) instead of depth, which spends more colours on
            near surfaces; the low end of the colormap is still the nearest depth.
        colorbar: append a vertical colour bar with metre ticks on the right
            (see :func:`depth_colorbar`); the output is then wider than ``W``.
    """
    d = _to_numpy(depth, "depth")
    if d.ndim == 3:
        m = _mask_numpy(mask, d.shape)
        return np.stack(
            [
                colorize_depth(d[b], m[b], cmap, percentile, inverse, vmin, vmax, invalid_color, colorbar, colorbar_label)
                for b in range(d.shape[0])
            ]
        )
    if d.ndim != 2:
        raise ValueError(f"depth: expected [H, W] or [B, H, W], got shape {tuple(d.shape)}")
    valid = np.isfinite(d) & _mask_numpy(mask, d.shape)
    if inverse:
        valid &= d > 0
    if valid.any():
        lo, hi = depth_range(d, valid, percentile)
    else:
        logger.warning("colorize_depth: no valid pixel; drawing an all-invalid image")
        lo, hi = 0.0, 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-6)
    out = np.empty(d.shape + (3,), dtype=np.uint8)
    for r0, r1 in _row_bands(d.shape):  # float temporaries of one band of rows at a time
        out[r0:r1] = _apply_cmap(_normalise_depth(d[r0:r1], lo, hi, inverse), valid[r0:r1], cmap, invalid_color)
    if colorbar:
        bar = depth_colorbar(lo, hi, height=d.shape[0], cmap=cmap, inverse=inverse, label=colorbar_label)
        out = np.concatenate([out, bar], axis=1)
    return out


def depth_colorbar(
    vmin: float,
    vmax: float,
    height: int,
    cmap: str = "Spectral",
    inverse: bool = False,
    width: Optional[int] = None,
    label: str = "depth [m]",
) -> np.ndarray:
    """Render a vertical colour bar with tick labels in metres: uint8 ``[height, width, 3]``.

    Colours match :func:`colorize_depth` with the same ``vmin``, ``vmax``, ``cmap`` and ``inverse``
    (the nearest depth at the bottom of the bar). ``width`` defaults to a size that fits the labels.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if height < 16:
        raise ValueError(f"colour bar height must be at least 16 pixels, got {height}")
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax <= vmin:
        raise ValueError(f"colour bar range must be finite with vmax > vmin, got ({vmin}, {vmax})")
    if inverse and vmin <= 0:
        raise ValueError(f"inverse colour bar needs vmin > 0, got {vmin}")
    fontsize = float(np.clip(height / 22.0, 6.0, 14.0))
    width = int(width) if width is not None else int(max(48, round(fontsize * 7.5)))
    dpi = 100.0
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    pad_v = min(0.45, (fontsize * 0.9) / height)
    ax = fig.add_axes([0.08, pad_v, 0.22, 1.0 - 2 * pad_v])
    n = 256
    ramp = np.linspace(0.0, 1.0, n)[:, None]
    ax.imshow(ramp, cmap=_get_cmap(cmap), aspect="auto", origin="lower", extent=(0.0, 1.0, 0.0, 1.0))
    ax.set_xticks([])
    nbins = max(2, min(8, height // 40))
    if inverse:
        # nice metre values (1-2-5 series) spread evenly along the disparity axis
        exps = np.arange(np.floor(np.log10(vmin)) - 1, np.ceil(np.log10(vmax)) + 1)
        cand = np.unique((np.array([1.0, 2.0, 5.0])[None, :] * 10.0 ** exps[:, None]).ravel())
        cand = cand[(cand >= vmin - 1e-9) & (cand <= vmax + 1e-9)]
        kept: list = []
        for t in cand:
            p = float(_normalise_depth(np.array([t]), vmin, vmax, True)[0])
            if all(abs(p - q) >= 1.0 / (nbins + 1) for q in kept):
                kept.append(p)
        ticks_m = np.array([1.0 / (1.0 / vmin - p * (1.0 / vmin - 1.0 / vmax)) for p in kept])
        ticks_m = np.array([float(f"{t:.3g}") for t in ticks_m])
    else:
        ticks_m = matplotlib.ticker.MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
        ticks_m = ticks_m[(ticks_m >= vmin - 1e-9) & (ticks_m <= vmax + 1e-9)]
    pos = _normalise_depth(ticks_m, vmin, vmax, inverse)
    ax.yaxis.tick_right()
    ax.set_yticks(pos)
    ax.set_yticklabels([f"{t:g}" for t in ticks_m], fontsize=fontsize)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(label, fontsize=fontsize)
    ax.yaxis.set_label_position("right")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = np.ascontiguousarray(rgba[:, :, :3])
    if img.shape[0] != height or img.shape[1] != width:  # rounding of figure size in inches
        from PIL import Image

        img = np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))
    return img


def normals_to_rgb(
    normals: ArrayLike,
    mask: Optional[ArrayLike] = None,
    invalid_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Unit normals in our world frame -> uint8 RGB: ``[3, H, W]`` -> ``[H, W, 3]``, ``[B, 3, H, W]`` -> ``[B, H, W, 3]``.

    ``rgb = round((n + 1) / 2 * 255)``: red = x (forward), green = y (up), blue = z (right), so a
    floor (normal +y) is light green ``(128, 255, 128)`` and a wall straight ahead (normal -x) is
    ``(0, 128, 128)``. Channels-last ``[H, W, 3]`` input is accepted when unambiguous. Non-finite or
    zero-length normals and ``mask == False`` pixels get ``invalid_color`` (black by default).
    Components are clipped to [-1, 1] (not renormalised).
    """
    n = _to_numpy(normals, "normals")
    if n.ndim == 4:
        if n.shape[1] != 3:
            raise ValueError(f"normals: expected [B, 3, H, W], got shape {n.shape}")
        m = _mask_numpy(mask, (n.shape[0], n.shape[2], n.shape[3]))
        return np.stack([normals_to_rgb(n[b], m[b], invalid_color) for b in range(n.shape[0])])
    if n.ndim != 3:
        raise ValueError(f"normals: expected [3, H, W] or [B, 3, H, W], got shape {n.shape}")
    if n.shape[0] == 3:
        hwc = np.moveaxis(n, 0, -1)
    elif n.shape[-1] == 3:
        hwc = n
    else:
        raise ValueError(f"normals: expected 3 channels ([3, H, W] or [H, W, 3]), got shape {n.shape}")
    m = _mask_numpy(mask, hwc.shape[:2])
    rgb = np.empty(hwc.shape[:2] + (3,), dtype=np.uint8)
    for r0, r1 in _row_bands(hwc.shape):  # float temporaries of one band of rows at a time
        band = hwc[r0:r1]
        valid = np.isfinite(band).all(-1) & (np.abs(np.nan_to_num(band)).sum(-1) > 0) & m[r0:r1]
        out = np.rint((np.clip(np.nan_to_num(band), -1.0, 1.0) + 1.0) * 0.5 * 255.0).astype(np.uint8)
        out[~valid] = np.asarray(invalid_color, dtype=np.uint8)
        rgb[r0:r1] = out
    return rgb


def error_map(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    cmap: str = "RdBu_r",
    vmax: Optional[float] = None,
    percentile: float = 99.0,
    relative: bool = False,
    invalid_color: Sequence[int] = INVALID_GREY,
) -> np.ndarray:
    """Signed error ``pred - target`` (or ``(pred - target) / target`` with ``relative``) in a diverging colormap.

    ``[H, W]`` -> uint8 ``[H, W, 3]`` (``[B, H, W]`` -> ``[B, H, W, 3]``). Zero error is the centre of
    the colormap (white for ``RdBu_r``); over-estimates are red, under-estimates blue. The range is
    symmetric, ``[-vmax, vmax]``, with ``vmax`` defaulting to the ``percentile``-th percentile of
    ``|error|`` over valid pixels (non-finite ``pred``/``target``, ``mask == False``, and
    ``target <= 0`` for ``relative``).
    """
    p = _to_numpy(pred, "pred")
    t = _to_numpy(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"error_map: pred {p.shape} and target {t.shape} must have the same shape")
    if p.ndim == 3:
        m = _mask_numpy(mask, p.shape)
        return np.stack(
            [error_map(p[b], t[b], m[b], cmap, vmax, percentile, relative, invalid_color) for b in range(p.shape[0])]
        )
    if p.ndim != 2:
        raise ValueError(f"error_map: expected [H, W] or [B, H, W], got shape {p.shape}")
    valid = np.isfinite(p) & np.isfinite(t) & _mask_numpy(mask, p.shape)
    if relative:
        valid &= t > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        err = (p - t) / t if relative else p - t
    if vmax is None:
        vmax = float(np.percentile(np.abs(err[valid]), percentile)) if valid.any() else 1.0
    vmax = max(float(vmax), 1e-12)
    x = np.clip(0.5 + 0.5 * err / vmax, 0.0, 1.0)
    return _apply_cmap(x, valid, cmap, invalid_color)


def _as_rgb_uint8(img: ArrayLike, index: int) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first -> last
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"mosaic: image {index} must be [H, W], [H, W, C] or [C, H, W] with C in 1, 3, 4; got {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"mosaic: image {index} must be uint8 (colourise it first), got {a.dtype}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def mosaic(
    images: Sequence[ArrayLike],
    gap: int = 0,
    gap_color: Sequence[int] = (255, 255, 255),
    vertical: bool = False,
) -> np.ndarray:
    """Lay uint8 images side by side (e.g. RGB | depth | normals): ``[H, sum(W_i) + gaps, 3]``.

    Images whose height (width when ``vertical``) differs from the first one are resized to it,
    keeping their aspect ratio. Grayscale is repeated to RGB, alpha dropped.
    """
    from PIL import Image

    if len(images) == 0:
        raise ValueError("mosaic: no images given")
    arrays = [_as_rgb_uint8(im, i) for i, im in enumerate(images)]
    axis = 0 if vertical else 1
    ref = arrays[0].shape[1 - axis]
    parts = []
    for i, a in enumerate(arrays):
        if a.shape[1 - axis] != ref:
            h, w = a.shape[:2]
            size = (max(1, round(w * ref / h)), ref) if not vertical else (ref, max(1, round(h * ref / w)))
            a = np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))
        if i > 0 and gap > 0:
            shape = (ref, gap, 3) if not vertical else (gap, ref, 3)
            parts.append(np.broadcast_to(np.asarray(gap_color, dtype=np.uint8), shape))
        parts.append(a)
    return np.ascontiguousarray(np.concatenate(parts, axis=axis))
