"""Result files: 16-bit depth PNGs, ``.npz`` archives and 8-bit images, all written atomically.

16-bit depth PNG encoding
-------------------------
``value = round(depth_m * scale)`` stored as ``uint16``; ``0`` means *invalid* (masked, NaN or
non-positive after rounding is avoided: a valid depth never encodes to 0, it is raised to 1).
The default ``scale = 1000`` stores millimetres (the common convention of depth datasets), which
covers ``(0, 65.535]`` m in 1 mm steps; :func:`depth_png_scale` picks the finest of 1000, 500, 200, ...
that holds a given largest depth (``500`` for a model whose range ends at 75 m: 2 mm steps up to 131 m),
which is what the command lines use unless ``--depth_scale`` is given.
Depths above ``65535 / scale`` are clipped to 65535 with a warning. The scale is also written into
the PNG as the text chunk ``pager:depth_scale`` so :func:`load_depth_png16` can decode the file
without being told, and the unit as ``pager:depth_unit`` (``metres``, or ``relative`` for relative-depth
models, whose values are unit-free: then the steps are 1/scale of the model's relative unit).
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from pager.io_utils import atomic_write

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ArrayLike = Union[np.ndarray, torch.Tensor]

DEFAULT_DEPTH_SCALE = 1000.0
PNG_SCALE_KEY = "pager:depth_scale"
PNG_UNIT_KEY = "pager:depth_unit"
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


#: steps per depth unit that :func:`depth_png_scale` chooses from, finest first (1000: millimetres)
DEPTH_PNG_SCALES = (1000.0, 500.0, 200.0, 100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0)


def depth_png_scale(max_depth: float) -> float:
    """The finest scale of :data:`DEPTH_PNG_SCALES` at which depths up to ``max_depth`` fit a 16-bit PNG.

    That is the largest ``s`` in ``1000, 500, 200, 100, ..., 1`` with ``max_depth * s <= 65535`` (so
    ``round(depth * s)`` never clips), and ``65535 / max_depth`` beyond ``max_depth = 65535``. ``max_depth`` is in
    the depth's unit (metres, or the relative unit of a relative-depth model), e.g. a checkpoint's ``max_depth``.
    Raises ``ValueError`` unless ``max_depth`` is a positive finite number.
    """
    top = float(max_depth)
    if not (np.isfinite(top) and top > 0):
        raise ValueError(f"depth_png_scale: max_depth must be a positive finite number, got {max_depth!r}")
    for scale in DEPTH_PNG_SCALES:
        if top * scale <= 65535.0:
            return scale
    return 65535.0 / top


def check_depth_png_scale(scale: float, min_depth: float, max_depth: float, unit: str = "metres",
                          option: str = "--depth_scale") -> None:
    """Check a 16-bit PNG ``scale`` (steps per depth unit) against a checkpoint's depth range before any work.

    ``round(depth * scale)`` must give the smallest depth the checkpoint can predict, ``min_depth``, at least one
    step: below that, valid depths round to the invalid marker 0 (they are stored as 1 step instead) and the
    PNG holds a constant. ``scale`` 0.001 is the usual mistake (a dataset's "metres per step", the inverse
    convention: ``pager synth``'s ``meta.json``). Raises ``ValueError`` naming ``option``. A scale at which the
    checkpoint's ``max_depth`` exceeds 65535 steps only logs a warning (the deepest pixels will be clipped; a
    chosen trade-off). ``min_depth`` / ``max_depth`` are in the depth's unit (metres, or relative units).
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{option}: must be a positive number, got {scale}")
    name = "m" if unit == "metres" else " (relative depth units)" if unit == "relative" else ""
    if float(min_depth) * float(scale) < 1.0:
        raise ValueError(
            f"{option} {scale:g} stores the checkpoint's smallest depth {min_depth:g}{name} as {min_depth * scale:.3g} "
            f"of a 16-bit step (it must be at least 1, i.e. a scale >= {1.0 / min_depth:g}); the scale is in steps per "
            f"depth unit (1000: millimetres), not in depth units per step")
    if float(max_depth) * float(scale) > 65535.0:
        logger.warning("%s %g: depths above %.4g%s (65535 steps) will be clipped in the 16-bit PNGs (the checkpoint's "
                       "range ends at %g)", option, scale, 65535.0 / scale, name, max_depth)


