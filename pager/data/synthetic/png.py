"""A small, deterministic PNG encoder (and decoder for what it writes).

Why not Pillow: Pillow cannot write 16-bit RGB PNGs, and its encoder (filter heuristics, bundled
zlib or zlib-ng) changes between versions. Here every image is written the same way: one IHDR,
one IDAT, one IEND chunk, no ancillary chunks (no time stamps), filter type 1 ("Sub") on every row,
compressed with the standard library's ``zlib`` at a fixed level. The file bytes are therefore a
pure function of the pixels and of the zlib implementation (identical for the same zlib; the
decoded pixels are identical everywhere).

Supported: 8-bit and 16-bit greyscale ``[H, W]`` and RGB ``[H, W, 3]`` (``uint8`` / ``uint16``).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_LEVEL = 6
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grey, RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8``/``uint16`` image ``[H, W]`` or ``[H, W, 3]`` (deterministic)."""
    img = np.asarray(image)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png: expected uint8 or uint16 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in _COLOR_TYPES or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"encode_png: expected [H, W] or [H, W, 3] pixels, got shape {tuple(np.shape(image))}")
    h, w, c = img.shape
    depth = 8 if img.dtype == np.uint8 else 16
    raw = np.ascontiguousarray(img.astype(">u2") if depth == 16 else img).view(np.uint8).reshape(h, -1)
    bpp = c * depth // 8
    filtered = raw.copy()
    filtered[:, bpp:] -= raw[:, :-bpp]  # "Sub" filter, wraps modulo 256
    rows = np.empty((h, filtered.shape[1] + 1), np.uint8)
    rows[:, 0] = 1
    rows[:, 1:] = filtered
    ihdr = struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPES[c], 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), ZLIB_LEVEL))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes | str | Path) -> np.ndarray:
    """Decode a PNG written by :func:`encode_png` (any 8/16-bit grey/RGB PNG without interlacing
    whose rows use filters 0-2) -> ``[H, W]`` or ``[H, W, 3]`` ``uint8``/``uint16``.

    Unlike Pillow, this keeps the 16 bits of 16-bit RGB images.
    """
    if not isinstance(data, (bytes, bytearray)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"PNG file not found: {path}")
        data = path.read_bytes()
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("decode_png: not a PNG (bad signature)")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError("decode_png: no IHDR chunk")
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth not in (8, 16) or ctype not in (0, 2) or interlace:
        raise ValueError(f"decode_png: unsupported PNG (bit depth {depth}, colour type {ctype}, interlace {interlace})")
    c = 1 if ctype == 0 else 3
    bpp = c * depth // 8
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * bpp)
    filters, body = rows[:, 0], rows[:, 1:].copy()
    if np.any(filters > 2):
        raise ValueError("decode_png: rows use filters 3/4 (Average/Paeth), which this decoder does not handle")
    for i in np.nonzero(filters)[0]:  # rows are sequential only for the Up filter
        if filters[i] == 1:
            r = body[i].reshape(w, bpp)
            body[i] = np.cumsum(r, axis=0, dtype=np.uint8).reshape(-1)
        elif filters[i] == 2 and i > 0:
            body[i] += body[i - 1]
    if depth == 16:
        out = body.view(">u2").astype(np.uint16)
    else:
        out = body
    out = out.reshape(h, w, c)
    return out[:, :, 0] if c == 1 else out
