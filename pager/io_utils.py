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
import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Sequence, Union

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
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path)) from exc
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
        raise OSError(exc.errno, f"{what} {folder}: cannot create files in {base}: {exc.strerror}", str(base)) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(str(probe))
    return folder


def check_outputs(paths: Iterable[PathLike], overwrite: bool = False, what: str = "output") -> List[Path]:
    """The checks every command runs on the files it is going to write, before any work; returns the paths.

    * two outputs of one run never share a name (compared case-insensitively): ``ValueError`` naming both;
    * every name fits the file system (``NAME_MAX`` bytes, usually 255): ``ValueError`` naming it;
    * the folders can be written (:func:`check_writable_folder`);
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
        check_writable_folder(folder, f"{what} folder")
    clashes = [p for p in planned if p.exists() or p.is_symlink()]
    folders_in_way = [p for p in clashes if p.is_dir()]
    if folders_in_way:
        raise FileExistsError(f"{what} {folders_in_way[0]} is an existing folder; a file is to be written there")
    if clashes and not overwrite:
        shown = ", ".join(str(p) for p in clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise FileExistsError(f"{len(clashes)} {what} file(s) already exist: {shown}; pass --overwrite to replace them")
    return planned


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
