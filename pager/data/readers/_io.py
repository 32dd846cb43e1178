"""File decoders shared by the dataset readers (every error names the file)."""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from pager.io_utils import read_image

DPT_TAG = 202021.25  # float32 magic number at the start of a .dpt file


def read_dpt(path: Union[str, Path]) -> np.ndarray:
    """Read a ``.dpt`` depth file -> float32 ``[H, W]``.

    Layout (little-endian): float32 tag 202021.25, int32 width, int32 height, then ``H*W`` float32
    values in row-major order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file not found: {path}")
    data = path.read_bytes()
    if len(data) < 12:
        raise ValueError(f"{path}: too short for a .dpt header ({len(data)} bytes)")
    tag, width, height = struct.unpack("<fii", data[:12])
    if tag != np.float32(DPT_TAG):
        raise ValueError(f"{path}: wrong .dpt tag {tag!r} (expected {DPT_TAG}; big-endian file?)")
    if not (0 < width < 100_000 and 0 < height < 100_000):
        raise ValueError(f"{path}: implausible .dpt size {width}x{height}")
    expected = 12 + 4 * width * height
    if len(data) != expected:
        raise ValueError(f"{path}: .dpt of {width}x{height} needs {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype="<f4", offset=12).reshape(height, width).astype(np.float32)


def read_rgb(source: Union[str, Path, bytes], what: str = "rgb image") -> np.ndarray:
    """Decode an RGB image -> ``[H, W, 3]`` (uint8 or uint16); grey is repeated, alpha dropped."""
    img = read_image(source, what=what)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 2:
        img = np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def read_gray(source: Union[str, Path, bytes], what: str = "image") -> np.ndarray:
    """Decode a single-channel image -> ``[H, W]`` in its own dtype (uint8 / uint16 / float32)."""
    img = read_image(source, what=what)
    if img.shape[2] != 1:
        raise ValueError(f"{what} {source if not isinstance(source, bytes) else '<bytes>'}: expected one channel, got {img.shape[2]}")
    return img[:, :, 0]


def read_png16(path: Union[str, Path], what: str = "depth image") -> np.ndarray:
    """Decode a 16-bit single-channel PNG -> uint16 ``[H, W]`` (an 8-bit file is an error)."""
    img = read_gray(path, what=what)
    if img.dtype != np.uint16:
        raise ValueError(f"{what} {path}: expected a 16-bit PNG, got dtype {img.dtype}")
    return img


def read_npy_bytes(data: bytes, what: str) -> np.ndarray:
    """Decode ``.npy`` bytes (no pickles)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot decode {what} as .npy: {exc}") from exc


def read_list(path: Union[str, Path], what: str = "split file") -> List[str]:
    """Non-empty, stripped lines of a text file (``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def stems_by_suffix(folder: Union[str, Path], suffixes: Sequence[str], recursive: bool = False) -> List[str]:
    """Sorted stems of the files ``<stem><suffix>`` in ``folder`` for ANY of ``suffixes`` (one per modality).

    Readers discover a dataset's samples with this union over every file a sample has (RGB, depth,
    normals, mask), never by globbing one modality: a sample whose RGB is missing but whose depth exists
    (or the reverse) still becomes a record, and its missing file is then reported like any other
    (an error naming it, or a counted skip with ``skip_bad_samples``). With ``recursive`` the stems are
    paths relative to ``folder`` (``sub/name``). A missing folder gives ``[]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stems = set()
    for path in folder.rglob("*") if recursive else folder.iterdir():
        if not path.is_file():
            continue
        for suffix in suffixes:
            if path.name.endswith(suffix) and len(path.name) > len(suffix):
                rel = path.relative_to(folder).as_posix() if recursive else path.name
                stems.add(rel[: -len(suffix)])
                break
    return sorted(stems)
