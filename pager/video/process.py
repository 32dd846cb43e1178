"""Depth and normals of a 360° video with :class:`~pager.pipeline.PagerPipeline`, resumable, to an output folder.

Outputs in ``out_dir`` (``N`` = processed frames, ``H x W`` = output size):

* ``depth.npy``   float32 ``[N, H, W]`` (``np.lib.format.open_memmap``: written frame by frame, never all
  in memory); metres for metric models, else relative depth with one scale for the whole sequence
  (:mod:`pager.video.consistency`); ``depth_mask.npy`` bool ``[N, H, W]`` (valid predicted depth).
* ``normals.npy`` float16 ``[N, H, W, 3]`` unit vectors in PaGeR's frame (0 = invalid).
* ``depth.mp4`` / ``normals.mp4``: colour-mapped videos at the output frame rate (input rate / stride);
  the depth colours use one range for the whole sequence (1st-99th percentile of sampled frames).
* ``depth16/<k:06d>.png`` (``depth_png``): 16-bit depth, ``round(depth * depth_scale)``, 0 = invalid; the scale
  defaults to the finest that holds the checkpoint's ``max_depth`` (:func:`pager.export.depth_png_scale`) and is
  stored in each PNG and in ``video.json`` (``depth_png_scale``), the unit (metres / relative) in each PNG.
* ``pointclouds/<k:06d>.<ply|glb>`` every ``pointcloud_every`` frames.
* ``video.json``: the settings (output frame ``k`` is input frame ``start + k * stride``), progress, and per
  frame the scale applied (``exp(beta)``), the estimated yaw shift in columns and the estimated camera
  motion since the previous frame (``rotation_deg``; ``translation`` ``[x, y, z]`` in the previous frame's
  camera axes, in the unit of the output depth).

Resume: after each batch the arrays are flushed, then ``.video_state.npz`` (progress and the temporal
state) and ``video.json`` are replaced atomically; a run in a folder holding a ``video.json`` with the
same settings continues after the last completed frame. The videos are encoded at the end from the
arrays (so an interrupted run never leaves a truncated video). PNGs and point clouds are written
atomically, each on its own.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from pager.video.consistency import BackwardSmoother, TemporalAligner, inverse_pose
from pager.video.io import FrameSource, VideoWriter

logger = logging.getLogger(__name__)

__all__ = ["VideoOptions", "planned_outputs", "check_outputs", "process_video", "STATE_FILE", "INFO_FILE"]

STATE_FILE = ".video_state.npz"
INFO_FILE = "video.json"


@dataclass
class VideoOptions:
    """Settings of one ``pager video`` run (see ``pager video --help``)."""

    modalities: Sequence[str] = ("depth", "normals")
    batch_size: int = 1
    face_size: Optional[int] = None
    output_height: Optional[int] = None
    alignment: str = "auto"  # auto: align relative models, keep metric ones; none: independent frames
    filter_strength: float = 0.0
    tau: float = 0.05
    motion_compensation: str = "pose"  # pose | yaw | none (pager.video.consistency.MOTION_MODES)
    causal_filter: bool = False  # forward filter only; else two-sided (BackwardSmoother after the last frame)
    depth_png: bool = False
    depth_scale: Optional[float] = None  # None: pager.export.depth_png_scale(the checkpoint's max_depth)
    pointcloud_every: int = 0
    pointcloud_format: str = "ply"
    pointcloud_max_points: Optional[int] = 500_000
    videos: bool = True
    keep_arrays: bool = True
    video_ext: str = ".mp4"
    pipeline_kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.alignment not in ("auto", "none"):
            raise ValueError(f"--alignment must be 'auto' or 'none', got {self.alignment!r}")
        if not 0.0 <= self.filter_strength < 1.0:
            raise ValueError(f"--temporal_filter must be in [0, 1), got {self.filter_strength}")
        if not self.tau > 0:
            raise ValueError(f"--tau must be > 0, got {self.tau}")
        if isinstance(self.motion_compensation, bool):  # the earlier on/off switch
            self.motion_compensation = "pose" if self.motion_compensation else "none"
        from pager.video.consistency import MOTION_MODES

        if self.motion_compensation not in MOTION_MODES:
            raise ValueError(f"--motion_compensation must be one of {', '.join(MOTION_MODES)}, got {self.motion_compensation!r}")
        if self.depth_scale is not None and not (np.isfinite(self.depth_scale) and self.depth_scale > 0):
            raise ValueError(f"--depth_scale must be a positive number, got {self.depth_scale}")
        if self.pointcloud_every < 0:
            raise ValueError(f"--pointcloud_every must be >= 0, got {self.pointcloud_every}")
        if self.pointcloud_format not in ("ply", "glb"):
            raise ValueError(f"--pointcloud_format must be ply or glb, got {self.pointcloud_format!r}")
        if not self.keep_arrays and not self.videos and not self.depth_png:
            raise ValueError("nothing to write: --no_arrays needs the videos or --depth_png")


def _array_names(opts: VideoOptions) -> Dict[str, str]:
    prefix = "" if opts.keep_arrays else "."
    names = {"depth": f"{prefix}depth.npy", "depth_mask": f"{prefix}depth_mask.npy"} if "depth" in opts.modalities else {}
    if "normals" in opts.modalities:
        names["normals"] = f"{prefix}normals.npy"
    return names


def planned_outputs(out_dir: Path, n: int, opts: VideoOptions) -> List[Path]:
    """Every file a run writes into ``out_dir`` (for the overwrite check), ``video.json`` first."""
    out = [out_dir / INFO_FILE, out_dir / STATE_FILE] + [out_dir / v for v in _array_names(opts).values()]
    if opts.videos:
        out += [out_dir / f"{m}{opts.video_ext}" for m in opts.modalities]
    if opts.depth_png and "depth" in opts.modalities:
        out += [out_dir / "depth16" / f"{k:06d}.png" for k in range(n)]
    if opts.pointcloud_every and "depth" in opts.modalities:
        out += [out_dir / "pointclouds" / f"{k:06d}.{opts.pointcloud_format}" for k in range(0, n, opts.pointcloud_every)]
    return out


def _settings(source: FrameSource, opts: VideoOptions, checkpoint: Any) -> Dict[str, Any]:
    d = asdict(opts)
    d["modalities"] = list(opts.modalities)
    return {"input": str(Path(source.name).resolve()) if Path(source.name).exists() else source.name,
            "input_frames": source.count, "start_end_stride": list(source.selection), "fps": source.fps,
            "checkpoint": checkpoint, "options": d}


def check_outputs(out_dir: Path, source: FrameSource, opts: VideoOptions, checkpoint: Any, overwrite: bool) -> tuple:
    """Decide, before the model is loaded, whether ``out_dir`` is new, resumed or refused.

    Returns ``(done, complete)``: frames already written (0 for a new run) and whether that run
    finished. A ``video.json`` with the same
    settings means resume; with other settings, or any other existing output file, ``FileExistsError``
    names the file (unless ``overwrite``, which starts afresh).
    """
    from pager.io_utils import check_outputs as check_planned

    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    info_path = out_dir / INFO_FILE
    if not overwrite and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot parse {info_path}: {exc}; pass --overwrite to start afresh") from exc
        old = info.get("settings", {})
        new = json.loads(json.dumps(_settings(source, opts, checkpoint)))
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diff:
            detail = diff[0]
            if detail == "options":
                detail = next(k for k in sorted(set(old.get("options", {})) | set(new["options"]))
                              if old.get("options", {}).get(k) != new["options"].get(k))
            raise FileExistsError(f"{info_path} belongs to a run with other settings ({detail} differs); "
                                  "pass --overwrite to replace it, or use another --out")
        done = int(info.get("done", 0))
        state = out_dir / STATE_FILE
        if done and not state.is_file():
            raise FileExistsError(f"{info_path} says {done} frames are done but {state} is missing; pass --overwrite to start afresh")
        from pager.io_utils import check_writable_folder

        check_writable_folder(out_dir)
        return done, bool(info.get("complete", False))
    # a new run: the rule of every command (pager.io_utils.check_outputs): existing files refused by name
    check_planned(planned_outputs(out_dir, len(source), opts), overwrite=overwrite)
    if overwrite:
        for p in (info_path, out_dir / STATE_FILE):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return 0, False


def _atomic_json(path: Path, data: Dict[str, Any]) -> None:
    from pager.io_utils import atomic_save

    atomic_save(path, (json.dumps(data, indent=1) + "\n").encode())


def _open_array(path: Path, shape, dtype, resume: bool) -> np.ndarray:
    """A ``.npy`` memory map: the existing one on resume (shape checked), else a new one created atomically."""
    from numpy.lib.format import open_memmap

    if resume:
        mm = open_memmap(path, mode="r+")
        if mm.shape != tuple(shape) or mm.dtype != np.dtype(dtype):
            raise ValueError(f"{path}: expected {dtype} {tuple(shape)} to resume, found {mm.dtype} {mm.shape}; pass --overwrite")
        return mm
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mm = open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
    os.replace(tmp, path)
    return mm


def _colour_range(depth: np.ndarray, mask: np.ndarray, samples: int = 32) -> tuple:
    """1st and 99th percentile of the valid depth of up to ``samples`` evenly spaced frames."""
    idx = np.unique(np.linspace(0, depth.shape[0] - 1, min(samples, depth.shape[0])).round().astype(int))
    vals = np.concatenate([depth[i][mask[i]][::7] for i in idx])
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [1.0, 99.0])
    return float(lo), float(max(hi, lo * (1 + 1e-6) + 1e-9))


def encode_videos(out_dir: Path, arrays: Dict[str, np.ndarray], fps: float, opts: VideoOptions, progress: bool) -> List[Path]:
    """Colour-mapped depth / normals videos from the arrays (one colour range for the whole sequence)."""
    from tqdm.auto import tqdm

    from pager.export import colorize_depth, normals_to_rgb

    written = []
    if "depth" in arrays:
        lo, hi = _colour_range(arrays["depth"], arrays["depth_mask"])
        with VideoWriter(out_dir / f"depth{opts.video_ext}", fps) as vw:
            for k in tqdm(range(arrays["depth"].shape[0]), desc="depth video", unit="frame", disable=not progress):
                vw.write(colorize_depth(np.asarray(arrays["depth"][k]), np.asarray(arrays["depth_mask"][k]), vmin=lo, vmax=hi))
        written.append(vw.path)
    if "normals" in arrays:
        with VideoWriter(out_dir / f"normals{opts.video_ext}", fps) as vw:
            for k in tqdm(range(arrays["normals"].shape[0]), desc="normals video", unit="frame", disable=not progress):
                n = np.asarray(arrays["normals"][k], dtype=np.float32)
                vw.write(normals_to_rgb(n, np.abs(n).sum(-1) > 0))
        written.append(vw.path)
    return written


#: Working arrays of the two-sided filter (forward output, aligned unfiltered depth, estimated motions).
TWO_SIDED_ARRAYS = {"depth_forward": ".depth_forward.npy", "depth_aligned": ".depth_aligned.npy", "motion": ".motion.npy"}


def _backward_pass(arrays: Dict[str, np.ndarray], opts: VideoOptions, progress: bool) -> None:
    """Second pass of the two-sided filter (:class:`pager.video.consistency.BackwardSmoother`), last frame
    first, from the working arrays into ``depth``; it reads only the working arrays, so an interrupted pass
    is simply run again."""
    from tqdm.auto import tqdm

    back = BackwardSmoother(opts.filter_strength, opts.tau)
    n = arrays["depth"].shape[0]
    for k in tqdm(range(n - 1, -1, -1), desc="two-sided filter", unit="frame", disable=not progress):
        nxt = np.asarray(arrays["motion"][k + 1]) if k + 1 < n else None
        nxt = None if nxt is None or not np.isfinite(nxt).all() else inverse_pose(torch.from_numpy(nxt))
        s = back.step(torch.from_numpy(np.asarray(arrays["depth_aligned"][k])), torch.from_numpy(np.asarray(arrays["depth_mask"][k])),
                      torch.from_numpy(np.asarray(arrays["depth_forward"][k])), nxt)
        arrays["depth"][k] = s.numpy()
    arrays["depth"].flush()


def _depth_png_options(pipe: Any, opts: VideoOptions) -> Dict[str, Any]:
    """``scale`` and ``unit`` of the 16-bit depth PNGs: ``--depth_scale``, else the finest scale that holds the
    checkpoint's ``max_depth``; metres or relative after the checkpoint."""
    from pager.export import depth_png_scale

    cfg = pipe.model.configs["depth"]
    scale = opts.depth_scale if opts.depth_scale is not None else depth_png_scale(cfg.max_depth)
    return {"scale": float(scale), "unit": "metres" if cfg.metric_depth else "relative"}


