"""File-system helpers shared by every layer: atomic writes, output planning and robust image decoding.

Every result or checkpoint the package writes goes through :func:`atomic_write` (temporary file in the
same folder, then ``os.replace``), so an interrupted run never leaves a half-written file behind; a
failed write (full disk, permissions) raises ``OSError`` naming the file.

Every command that writes checks its planned outputs with :func:`check_outputs` before it loads a model or
does any work: names unique within the run (:func:`unique_stems` makes them so), not too long for the file
system, folders writable, and existing files refused unless ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr")


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", overwrite: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` instead of being replaced.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
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
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is not None or exc.errno is None:
            raise
        # e.g. ENOSPC from write/flush/fsync carries no file name: name the file being written
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
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
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
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
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.filename is not None or exc.errno is None:
            raise
        # e.g. ENOSPC from a write inside the folder carries no file name: name the folder being written
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def unique_stems(paths: Sequence[PathLike]) -> List[str]:
    """Output name stems for the input files of one run: unique, deterministic, file-system safe.

    Each input takes the first of its candidate names that no other input of the run wants: its stem,
    then ``<parent folder>_<stem>``, then ``<parent folder>_<stem>_<extension>``; names still shared get
    ``_2``, ``_3``, ... (skipping every name already in use). Names are compared case-insensitively (as
    on macOS and Windows file systems). E.g. ``d/a.png``, ``d/a.jpg``, ``e/d_a_1.png`` ->
    ``d_a_png``, ``d_a_jpg``, ``d_a_1``.
    """
    items = [Path(p) for p in paths]
    candidates = []
    for p in items:
        parent = p.parent.name or "input"
        ext = p.suffix.lstrip(".").lower() or "file"
        candidates.append([p.stem, f"{parent}_{p.stem}", f"{parent}_{p.stem}_{ext}"])
    level = [0] * len(items)
    while True:
        names = [c[k] for c, k in zip(candidates, level)]
        counts: Dict[str, int] = {}
        for n in names:
            counts[n.casefold()] = counts.get(n.casefold(), 0) + 1
        shared = [i for i, n in enumerate(names) if counts[n.casefold()] > 1 and level[i] + 1 < len(candidates[i])]
        if not shared:
            break
        for i in shared:
            level[i] += 1
    used = {n.casefold() for n in names}
    seen: set = set()
    out: List[str] = []
    for n in names:
        key = n.casefold()
        if key in seen:
            k = 2
            while f"{n}_{k}".casefold() in used:
                k += 1
            n = f"{n}_{k}"
            used.add(n.casefold())
        seen.add(n.casefold())
        out.append(n)
    return out


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(str(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: PathLike, what: str = "output folder") -> Path:
    """Check that files can be created in ``folder`` (or, if it does not exist yet, where it would be created).

    Creates and removes one empty file in the nearest existing folder; nothing else is left behind.
    Raises ``NotADirectoryError`` when a path component is a file, ``OSError`` (``PermissionError``,
    read-only file system, ...) naming the folder otherwise.
    """
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise NotADirectoryError(f"{what} {folder}: {base} is a file, not a folder")
    probe = base / f".pager-write-test-{os.getpid()}"
    try:
        fd = os.open(str(probe), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return folder
    except OSError as exc:
        error = type(exc)(f"{what} {folder} is not usable: files cannot be created in {base} ({exc.strerror}); "
                        "expected a writable folder")
        error.errno = exc.errno
        raise error from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(str(probe))
    return folder


def check_outputs(paths: Iterable[PathLike], overwrite: bool = False, what: str = "output",
                  option: Optional[str] = None) -> List[Path]:
    """The checks every command runs on the files it is going to write, before any work; returns the paths.

    * two outputs of one run never share a name (compared case-insensitively): ``ValueError`` naming both;
    * every name fits the file system (``NAME_MAX`` bytes, usually 255): ``ValueError`` naming it;
    * the folders can be written (:func:`check_writable_folder`; ``option``, e.g. ``"--out"``, is named in its error);
    * an existing file is refused, naming it, unless ``overwrite`` (the ``--overwrite`` option); an
      existing folder where a file is planned is always refused.
    """
    planned = [Path(p) for p in paths]
    seen: Dict[str, Path] = {}
    for p in planned:
        key = os.path.normcase(os.path.abspath(p)).casefold()
        if key in seen:
            raise ValueError(f"two {what}s of this run would be written to the same file {p} (and {seen[key]})")
        seen[key] = p
    limits: Dict[Path, int] = {}
    folders: Dict[Path, None] = {}
    for p in planned:
        base = _existing_ancestor(p.parent)
        if base not in limits:
            limits[base] = _name_max(base) if base.is_dir() else 255
        for part in p.parts:
            if len(os.fsencode(part)) > limits[base]:
                raise ValueError(f"{what} file name too long ({len(os.fsencode(part))} bytes, the file system allows "
                                 f"{limits[base]}): {p}; use a shorter input or output name")
        folders[p.parent] = None
    for folder in folders:
        check_writable_folder(folder, f"{what} folder" + (f" ({option})" if option else ""))
    clashes = [p for p in planned if p.exists() or p.is_symlink()]
    folders_in_way = [p for p in clashes if p.is_dir()]
    if folders_in_way:
        raise FileExistsError(f"{what} {folders_in_way[0]} is an existing folder; a file is to be written there")
    if clashes and not overwrite:
        shown = ", ".join(str(p) for p in clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise FileExistsError(f"{len(clashes)} {what} file(s) already exist: {shown}; pass --overwrite to replace them")
    return planned


EXR_MAGIC = b"\x76\x2f\x31\x01"


def _read_exr(path: Path, what: str) -> np.ndarray:
    """Decode an OpenEXR file with the OpenEXR package (``pip install "pager[exr]"``) -> float32 ``[H, W, C]``."""
    try:
        import OpenEXR
    except ImportError as exc:
        raise ValueError(f"cannot decode {what} {path}: .exr files need the OpenEXR package "
                         "(pip install \"pager[exr]\" or pip install openexr)") from exc
    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            for key in ("RGBA", "RGB", "Y"):
                if key in channels:
                    array = np.asarray(channels[key].pixels)
                    break
            else:
                raise ValueError(f"no RGB, RGBA or Y channels (found {', '.join(sorted(channels))})")
    except ValueError as exc:
        raise ValueError(f"cannot decode {what} {path}: {exc}") from exc
    except Exception as exc:  # OpenEXR raises plain Exceptions for corrupt files
        raise ValueError(f"cannot decode {what} {path}: {type(exc).__name__}: {exc}") from exc
    return array.astype(np.float32)


#: EXIF Orientation tag (0x0112) values other than 1, as viewers apply them
_EXIF_ORIENTATIONS = {2: "mirrored", 3: "turned 180 deg", 4: "flipped upside down", 5: "transposed",
                      6: "turned 90 deg clockwise", 7: "transversed", 8: "turned 90 deg anticlockwise"}


#: (file, orientation) already warned about in this process
_EXIF_WARNED: set = set()


def _exif_orientation(img: Any) -> Optional[int]:
    """The EXIF Orientation tag of a PIL image, or ``None`` (no EXIF, unreadable EXIF)."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is not a reason to refuse the pixels
        return None
    return int(value) if isinstance(value, int) else None