#: pixels per band of rows in the per-pixel conversions of the writers (bounds their float64 temporaries)
BAND_PIXELS = 1 << 20


def _row_bands(shape, band_pixels: int = 0):
    """Row bands ``[(r0, r1), ...]`` of an image ``[H, W, ...]`` with about ``BAND_PIXELS`` pixels each."""
    h = int(shape[0])
    w = int(np.prod(shape[1:2])) if len(shape) > 1 else 1
    rows = max(1, int(band_pixels or BAND_PIXELS) // max(w, 1))
    return [(r, min(h, r + rows)) for r in range(0, h, rows)]


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.to(torch.float32)
        return x.numpy()
    return np.asarray(x)


def save_depth_png16(
    path: PathLike,
    depth_m: ArrayLike,
    scale: float = DEFAULT_DEPTH_SCALE,
    mask: Optional[ArrayLike] = None,
    unit: str = "metres",
) -> Path:
    """Write depth ``[H, W]`` (metres; ``[1, H, W]`` accepted) as a 16-bit PNG with ``value = round(depth * scale)``.

    ``unit`` is what the depth is in, ``"metres"`` (or ``"m"``, as ``PagerOutput.metadata[k]["depth_unit"]`` says
    it) or ``"relative"`` (a relative-depth model: unit-free, so the stored steps are 1/scale of that unit, not
    millimetres); it is written as the text chunk ``pager:depth_unit`` beside ``pager:depth_scale``. Pass the
    prediction's: the default is ``"metres"``.
    Invalid pixels (``mask == False``, NaN) are written as 0. Negative depths raise ``ValueError``;
    depths above ``65535 / scale`` (and ``+inf``) are clipped to 65535 and a warning says how many; valid depths
    below ``0.5 / scale`` (which would round to the invalid marker 0) are stored as 1 step and a warning says how
    many (a scale too coarse for the depths: see :func:`check_depth_png_scale`).
    Returns the path.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_depth_png16: {path} must end in .png")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"save_depth_png16: scale must be a positive number, got {scale}")
    if unit == "m":  # PagerOutput.metadata[k]["depth_unit"] of a metric model
        unit = "metres"
    if unit not in ("metres", "relative", "unknown"):
        raise ValueError(f"save_depth_png16: unit must be 'metres', 'relative' or 'unknown', got {unit!r}")
    d = _numpy(depth_m)  # float64 per band of rows below (not the whole map at once)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"save_depth_png16: depth for {path} must be [H, W], got shape {d.shape}")
    m = None
    if mask is not None:
        m = _numpy(mask)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.shape != d.shape:
            raise ValueError(f"save_depth_png16: mask {m.shape} does not match depth {d.shape} for {path}")
    out = np.empty(d.shape, dtype=np.uint16)
    lowest, n_over, n_under = np.inf, 0, 0
    for r0, r1 in _row_bands(d.shape):
        db = d[r0:r1].astype(np.float64)
        valid = ~np.isnan(db)
        if m is not None:
            valid &= m[r0:r1].astype(bool)
        if valid.any():
            lowest = min(lowest, float(db[valid].min()))
        q = np.rint(np.where(valid, db, 0.0) * scale)
        n_over += int(np.count_nonzero(valid & (q > 65535)))
        n_under += int(np.count_nonzero(valid & (q < 1) & (np.where(valid, db, 0.0) > 0)))
        q = np.clip(q, 0, 65535)
        q[valid & (q < 1)] = 1  # a valid depth never encodes as the invalid marker 0
        q[~valid] = 0
        out[r0:r1] = q
    if lowest < 0:
        raise ValueError(f"save_depth_png16: depth for {path} has negative values (min {lowest:.4g} m)")
    unit_text = " m" if unit == "metres" else (" (relative depth, unit-free)" if unit == "relative" else " depth units")
    if n_under:
        logger.warning(
            "save_depth_png16: %d pixel(s) of %s are below %.4g%s (half a step at scale %.4g) and were stored as 1 step "
            "(%.4g); use a larger scale (--depth_scale: steps per depth unit, 1000 = millimetres) to keep them",
            n_under, path, 0.5 / scale, unit_text, scale, 1.0 / scale,
        )
    if n_over:
        logger.warning(
            "save_depth_png16: %d pixel(s) of %s exceed %.4g%s (65535 / scale %.4g) and were clipped; "
            "use a smaller scale (--depth_scale) to keep them",
            n_over, path, 65535.0 / scale, unit_text, scale,
        )
    q = out
    info = PngInfo()
    info.add_text(PNG_SCALE_KEY, repr(float(scale)))
    info.add_text(PNG_UNIT_KEY, unit)
    img = Image.fromarray(q.astype(np.uint16))
    with atomic_write(path, "wb") as fh:
        img.save(fh, format="PNG", pnginfo=info)
    return path


def load_depth_png16(path: PathLike, scale: Optional[float] = None) -> np.ndarray:
    """Read a 16-bit depth PNG into float32 metres ``[H, W]``; the value 0 becomes NaN (invalid).

    ``scale`` defaults to the one stored in the file by :func:`save_depth_png16`, else
    ``DEFAULT_DEPTH_SCALE`` (1000, millimetres).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth PNG not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            stored = img.info.get(PNG_SCALE_KEY)
            if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"{path} is not a 16-bit single-channel PNG (mode {img.mode})")
            q = np.asarray(img).astype(np.float64)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode depth PNG {path}: {exc}") from exc
    if scale is None:
        try:
            scale = float(stored) if stored is not None else DEFAULT_DEPTH_SCALE
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable {PNG_SCALE_KEY} text chunk {stored!r}") from exc
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"load_depth_png16: scale must be a positive number, got {scale}")
    out = (q / scale).astype(np.float32)
    out[q == 0] = np.nan
    return out


