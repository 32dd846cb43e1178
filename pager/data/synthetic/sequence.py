"""Procedural 360° video: a camera moving through a procedural scene, with exact per-frame geometry and poses.

``render_sequence(seed, kind, motion, frames, height)`` takes the scene of ``seed`` (the same scenes as
``pager synth``) and moves its camera frame by frame:

* ``yaw``: the camera turns about the up axis by ``yaw_step`` degrees per frame (an ERP column roll);
* ``translate``: the camera moves in a straight horizontal line, ``speed`` metres per frame (default
  0.05 m indoors, 0.25 m outdoors), in the direction (of 16) that stays clearest of the objects; outdoors
  along the street;
* ``both``: both at once.

Every frame is rendered like a single panorama (RGB, range depth, normals, mask; see
:mod:`pager.data.synthetic.raycast`), and its camera-to-world pose is recorded
(:func:`pager.geometry.warp.yaw_pose` of ``(Scene.yaw, Scene.camera)``: world = the scene frame).

On disk (``write_sequences``, ``pager synth --sequence``) a set of sequences uses the plain layout of
``pager synth`` with one scene folder per sequence and one *view* per frame, so the ``Synthetic``
dataset (``inference.py --dataset Synthetic --split test``) reads every frame as a sample::

    <out>/meta.json                                   as pager synth, plus "sequence": {motion, frames, fps, ...}
    <out>/{indoor,outdoor}/test.txt                   sequence ids
    <out>/{indoor,outdoor}/test/<seq_id>/<frame:04d>_rgb.png | _depth.png | _mask.png | _normals.npy
    <out>/{indoor,outdoor}/test/<seq_id>/poses.json   {"poses": [[4 x 4] per frame], "fps": .., "motion": ..}

``poses.json`` holds camera-to-world matrices (rows), camera frame of ``pager.geometry`` (x forward,
y up, z right), metres. :func:`read_sequence` / :func:`list_sequences` read it back
(:class:`SequenceFrames`), which is what ``evaluation/video_evaluation.py`` uses.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from pager.data.synthetic.raycast import SyntheticPanorama, render
from pager.data.synthetic.scene import Scene, _clearance, make_scene

logger = logging.getLogger(__name__)

MOTIONS = ("yaw", "translate", "both")
DEFAULT_YAW_STEP_DEG = 2.0
DEFAULT_SPEED = {"indoor": 0.05, "outdoor": 0.25}
DEFAULT_FPS = 10.0
SEQUENCE_SPLIT = "test"
_CLEARANCE = {"indoor": 0.3, "outdoor": 1.0}


def camera_pose(scene: Scene) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` float64 of a scene's camera (rotation about +y by ``yaw``, centre ``camera``)."""
    from pager.geometry.warp import yaw_pose

    return yaw_pose(scene.yaw, scene.camera).numpy()


def _path_clearance(scene: Scene, points: np.ndarray) -> float:
    """Smallest clearance of ``points [N, 3]`` to the scene's objects (and, indoors, to the room walls)."""
    objs = list(scene.objects[1:])
    best = min(_clearance(p, objs) for p in points) if objs else math.inf
    room = scene.objects[0]
    if scene.kind == "indoor":
        lo, hi = np.asarray(room.lo), np.asarray(room.hi)
        best = min(best, float(np.min(np.minimum(points - lo, hi - points)[:, [0, 2]])))
    return best


