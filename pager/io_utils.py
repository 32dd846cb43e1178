"""File-system helpers shared by every layer: atomic writes and robust image decoding.

Every result or checkpoint the package writes goes through :func:`atomic_write` (temporary file in the
same folder, then ``os.replace``), so an interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr")


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", overwrite: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` instead of being replaced.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; results are ordinary files readable as the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(path: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` when the block succeeds.

    An existing ``path`` raises ``FileExistsError`` unless ``overwrite=True`` (then it is replaced
    only after the new directory is complete).
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_image(source: Union[PathLike, bytes], what: str = "image") -> np.ndarray:
    """Decode an image file (or encoded bytes) into an ``[H, W, C]`` array, C in {1, 3, 4}.

    8-bit images come back as ``uint8``, 16-bit ones as ``uint16`` (PNG ``I;16``), float formats as
    ``float32``. Raises ``FileNotFoundError`` for a missing path and ``ValueError`` naming the file for
    anything that cannot be decoded.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"{what} not found: {name}")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(handle) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(img, dtype=np.uint16)
            elif img.mode == "I":
                array = np.asarray(img, dtype=np.int64)
                if array.min() >= 0 and array.max() <= 65535:
                    array = array.astype(np.uint16)
                else:
                    array = array.astype(np.float32)
            elif img.mode == "F":
                array = np.asarray(img, dtype=np.float32)
            elif img.mode in ("L", "RGB", "RGBA"):
                array = np.asarray(img)
            elif img.mode == "LA":
                array = np.asarray(img.convert("RGBA"))
            elif img.mode == "1":
                array = np.asarray(img.convert("L"))
            else:  # P, CMYK, YCbCr, ...
                array = np.asarray(img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode {what} {name}: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def image_to_float(array: np.ndarray) -> np.ndarray:
    """Map an ``[H, W, C]`` image of any integer depth to float32 in [0, 1] with 3 channels.

    Grayscale is repeated to RGB and alpha is dropped; float input is clipped to [0, 1].
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image array [H, W, C] with C in 1..4, got shape {array.shape}")
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        out = np.clip(array.astype(np.float32), 0.0, 1.0)
    elif np.issubdtype(array.dtype, np.integer):
        out = np.clip(array.astype(np.float32) / max(float(array.max()), 1.0), 0.0, 1.0)
    elif array.dtype == np.bool_:
        out = array.astype(np.float32)
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}")
    channels = out.shape[2]
    if channels in (1, 2):
        out = np.repeat(out[:, :, :1], 3, axis=2)
    elif channels == 4:
        out = out[:, :, :3]
    return out