def read_image(source: Union[PathLike, bytes], what: str = "image") -> np.ndarray:
    """Decode an image file (or encoded bytes) into an ``[H, W, C]`` array, C in {1, 3, 4}.

    8-bit images come back as ``uint8``, 16-bit ones as ``uint16`` (PNG ``I;16``), float formats (TIFF
    ``F``, OpenEXR) as ``float32`` with their values untouched (see :func:`image_to_float`). Raises
    ``FileNotFoundError`` for a missing path and ``ValueError`` naming the file for anything that cannot be
    decoded, including images beyond PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``
    pixels; between one and two times it a warning naming the file is logged). An EXIF orientation tag is
    not applied (an equirectangular panorama is read as stored, as the original project reads it); a warning
    naming the file says so.
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"{what} not found: {name}")
        with open(source, "rb") as fh:
            if fh.read(4) == EXR_MAGIC:
                array = _read_exr(Path(source), what)
                return np.ascontiguousarray(array if array.ndim == 3 else array[:, :, None])
    elif bytes(source[:4]) == EXR_MAGIC:
        raise ValueError(f"cannot decode {what} {name}: OpenEXR data is read from files only")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img_ctx = Image.open(handle)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                logger.warning("%s %s: %s; decoding it anyway", what, name, " ".join(str(w.message).split()))
        with img_ctx as img:
            img.load()
            orientation = _exif_orientation(img)
            if orientation not in (None, 1) and (name, orientation) not in _EXIF_WARNED:
                if not isinstance(source, (bytes, bytearray)):  # a file read twice (checked, then predicted): once
                    _EXIF_WARNED.add((name, orientation))
                logger.warning("%s %s: EXIF orientation %d (%s) is ignored: the pixels are read as stored, as an "
                               "equirectangular panorama is laid out; rotate the file itself if it is really turned",
                               what, name, orientation, _EXIF_ORIENTATIONS.get(orientation, "unknown"))
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
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refusing to decode {what} {name}: {' '.join(str(exc).split())} (PIL's limit "
                         "PIL.Image.MAX_IMAGE_PIXELS; the command line keeps it; in Python, set "
                         "PIL.Image.MAX_IMAGE_PIXELS to a larger number before decoding, only for files you trust)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode {what} {name}: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


#: (image name, lowest, highest) already reported by :func:`image_to_float` inside :func:`warn_once_per_image`
#: (``None`` outside it: every call warns)
_NORMALIZED_WARNED: Optional[set] = None


@contextlib.contextmanager
def warn_once_per_image() -> Iterator[None]:
    """Within this block, :func:`image_to_float`'s ``normalize_input`` warning is logged once per image and value
    range. Command-line runs use it: they decode every input once to check it before the model loads, and again
    to predict it."""
    global _NORMALIZED_WARNED
    previous, _NORMALIZED_WARNED = _NORMALIZED_WARNED, set()
    try:
        yield
    finally:
        _NORMALIZED_WARNED = previous


def image_to_float(array: np.ndarray, name: str = "image", normalize: bool = False,
                   advice: Optional[str] = None) -> np.ndarray:
    """Map an ``[H, W, C]`` image to float32 RGB in [0, 1] ``[H, W, 3]``; ``name`` is used in errors.

    ``uint8`` / ``uint16`` are divided by 255 / 65535, other integers by 255 (values up to 255) or 65535
    (up to 65535); grayscale is repeated to RGB and alpha is dropped. Float images must be finite and lie
    in [0, 1] (up to 1e-3 of rounding, then clipped). Nothing is altered silently: NaN/inf pixels always
    raise ``ValueError`` naming the image; values outside the range raise too unless ``normalize=True``,
    which maps ``[min(0, lowest), highest]`` linearly to [0, 1] and logs a warning naming the image.
    ``advice`` replaces the error's closing hint (how to normalise) where the caller has no ``normalize`` option.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: expected an image array [H, W, C] with C in 1..4, got shape {array.shape}")
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        out = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float64)
        if np.issubdtype(array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                raise ValueError(f"{name}: {bad} NaN/inf pixel value(s); an image must be finite")
            lo, hi, top, scale = (float(values.min()), float(values.max()), 1.0, 1.0) if values.size else (0.0, 0.0, 1.0, 1.0)
        else:
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            top = scale = 255.0 if hi <= 255 else 65535.0
        if lo < -1e-3 * top or hi > top * (1 + 1e-3):
            if not normalize:
                raise ValueError(
                    f"{name}: pixel values span [{lo:.6g}, {hi:.6g}], outside [0, {top:g}] for {array.dtype}; scale the "
                    "image to that range first (e.g. tone-map an HDR image), or " + (advice or
                    "normalise it explicitly (normalize_input=True / --normalize_input maps [min(0, lowest), highest] "
                    "to [0, 1])"))
            low = min(lo, 0.0)
            if _NORMALIZED_WARNED is None or (name, lo, hi) not in _NORMALIZED_WARNED:
                if _NORMALIZED_WARNED is not None:
                    _NORMALIZED_WARNED.add((name, lo, hi))
                logger.warning("%s: pixel values span [%.6g, %.6g]; normalised linearly from [%.6g, %.6g] to [0, 1] "
                               "(normalize_input)", name, lo, hi, low, hi)
            out = ((values - low) / max(hi - low, 1e-12)).astype(np.float32)
        else:
            out = np.clip(values / scale, 0.0, 1.0).astype(np.float32)
    else:
        raise ValueError(f"{name}: unsupported image dtype {array.dtype}")
    channels = out.shape[2]
    if channels in (1, 2):
        out = np.repeat(out[:, :, :1], 3, axis=2)
    elif channels == 4:
        out = out[:, :, :3]
    return out
