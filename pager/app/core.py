"""The demo's logic without any UI: validate an uploaded panorama, predict, and write every output file.

:class:`DemoPredictor` wraps a :class:`pager.pipeline.PagerPipeline`; :meth:`DemoPredictor.run` returns a
:class:`DemoResult` with images for display and paths of the downloadable files. The Gradio layer
(:mod:`pager.app.demo`) only turns ``ValueError`` into messages in the page.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ProgressFn = Callable[[float, str], None]

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"

DEFAULT_MAX_FILE_MB = 50.0
DEFAULT_MAX_MEGAPIXELS = 64.0
DEFAULT_MAX_HEIGHT = 1024
DEFAULT_MAX_VIDEO_FRAMES = 48  # the demo's frame limit for videos (about 10 s of CPU work per frame at 1024x512)
DEFAULT_MAX_VIDEO_MB = 200.0
ASPECT_TOLERANCE = 0.05  # width / height must be within 2 * (1 +- 5 %)
MIN_HEIGHT = 16


def example_images() -> List[Path]:
    """The bundled example panoramas (``pager/assets/examples/*.jpg``), sorted."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def load_panorama(
    path: Optional[PathLike],
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """Read and check an uploaded panorama: uint8 ``[H, W, 3]``.

    Raises ``ValueError`` with a message meant for the user when there is no file, the file is too
    large, cannot be decoded as an image, has too many pixels, or is not a 2:1 equirectangular image.
    """
    from PIL import Image, UnidentifiedImageError

    from pager.io_utils import image_to_float, read_image

    if path is None or str(path) == "":
        raise ValueError("No image given: upload an equirectangular panorama or pick an example.")
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise ValueError(f"The uploaded file {name} could not be found on the server; please upload it again.")
    size_mb = p.stat().st_size / 1e6
    if size_mb > max_file_mb:
        raise ValueError(f"{name} is {size_mb:.1f} MB; this demo accepts files up to {max_file_mb:g} MB.")
    try:  # header only: refuse huge images before decoding them
        with Image.open(p) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValueError(f"{name} is not a readable image file (PNG, JPEG, ...).") from None
    if w * h > max_megapixels * 1e6:
        raise ValueError(
            f"{name} is a huge image ({w}x{h} = {w * h / 1e6:.0f} megapixels); "
            f"this demo accepts up to {max_megapixels:g} megapixels."
        )
    ratio = w / max(h, 1)
    if abs(ratio / 2.0 - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"{name} is {w}x{h} (aspect {ratio:.2f}:1), which is not an equirectangular 360-degree panorama: "
            "expected a width of twice the height (2:1)."
        )
    if h < MIN_HEIGHT:
        raise ValueError(f"{name} is too small ({w}x{h}); use a panorama at least {2 * MIN_HEIGHT}x{MIN_HEIGHT}.")
    try:
        arr = read_image(p, what="panorama")
    except (ValueError, OSError) as exc:
        logger.info("cannot decode %s: %s", p, exc)
        raise ValueError(f"{name} is not a readable image file: it is damaged or truncated.") from None
    rgb = image_to_float(arr, name=name)  # NaN/inf or float values outside [0, 1]: refused, named
    return np.rint(rgb * 255.0).astype(np.uint8)


def _resize(rgb: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((2 * height, height), Image.LANCZOS))


def png16_scale_for(depth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """The finest of 1000, 500, 200, 100, ... steps per unit at which the valid pixels of ``depth`` fit in 16 bits
    (:func:`pager.export.depth_png_scale` of their largest value; 1000 when none is valid)."""
    from pager.export import depth_png_scale

    valid = np.isfinite(depth) if mask is None else (mask & np.isfinite(depth))
    top = float(depth[valid].max()) if valid.any() else 0.0
    return depth_png_scale(top) if top > 0 else 1000.0


@dataclass
class DemoResult:
    """What one prediction shows and offers: images are uint8 ``[H, W, 3]``; ``files`` are paths to download."""

    depth_image: Optional[np.ndarray] = None
    normals_image: Optional[np.ndarray] = None
    point_cloud: Optional[Path] = None
    files: List[Path] = field(default_factory=list)
    message: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)
    videos: Dict[str, Path] = field(default_factory=dict)


class DemoPredictor:
    """Runs the pipeline for the demo and writes the outputs below ``output_root`` (one folder per request).

    Args:
        pipeline: a loaded :class:`pager.pipeline.PagerPipeline` (anything with ``modalities`` and ``__call__``).
        output_root: where result folders go (default: a fresh temporary folder); folders older than
            ``keep_seconds`` are removed when a new request starts.
        max_height: larger panoramas are downscaled to this height (width 2x) before prediction.
        face_size: cube face size passed to the pipeline (default: the checkpoint's).
        stitching: ``"exact"`` or ``"reference"`` (the original project's resampling; panoramas of an odd
            height are then cut to an even height so that the width is a multiple of 4).
    """

    def __init__(
        self,
        pipeline: Any,
        output_root: Optional[PathLike] = None,
        max_height: int = DEFAULT_MAX_HEIGHT,
        face_size: Optional[int] = None,
        max_file_mb: float = DEFAULT_MAX_FILE_MB,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        keep_seconds: float = 3600.0,
        stitching: str = "exact",
    ) -> None:
        from pager.geometry.cubemap import check_stitching

        self.stitching = check_stitching(stitching)
        if max_height < MIN_HEIGHT:
            raise ValueError(f"max_height must be at least {MIN_HEIGHT}, got {max_height}")
        self.pipeline = pipeline
        self.output_root = Path(output_root) if output_root else Path(tempfile.mkdtemp(prefix="pager-app-"))
        self.output_root.mkdir(parents=True, exist_ok=True)
        self.max_height = int(max_height)
        self.face_size = face_size
        self.max_file_mb = max_file_mb
        self.max_megapixels = max_megapixels
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(self.pipeline.modalities)

    def _new_folder(self, stem: str) -> Path:
        now = time.time()
        for old in self.output_root.iterdir():
            try:
                if old.is_dir() and now - old.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40] or "panorama"
        return Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=self.output_root))

    def run(
        self,
        image_path: Optional[PathLike],
        modalities: Sequence[str] = ("depth", "normals"),
        point_cloud: bool = True,
        color_by: str = "rgb",
        max_points: int = 200_000,
        progress: Optional[ProgressFn] = None,
        keep_invalid: bool = False,
        seam_blend: bool = False,
    ) -> DemoResult:
        """Validate ``image_path``, predict the chosen ``modalities`` and write the outputs.

        Pixels the prediction marks invalid (sky, depth saturated at the range ends, degenerate normals) are
        grey in the depth and normals images and left out of the point cloud unless ``keep_invalid``.
        ``seam_blend``: blend a second pass on a turned cube so that face borders do not show (~2x time).
        Raises ``ValueError`` with a user-facing message for bad input or choices.
        """
        from pager.export import (
            colorize_depth,
            erp_point_cloud,
            normals_to_rgb,
            save_depth_png16,
            save_image,
            save_npz,
            save_point_cloud,
        )

        def step(frac: float, text: str) -> None:
            logger.info("%s", text)
            if progress is not None:
                progress(frac, text)

        mods = [m for m in ("depth", "normals") if m in set(modalities or ())]
        if not mods:
            raise ValueError("Choose at least one output: depth and/or normals.")
        missing = [m for m in mods if m not in self.modalities]
        if missing:
            raise ValueError(f"The loaded model cannot predict {', '.join(missing)} (it has: {', '.join(self.modalities)}).")
        if point_cloud and "depth" not in mods:
            raise ValueError("The 3D point cloud needs the depth output: tick 'depth'.")
        if color_by not in ("rgb", "normals"):
            raise ValueError(f"Unknown point colouring {color_by!r}: use 'rgb' or 'normals'.")
        if point_cloud and color_by == "normals" and "normals" not in mods:
            raise ValueError("Colouring the point cloud by normals needs the normals output: tick 'normals'.")
        if max_points < 1000:
            raise ValueError(f"Point budget {max_points} is too small; use at least 1000.")

        step(0.02, "Reading the panorama")
        rgb = load_panorama(image_path, self.max_file_mb, self.max_megapixels)
        h0, w0 = rgb.shape[:2]
        note = ""
        if h0 > self.max_height:
            rgb = _resize(rgb, self.max_height)
            note = f" (downscaled from {w0}x{h0})"
        elif w0 != 2 * h0:
            rgb = _resize(rgb, h0)
        if self.stitching == "reference" and rgb.shape[1] % 4:
            rgb = _resize(rgb, rgb.shape[0] - rgb.shape[0] % 2)  # the original's cube->ERP needs W % 4 == 0
        h, w = rgb.shape[:2]

        step(0.1, f"Predicting {' and '.join(mods)} on {w}x{h}")
        t0 = time.perf_counter()
        with self._lock:
            kwargs = {"seam_blend": True} if seam_blend else {}
            out = self.pipeline(rgb, modalities=tuple(mods), face_size=self.face_size, show_progress=True,
                                stitching=self.stitching, **kwargs)
        seconds = time.perf_counter() - t0
        meta = dict(out.metadata[0]) if out.metadata else {}

        folder = self._new_folder(Path(str(image_path)).stem)
        stem = "pager"
        result = DemoResult(metadata=meta)
        arrays: Dict[str, np.ndarray] = {}
        unit = meta.get("depth_unit", "m")
        depth = mask = normals = nmask = None
        if "depth" in mods:
            step(0.75, "Colouring the depth map")
            depth = np.asarray(out.depth[0], dtype=np.float32)
            mask = np.asarray(out.depth_mask[0], dtype=bool) if out.depth_mask is not None else np.isfinite(depth)
            label = "depth [m]" if unit == "m" else "relative depth"
            result.depth_image = colorize_depth(depth, mask, colorbar=True, colorbar_label=label)
            save_image(folder / f"{stem}_depth_color.png", result.depth_image)
            scale = png16_scale_for(depth, mask)
            save_depth_png16(folder / f"{stem}_depth_16bit.png", depth, scale=scale, mask=mask,
                             unit="metres" if unit == "m" else "relative")
            arrays.update(depth=depth, depth_mask=mask)
            meta["depth_png16_scale"] = scale
        if "normals" in mods:
            step(0.8, "Colouring the normals")
            normals = np.asarray(out.normals[0], dtype=np.float32)  # [H, W, 3]
            nmask = np.asarray(out.normals_mask[0], dtype=bool) if out.normals_mask is not None else None
            result.normals_image = normals_to_rgb(np.moveaxis(normals, -1, 0), nmask)
            save_image(folder / f"{stem}_normals.png", result.normals_image)
            arrays.update(normals=np.moveaxis(normals, -1, 0), normals_mask=nmask if nmask is not None else np.ones((h, w), bool))
        arrays["rgb"] = rgb
        arrays["metadata"] = np.array(json.dumps(meta, default=str))
        save_npz(folder / f"{stem}_prediction.npz", **arrays)

        n_points = 0
        if point_cloud and depth is not None:
            step(0.85, "Building the point cloud")
            valid = mask if nmask is None else (mask & nmask)
            cloud = erp_point_cloud(
                depth,
                rgb if color_by == "rgb" else None,
                mask=None if keep_invalid else valid,
                normals=np.moveaxis(normals, -1, 0) if normals is not None else None,
                max_points=int(max_points),
                unit="metres" if unit == "m" else "relative",
            )
            if len(cloud) == 0:
                raise ValueError("No valid depth pixel was left for the point cloud (everything masked).")
            result.point_cloud = save_point_cloud(folder / f"{stem}_pointcloud.glb", cloud)
            n_points = len(cloud)

        step(0.95, "Done")
        order = ("_depth_color.png", "_depth_16bit.png", "_normals.png", "_prediction.npz", "_pointcloud.glb")
        result.files = [folder / f"{stem}{suffix}" for suffix in order if (folder / f"{stem}{suffix}").is_file()]
        parts = [f"**{w}x{h}**{note}, {', '.join(mods)} in {seconds:.1f} s" + (" (seams blended)" if seam_blend else "")]
        if depth is not None:
            parts.append(f"depth in {'metres' if unit == 'm' else 'relative units (up to scale)'}; "
                         f"16-bit PNG stores depth x {meta['depth_png16_scale']:g}")
            invalid = 1.0 - float(mask.mean())
            if invalid > 0:
                parts.append(f"{100 * invalid:.1f} % of the pixels are invalid (sky or out of range; grey)"
                             + ("" if not point_cloud else "; kept in the point cloud" if keep_invalid
                                else "; left out of the point cloud"))
        if n_points:
            parts.append(f"point cloud: {n_points:,} points")
        result.message = "; ".join(parts) + "."
        return result

    def run_video(
        self,
        video_path: Optional[PathLike],
        max_frames: int = DEFAULT_MAX_VIDEO_FRAMES,
        stride: int = 1,
        temporal_filter: float = 0.0,
        max_file_mb: float = DEFAULT_MAX_VIDEO_MB,
        progress: Optional[ProgressFn] = None,
    ) -> DemoResult:
        """Depth / normals videos of a short 360° clip with :func:`pager.video.process_video` (the code of
        ``pager video``): at most ``max_frames`` frames (every ``stride``-th; later ones are left out and the
        message says so), downscaled to ``max_height``, one depth scale for the clip. ``result.videos`` maps
        ``depth`` / ``normals`` to the colour-mapped mp4 files, which are also the downloads. Raises
        ``ValueError`` with a user-facing message for bad input.
        """
        from pager.video import VideoOptions, open_source, process_video

        if video_path is None or str(video_path) == "":
            raise ValueError("No video given: upload a short 360° clip (mp4, mov, webm, mkv).")
        p = Path(video_path)
        if not p.is_file():
            raise ValueError(f"{p.name} was not found (upload it again).")
        if p.stat().st_size > max_file_mb * 2**20:
            raise ValueError(f"{p.name} is {p.stat().st_size / 2**20:.0f} MB; the demo takes clips up to {max_file_mb:.0f} MB.")
        if not 1 <= int(max_frames) <= 10_000 or int(stride) < 1:
            raise ValueError(f"Frame limit {max_frames} and stride {stride} must be positive.")
        try:
            src = open_source(p, stride=int(stride))
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as exc:
            raise ValueError(f"Cannot read the video {p.name}: {exc}") from None
        total = len(src)
        if total > max_frames:
            src.indices = src.indices[: int(max_frames)]
        h, w = src.size
        if abs(w / h - 2.0) > 2.0 * ASPECT_TOLERANCE:
            raise ValueError(f"{p.name} is {w}x{h}, not an equirectangular (2:1) 360° video.")
        out_h = min(h, self.max_height)
        opts = VideoOptions(modalities=self.modalities, face_size=self.face_size,
                            output_height=out_h if (out_h != h or w != 2 * h) else None,
                            filter_strength=float(temporal_filter), keep_arrays=False)
        folder = self._new_folder(p.stem)
        if progress is not None:
            progress(0.02, f"Predicting {len(src)} frames")
        with self._lock:
            info = process_video(self.pipeline, src, folder, opts, progress=True)
        result = DemoResult(metadata=info)
        result.videos = {m: folder / f"{m}.mp4" for m in self.modalities if (folder / f"{m}.mp4").is_file()}
        result.files = list(result.videos.values())
        clipped = f" (the first {len(src)} of {total}; the demo's limit is {max_frames})" if total > len(src) else ""
        fps = info.get("frames_per_second") or 0.0
        result.message = (f"**{len(src)} frames**{clipped} at {2 * out_h}x{out_h}, {fps:.2f} frames/s; "
                          f"depth in {'metres' if info.get('depth_unit') == 'm' else 'relative units, one scale for the clip'}.")
        return result