def save_npz(path: PathLike, /, **arrays: ArrayLike) -> Path:
    """Write named arrays (tensors are moved to CPU) into a compressed ``.npz`` atomically; returns the path.

    The file is written exactly at ``path`` (no ``.npz`` is appended). Object arrays are refused so the
    file can be read with ``allow_pickle=False``.
    """
    path = Path(path)
    if not arrays:
        raise ValueError(f"save_npz: nothing to write to {path}")
    data = {}
    for key, value in arrays.items():
        a = _numpy(value)
        if a.dtype == object:
            raise ValueError(f"save_npz: array {key!r} for {path} has dtype object")
        data[key] = a
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, **data)
    return path


def load_npz(path: PathLike) -> Dict[str, np.ndarray]:
    """Read every array of a ``.npz`` file into a dict (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # a plain .npy saved under the .npz name
            return {"arr_0": data}
        with data as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # truncated/corrupt zip (zipfile.BadZipFile), pickled object arrays, bad headers
        raise ValueError(f"cannot read npz file {path}: {type(exc).__name__}: {exc}") from exc


def _pil_image(image: ArrayLike):
    from PIL import Image

    a = _numpy(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype} (colourise or scale it first)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"image must be [H, W], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a))


def _encode(img, fh, format: str, quality: int) -> None:
    if format.upper() == "JPEG" and img.mode == "RGBA":
        img = img.convert("RGB")
    kwargs = {"quality": quality} if format.upper() in ("JPEG", "WEBP") else {}
    img.save(fh, format=format, **kwargs)


def image_bytes(image: ArrayLike, format: str = "PNG", quality: int = 95) -> bytes:
    """Encode a uint8 image ``[H, W]``/``[H, W, 3]``/``[H, W, 4]`` into PNG/JPEG/... bytes."""
    buf = io.BytesIO()
    _encode(_pil_image(image), buf, format, quality)
    return buf.getvalue()


def save_image(path: PathLike, image: ArrayLike, quality: int = 95) -> Path:
    """Write a uint8 image ``[H, W]``/``[H, W, 3]``/``[H, W, 4]`` atomically; the format follows the suffix.
    Encoded straight into the (temporary) file: no second copy of the encoded image in memory."""
    path = Path(path)
    fmt = _PIL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_image: unsupported image suffix for {path}; use one of {sorted(_PIL_FORMATS)}")
    try:
        img = _pil_image(image)
    except ValueError as exc:
        raise ValueError(f"save_image {path}: {exc}") from exc
    with atomic_write(path, "wb") as fh:
        _encode(img, fh, fmt, quality)
    return path