def _derived_outputs(out_dir: Path, source: FrameSource, arrays: Dict[str, np.ndarray], size: tuple, opts: VideoOptions,
                     progress: bool, png: Dict[str, Any]) -> None:
    """16-bit PNGs and point clouds of the final depth (two-sided filter: after the backward pass; the
    point clouds' colours are the frames decoded again, resized to the output size)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from pager.export import erp_point_cloud, save_depth_png16, save_point_cloud

    if not (opts.depth_png or opts.pointcloud_every):
        return
    frames = source.frames() if opts.pointcloud_every else ((k, None, None) for k in range(arrays["depth"].shape[0]))
    for k, _, rgb in tqdm(frames, total=arrays["depth"].shape[0], desc="depth files", unit="frame", disable=not progress):
        depth, mask = np.asarray(arrays["depth"][k]), np.asarray(arrays["depth_mask"][k])
        if opts.depth_png:
            save_depth_png16(out_dir / "depth16" / f"{k:06d}.png", depth, mask=mask, **png)
        if opts.pointcloud_every and k % opts.pointcloud_every == 0:
            if rgb.shape[:2] != tuple(size):
                rgb = np.asarray(Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize((size[1], size[0]), Image.BILINEAR))
            normals = np.asarray(arrays["normals"][k], dtype=np.float32) if "normals" in arrays else None
            cloud = erp_point_cloud(depth, colors=rgb, mask=mask, normals=normals, max_points=opts.pointcloud_max_points,
                                    unit=png["unit"])
            save_point_cloud(out_dir / "pointclouds" / f"{k:06d}.{opts.pointcloud_format}", cloud)


def process_video(pipe: Any, source: FrameSource, out_dir: Path, opts: VideoOptions, done: int = 0,
                  checkpoint: Any = None, progress: bool = True) -> Dict[str, Any]:
    """Predict every selected frame of ``source`` with ``pipe`` and write the outputs (module docstring).

    ``done``: frames already written by an earlier run with the same settings (:func:`check_outputs`);
    they are skipped. Returns the content of ``video.json`` (settings, frame rate, per-frame scales,
    ``seconds``, ``frames_per_second`` of this run's prediction loop).
    """
    from tqdm.auto import tqdm

    from pager.export import erp_point_cloud, save_depth_png16, save_point_cloud

    out_dir.mkdir(parents=True, exist_ok=True)
    mods = [m for m in opts.modalities]
    n = len(source)
    h0, w0 = source.size
    size = (int(opts.output_height), 2 * int(opts.output_height)) if opts.output_height else (h0, w0)
    if w0 != 2 * h0:
        warnings.warn(f"{source.name}: {w0}x{h0} frames are not 2:1 equirectangular; they are read as full spheres (stretched)",
                      UserWarning, stacklevel=2)
    meta0 = {}
    relative = "depth" in mods and not pipe.model.configs["depth"].metric_depth
    aligner = TemporalAligner(align=relative and opts.alignment == "auto", filter_strength=opts.filter_strength,
                              tau=opts.tau, motion_compensation=opts.motion_compensation)
    info: Dict[str, Any] = {"settings": _settings(source, opts, checkpoint), "fps": source.output_fps,
                            "frames": n, "size": list(size), "done": done, "complete": False,
                            "first_input_frame": source.indices[0], "scale": [], "yaw_shift": [],
                            "rotation_deg": [], "translation": []}
    png = _depth_png_options(pipe, opts) if "depth" in mods else {}
    if opts.depth_png and png:
        info["depth_png_scale"] = png["scale"]
    resume = done > 0
    if resume:
        old = json.loads((out_dir / INFO_FILE).read_text())
        for key in ("scale", "yaw_shift", "rotation_deg", "translation"):
            info[key] = old.get(key, [])[:done]
        with np.load(out_dir / STATE_FILE, allow_pickle=False) as z:
            if int(z["done"]) != done:
                raise ValueError(f"{out_dir / STATE_FILE} is at frame {int(z['done'])}, {out_dir / INFO_FILE} at {done}; pass --overwrite")
            aligner.load_state_dict({k[len("state_"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("state_")})
    names = _array_names(opts)
    two_sided = "depth" in mods and opts.filter_strength > 0 and not opts.causal_filter
    if two_sided:  # working arrays of the two-sided filter, deleted when the run is complete
        names.update(TWO_SIDED_ARRAYS)
    shapes = {"depth": ((n,) + size, np.float32), "depth_mask": ((n,) + size, np.bool_), "normals": ((n,) + size + (3,), np.float16),
              "depth_forward": ((n,) + size, np.float32), "depth_aligned": ((n,) + size, np.float32), "motion": ((n, 4, 4), np.float64)}
    arrays = {k: _open_array(out_dir / v, *shapes[k], resume=resume) for k, v in names.items()}
    bar = tqdm(total=n, initial=done, desc="pager video", unit="frame", disable=not progress)
    t0, new_frames = time.perf_counter(), 0
    batch: List[tuple] = []

    def flush(batch: List[tuple]) -> None:
        nonlocal new_frames
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not a 2:1 equirectangular.*")
            out = pipe([rgb for _, _, rgb in batch], modalities=mods, face_size=opts.face_size, batch_size=len(batch),
                       output_height=opts.output_height, show_progress=False, **opts.pipeline_kwargs)
        if not meta0:
            meta0.update(out.metadata[0])
        for j, (k, _, _) in enumerate(batch):
            depth = mask = normals = None
            if "depth" in mods:
                d = torch.from_numpy(np.asarray(out.depth[j]))
                mask = np.asarray(out.depth_mask[j])
                aligned, step = aligner.step(d, torch.from_numpy(mask), torch.from_numpy(np.asarray(out.rgb[j])))
                depth = aligned.numpy().astype(np.float32)
                info["scale"].append(step["scale"])
                info["yaw_shift"].append(int(step["yaw_shift"]))
                info["rotation_deg"].append(step["rotation_deg"])
                info["translation"].append(step["translation"])
                arrays["depth"][k] = depth
                arrays["depth_mask"][k] = mask
                if two_sided:
                    arrays["depth_forward"][k] = depth
                    arrays["depth_aligned"][k] = np.where(mask, np.asarray(out.depth[j], dtype=np.float64) * step["scale"], 0.0)
                    pose = step.get("src_from_tgt")
                    arrays["motion"][k] = np.full((4, 4), np.nan) if pose is None else pose.numpy()
                elif opts.depth_png:  # (two-sided: the final depth, its PNG and point cloud come after the backward pass)
                    save_depth_png16(out_dir / "depth16" / f"{k:06d}.png", depth, mask=mask, **png)
            if "normals" in mods:
                nm = np.asarray(out.normals_mask[j])
                normals = np.where(nm[..., None], np.asarray(out.normals[j]), 0.0)
                arrays["normals"][k] = normals.astype(np.float16)
            if opts.pointcloud_every and depth is not None and k % opts.pointcloud_every == 0 and not two_sided:
                cloud = erp_point_cloud(depth, colors=np.asarray(out.rgb[j]), mask=mask, normals=normals,
                                        max_points=opts.pointcloud_max_points, unit=png["unit"])
                save_point_cloud(out_dir / "pointclouds" / f"{k:06d}.{opts.pointcloud_format}", cloud)
        for a in arrays.values():
            a.flush()
        last = batch[-1][0] + 1
        state = {f"state_{k}": v.numpy() for k, v in aligner.state_dict().items()}
        from pager.io_utils import atomic_write

        with atomic_write(out_dir / STATE_FILE) as fh:
            np.savez(fh, done=np.int64(last), **state)
        info["done"] = last
        _atomic_json(out_dir / INFO_FILE, info)
        new_frames += len(batch)
        bar.update(len(batch))

    try:
        for k, idx, rgb in source.frames(skip=done):
            batch.append((k, idx, rgb))
            if len(batch) == opts.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    except BaseException:
        if not (out_dir / INFO_FILE).exists():  # no frame was recorded: nothing to resume, leave nothing behind
            arrays.clear()
            for v in names.values():
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / v).unlink()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if info["done"] != n:
        raise ValueError(f"{source.name}: only {info['done']} of {n} frames could be decoded")
    info["seconds"] = seconds
    info["frames_per_second"] = new_frames / seconds if new_frames and seconds > 0 else None
    if two_sided:
        _backward_pass(arrays, opts, progress)
        _derived_outputs(out_dir, source, arrays, size, opts, progress, png)
    info["depth_unit"] = meta0.get("depth_unit", "relative" if relative else "m") if "depth" in mods else None
    if opts.videos:
        info["videos"] = [p.name for p in encode_videos(out_dir, arrays, source.output_fps, opts, progress)]
    for a in arrays.values():
        del a
    arrays.clear()
    if not opts.keep_arrays:
        for k, v in names.items():
            if k not in TWO_SIDED_ARRAYS:
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / v).unlink()
    info["complete"] = True
    _atomic_json(out_dir / INFO_FILE, info)
    for k in TWO_SIDED_ARRAYS if two_sided else ():  # after "complete": a resumed run never needs them again
        with contextlib.suppress(FileNotFoundError):
            (out_dir / names[k]).unlink()
    return info
