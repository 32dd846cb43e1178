"""Frame sources (a video file decoded with PyAV, a folder or glob of images) and a video encoder (PyAV).

PyAV (``pip install "pager-360[video]"``) is needed for video files and for writing videos; image
sequences are read with Pillow. Frames are uint8 RGB ``[H, W, 3]``. Every error names the input.
"""
from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np

__all__ = ["VIDEO_SUFFIXES", "FrameSource", "open_source", "VideoWriter", "require_av"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
DEFAULT_IMAGE_FPS = 10.0


def require_av():
    """Import PyAV or raise ``ModuleNotFoundError`` saying how to install it."""
    try:
        import av
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError('video files need PyAV: pip install "pager-360[video]" (or pip install av)') from exc
    return av


@dataclass
class FrameSource:
    """The frames of one input, and which of them are processed.

    Attributes:
        name: the input as given; kind: ``video`` or ``images``; count: frames in the input;
        fps: frame rate of the input (images: the ``fps`` passed to :func:`open_source`);
        indices: input frame numbers that are processed (``start``, ``end``, ``stride`` applied);
        size: ``(H, W)`` of the first frame; files: the image files (``images`` only);
        selection: ``(start, end, stride)`` as given.
    """

    name: str
    kind: str
    count: int
    fps: float
    indices: List[int]
    size: Tuple[int, int]
    files: List[Path] = field(default_factory=list)
    selection: Tuple[int, Optional[int], int] = (0, None, 1)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def output_fps(self) -> float:
        """Frame rate of the outputs: the input rate divided by the stride (so they last as long as the input)."""
        step = self.indices[1] - self.indices[0] if len(self.indices) > 1 else 1
        return self.fps / step

    def frames(self, skip: int = 0) -> Iterator[Tuple[int, int, np.ndarray]]:
        """Yield ``(k, input_index, rgb)`` for the processed frames ``k >= skip`` in order."""
        wanted = {idx: k for k, idx in enumerate(self.indices) if k >= skip}
        if not wanted:
            return
        if self.kind == "images":
            for idx in sorted(wanted):
                yield wanted[idx], idx, _read_rgb(self.files[idx])
            return
        av = require_av()
        last = max(wanted)
        with av.open(self.name) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        yield wanted[i], i, frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
            except av.error.FFmpegError as exc:
                raise ValueError(f"cannot decode video {self.name} at frame {i + 1}: {exc}") from exc


def _read_rgb(path: Path) -> np.ndarray:
    from pager.io_utils import image_to_float, read_image

    arr = read_image(path, what="frame")
    if arr.dtype == np.uint8 and arr.shape[2] == 3:
        return arr
    return np.rint(image_to_float(arr) * 255.0).astype(np.uint8)


def _select(count: int, start: int, end: Optional[int], stride: int, name: str) -> List[int]:
    if stride < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    if start < 0:
        raise ValueError(f"--start must be >= 0, got {start}")
    stop = count if end is None else min(int(end), count)
    indices = list(range(start, stop, stride))
    if not indices:
        raise ValueError(f"{name}: no frames selected (the input has {count} frames; --start {start}, --end {end}, --stride {stride})")
    return indices


def _image_files(spec: str) -> List[Path]:
    from pager.io_utils import IMAGE_SUFFIXES

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"no files match {spec}")
        return files
    raise FileNotFoundError(f"input not found: {spec}")


def _check_frame_sizes(files: List[Path], indices: List[int], size: Tuple[int, int]) -> None:
    """Every selected frame file has the first one's size (from the file headers, nothing decoded), so that a
    frame of another size is named before the model loads; a header PIL cannot read is left to the decoder."""
    from PIL import Image

    for i in indices[1:]:
        try:
            with Image.open(files[i]) as img:
                hw = (int(img.height), int(img.width))
        except Exception:  # e.g. OpenEXR, or a broken file: reported by name when it is decoded
            continue
        if hw != tuple(size):
            raise ValueError(f"{files[i]}: frame of {hw[1]}x{hw[0]} pixels in a sequence of {size[1]}x{size[0]} frames "
                             f"(the size of {files[indices[0]]}); every frame must have one size")


def open_source(spec: Union[str, os.PathLike], start: int = 0, end: Optional[int] = None, stride: int = 1,
                fps: Optional[float] = None) -> FrameSource:
    """Open a video file (by suffix: mp4, mov, webm, mkv, avi, m4v), a folder of images or a glob pattern.

    Frames ``start, start + stride, ...`` below ``end`` (input frame numbers, from 0) are selected. The
    input is opened and its first frame decoded here, so a missing or unreadable input fails before any
    model is loaded (``FileNotFoundError`` / ``ValueError`` naming it). ``fps``: frame rate of an image
    sequence (default 10), or an override for a video's own rate.
    """
    spec = str(spec)
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        av = require_av()
        try:
            with av.open(spec) as container:
                if not container.streams.video:
                    raise ValueError(f"{spec} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                count = sum(1 for packet in container.demux(stream) if packet.size > 0)
            with av.open(spec) as container:
                first = next(container.decode(video=0)).to_ndarray(format="rgb24")
        except StopIteration:
            raise ValueError(f"{spec}: the video holds no decodable frame") from None
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read video {spec}: {exc}") from exc
        indices = _select(count, start, end, stride, spec)
        return FrameSource(spec, "video", count, float(fps or (float(rate) if rate else DEFAULT_IMAGE_FPS)),
                           indices, first.shape[:2], selection=(start, end, stride))
    if path.is_file():
        raise ValueError(f"{spec}: not a video file ({', '.join(VIDEO_SUFFIXES)}); for images give a folder or a glob pattern")
    files = _image_files(spec)
    indices = _select(len(files), start, end, stride, spec)
    first = _read_rgb(files[indices[0]])
    _check_frame_sizes(files, indices, first.shape[:2])
    return FrameSource(spec, "images", len(files), float(fps or DEFAULT_IMAGE_FPS), indices, first.shape[:2], files,
                       selection=(start, end, stride))


class VideoWriter:
    """Encode uint8 RGB frames ``[H, W, 3]`` to a video file with PyAV, atomically.

    The file is written under a temporary name in the same folder and renamed when :meth:`close` is
    reached without error. H.264 (libx264, ``crf``) in yuv420p for ``.mp4`` / ``.mov`` / ``.mkv``, VP9 for
    ``.webm``; odd sizes are padded by one edge row / column (yuv420p needs even sizes).
    """

    def __init__(self, path: Union[str, os.PathLike], fps: float, crf: int = 18) -> None:
        av = require_av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise ValueError(f"{self.path}: unsupported video suffix (use one of {', '.join(VIDEO_SUFFIXES)})")
        codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
        if codec not in av.codecs_available:
            codec = "mpeg4"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp{suffix}")
        self.container = av.open(str(self.tmp), mode="w")
        rate = Fraction(fps).limit_denominator(100000)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": str(crf), "preset": "medium"}
        self.size: Optional[Tuple[int, int]] = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        av = require_av()
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.size is None:
            self.size = rgb.shape[:2]
            self.stream.height, self.stream.width = self.size
        elif rgb.shape[:2] != self.size:
            raise ValueError(f"{self.path}: frame size changed from {self.size} to {rgb.shape[:2]}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the file into place; returns the path."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