def camera_path(scene: Scene, motion: str, frames: int, yaw_step_deg: float = DEFAULT_YAW_STEP_DEG,
                speed: Optional[float] = None) -> List[Scene]:
    """The scene once per frame with its camera moved (see the module docstring); frame 0 is ``scene``.

    Translation: of 16 horizontal directions (indoors; outdoors +x / -x, along the street) the one whose
    straight path keeps the largest clearance; the speed is halved (down to 1/8) while the best path
    comes closer than 0.3 m (indoors) / 1 m (outdoors) to an object or wall.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    if not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    yaws = scene.yaw + math.radians(yaw_step_deg) * np.arange(frames) * (motion in ("yaw", "both"))
    cam = np.asarray(scene.camera, dtype=np.float64)
    offsets = np.zeros((frames, 3))
    if motion in ("translate", "both"):
        step = DEFAULT_SPEED[scene.kind] if speed is None else float(speed)
        if not step > 0:
            raise ValueError(f"speed must be > 0 metres per frame, got {speed!r}")
        angles = np.arange(16) * (2 * math.pi / 16) if scene.kind == "indoor" else np.array([0.0, math.pi])
        k = np.arange(frames)[:, None]
        for _ in range(4):
            paths = [cam + k * step * np.array([math.cos(a), 0.0, math.sin(a)]) for a in angles]
            clear = [_path_clearance(scene, p) for p in paths]
            best = int(np.argmax(clear))
            if clear[best] >= _CLEARANCE[scene.kind]:
                break
            step /= 2.0
        offsets = paths[best] - cam
    return [dataclasses.replace(scene, camera=tuple(float(v) for v in cam + offsets[i]), yaw=float(yaws[i]))
            for i in range(frames)]


def render_sequence(seed: int, kind: Literal["indoor", "outdoor"], motion: str = "both", frames: int = 24,
                    height: int = 256, supersample: int = 1, yaw_step_deg: float = DEFAULT_YAW_STEP_DEG,
                    speed: Optional[float] = None) -> Tuple[List[SyntheticPanorama], np.ndarray]:
    """Render ``frames`` panoramas of the scene of ``seed`` along :func:`camera_path`.

    Returns ``(panoramas, poses)``: ``height x 2 height`` :class:`SyntheticPanorama` per frame and the
    camera-to-world poses ``[frames, 4, 4]`` (float64, metres). Deterministic for equal arguments.
    """
    scenes = camera_path(make_scene(int(seed), kind), motion, frames, yaw_step_deg, speed)
    panos = [render(s, height=height, supersample=supersample) for s in scenes]
    return panos, np.stack([camera_pose(s) for s in scenes])


def write_sequences(out_dir: str | os.PathLike, num: int = 2, frames: int = 24, motion: str = "both",
                    height: int = 256, scenes: str = "both", seed: int = 0, fps: float = DEFAULT_FPS,
                    yaw_step_deg: float = DEFAULT_YAW_STEP_DEG, speed: Optional[float] = None,
                    supersample: int = 1, overwrite: bool = False, progress: bool = True) -> Path:
    """Render ``num`` sequences of ``frames`` frames into ``out_dir`` (layout: module docstring).

    Scenes are those of ``pager synth --num num --seed seed --scenes scenes`` (same seeds and ids). The
    folder is built under a temporary name and renamed when complete; a non-empty ``out_dir`` raises
    ``FileExistsError`` unless ``overwrite``. Returns ``out_dir``.
    """
    from tqdm.auto import tqdm

    from pager.data.synthetic.writer import (DEPTH_PNG_SCALE, GENERATOR_VERSION, _check_out, _kinds,
                                             _write_files_split, scene_id, scene_seed)
    from pager.io_utils import atomic_directory

    out = Path(out_dir)
    for name, value, lo in (("num", num, 1), ("frames", frames, 1), ("height", height, 2), ("supersample", supersample, 1)):
        if not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    kinds = _kinds(scenes)
    counts = {k: num // len(kinds) + (1 if n < num % len(kinds) else 0) for n, k in enumerate(kinds)}  # as pager synth
    replace = _check_out(out, overwrite)
    bar = tqdm(total=num * frames, desc="pager synth --sequence", unit="frame", disable=not progress)
    with atomic_directory(out, overwrite=replace) as tmp:
        for kind in kinds:
            if counts[kind] == 0:
                continue
            ids = []
            for i in range(counts[kind]):
                s = scene_seed(int(seed), kind, i)
                sid = scene_id(kind, i, s)
                panos, poses = render_sequence(s, kind, motion, int(frames), int(height), int(supersample), yaw_step_deg, speed)
                split_dir = tmp / kind / SEQUENCE_SPLIT
                _write_files_split(split_dir, None, ((sid, f, p) for f, p in enumerate(panos)), "npy")
                (split_dir / sid / "poses.json").write_text(json.dumps({
                    "poses": poses.tolist(), "fps": float(fps), "motion": motion, "kind": kind, "seed": s,
                    "pose": "camera-to-world 4x4 (rows); camera frame x forward, y up, z right; world = scene frame, metres",
                }, indent=1) + "\n")
                ids.append(sid)
                bar.update(int(frames))
            (tmp / kind / f"{SEQUENCE_SPLIT}.txt").write_text("".join(f"{sid}\n" for sid in ids))
        meta = {
            "generator": "pager.data.synthetic.sequence", "generator_version": GENERATOR_VERSION, "format": "files",
            "num": int(num), "height": int(height), "width": 2 * int(height), "scenes": scenes, "seed": int(seed),
            "max_depth_indoor": 15.0, "max_depth_outdoor": 75.0, "depth_scale": DEPTH_PNG_SCALE, "depth_invalid": 0,
            "depth_png": "uint16 grey, metres = value * depth_scale, 0 = invalid", "normals_frame": "pager",
            "normals_file": "<frame>_normals.npy float16 [H, W, 3], 0 = invalid",
            "mask_png": "uint8 grey, 255 = valid, 0 = sky or beyond the max depth",
            "sequence": {"motion": motion, "frames": int(frames), "fps": float(fps), "yaw_step_deg": float(yaw_step_deg),
                         "speed": speed, "split": SEQUENCE_SPLIT, "poses": "<seq_id>/poses.json"},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    bar.close()
    logger.info("wrote %d sequence(s) of %d frames to %s", num, frames, out)
    return out


@dataclass
class SequenceFrames:
    """One sequence on disk: ``folder`` with ``<frame:04d>_*`` files and ``poses [N, 4, 4]`` (camera-to-world)."""

    folder: Path
    frames: List[str]
    poses: np.ndarray
    fps: float
    kind: str
    depth_scale: float
    max_depth: float

    def __len__(self) -> int:
        return len(self.frames)

    def rgb_path(self, i: int) -> Path:
        return self.folder / f"{self.frames[i]}_rgb.png"

    def load(self, i: int) -> Dict[str, np.ndarray]:
        """Frame ``i``: ``depth [H, W]`` float32 metres (0 = invalid), ``mask [H, W]`` bool, ``normals [H, W, 3]``."""
        from pager.data.readers._io import read_image, read_png16

        stem = self.folder / self.frames[i]
        raw = read_png16(Path(f"{stem}_depth.png"), what="sequence depth")
        depth = raw.astype(np.float32) * np.float32(self.depth_scale)
        mask = raw > 0
        if Path(f"{stem}_mask.png").is_file():
            mask &= (read_image(Path(f"{stem}_mask.png"), what="sequence mask") > 0).any(axis=2)
        out = {"depth": np.where(mask, depth, 0.0).astype(np.float32), "mask": mask}
        if Path(f"{stem}_normals.npy").is_file():
            out["normals"] = np.load(f"{stem}_normals.npy", allow_pickle=False).astype(np.float32)
        return out


def read_sequence(folder: str | os.PathLike) -> SequenceFrames:
    """Open one sequence folder (``.../<seq_id>``) written by :func:`write_sequences`; errors name the file."""
    folder = Path(folder)
    poses_file = folder / "poses.json"
    if not poses_file.is_file():
        raise FileNotFoundError(f"not a sequence folder (no poses.json): {folder}")
    try:
        info = json.loads(poses_file.read_text())
        poses = np.asarray(info["poses"], dtype=np.float64)
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read camera poses from {poses_file}: {exc}") from exc
    frames = sorted(p.name[: -len("_rgb.png")] for p in folder.glob("*_rgb.png"))
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] != len(frames):
        raise ValueError(f"{poses_file}: expected {len(frames)} poses [4, 4] (one per *_rgb.png), got shape {poses.shape}")
    meta_file = folder.parent.parent.parent / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    kind = str(info.get("kind", folder.parent.parent.name))
    return SequenceFrames(folder=folder, frames=frames, poses=poses, fps=float(info.get("fps", DEFAULT_FPS)), kind=kind,
                          depth_scale=float(meta.get("depth_scale", 0.002)),
                          max_depth=float(meta.get(f"max_depth_{kind}", 15.0 if kind == "indoor" else 75.0)))


def list_sequences(root: str | os.PathLike, scenes: Sequence[str] = ("indoor", "outdoor")) -> List[SequenceFrames]:
    """Every sequence under a ``write_sequences`` folder (or ``root`` itself if it is one sequence)."""
    root = Path(root)
    if (root / "poses.json").is_file():
        return [read_sequence(root)]
    found = sorted(p.parent for kind in scenes for p in (root / kind / SEQUENCE_SPLIT).glob("*/poses.json"))
    if not found:
        raise FileNotFoundError(f"no sequences under {root} (expected {root}/<indoor|outdoor>/{SEQUENCE_SPLIT}/<seq_id>/poses.json)")
    return [read_sequence(p) for p in found]
