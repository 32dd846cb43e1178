"""The plain-file panorama layout written by ``pager synth`` (read by ``Synthetic`` and ``PanoInfinigen``).

Layout under a dataset folder ``<root>``::

    <root>/meta.json                                         depth encoding (see below)
    <root>/{indoor,outdoor}/{train,val,test}.txt             optional: the scene ids of each split
    <root>/{indoor,outdoor}/{split}/<scene_id>/<view:04d>_rgb.png
                                              /<view:04d>_depth.png     uint16, metres = value * depth_scale
                                              /<view:04d>_normals.png or _normals.npy   (optional)
                                              /<view:04d>_mask.png      (optional) > 0 = valid

``meta.json`` keys read here: ``depth_scale`` (metres per depth step; default 0.001),
``depth_invalid`` (the stored value meaning "unknown"; default 0), ``normals_frame``
(``"pager"`` = our world frame, the default, or ``"reference"`` = x forward, y up, z left, converted by
negating z). ``_normals.png`` is decoded as ``n = v / vmax * 2 - 1`` (vmax 255 or 65535) and
normalised (16-bit RGB PNGs are decoded with all 16 bits, which Pillow cannot do);
``_normals.npy`` holds float ``[H, W, 3]`` (or ``[3, H, W]``; float16 as written by ``pager synth``).
Depth ranges of ``Synthetic`` come from ``min_depth`` / ``max_depth_indoor`` / ``max_depth_outdoor``.
Sample id: ``<indoor|outdoor>__<scene_id>__<view:04d>``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from pager.data.dataset import RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_image, read_list, read_png16, read_rgb, stems_by_suffix

# every file a view may have: views are the union over all of them (a view whose RGB is missing but whose
# depth exists is still listed, and its missing file is reported when it is checked or read)
VIEW_SUFFIXES = ("_rgb.png", "_depth.png", "_normals.npy", "_normals.png", "_mask.png")
_VIEW_RE = re.compile(r"^\d+$")

DEFAULT_META: Dict[str, Any] = {"depth_scale": 0.001, "depth_invalid": 0, "normals_frame": "pager"}


def read_meta(root: Path) -> Dict[str, Any]:
    """``<root>/meta.json`` merged over :data:`DEFAULT_META` (a missing file gives the defaults)."""
    meta = dict(DEFAULT_META)
    path = root / "meta.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot parse {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a JSON object")
        meta.update(loaded)
    if meta.get("normals_frame") not in ("pager", "reference"):
        raise ValueError(f"{path}: normals_frame must be 'pager' or 'reference', got {meta.get('normals_frame')!r}")
    if not float(meta["depth_scale"]) > 0:
        raise ValueError(f"{path}: depth_scale must be > 0, got {meta['depth_scale']!r}")
    return meta


def has_plain_layout(split_dir: Path) -> bool:
    """Whether ``split_dir`` (``<root>/<scene_type>/<split>``) holds scene folders with view files (any modality)."""
    return split_dir.is_dir() and any(
        any(_VIEW_RE.match(v) for v in stems_by_suffix(d, VIEW_SUFFIXES)) for d in split_dir.iterdir() if d.is_dir()
    )


def list_plain(root: Path, split: str, scene_types: Sequence[str]) -> List[SampleRecord]:
    """Records of the plain layout for ``split`` and the given scene types."""
    records = []
    for scene_type in scene_types:
        split_dir = root / scene_type / split
        list_file = root / scene_type / f"{split}.txt"
        if list_file.is_file():
            scenes = read_list(list_file, what="split list")
            scene_dirs = [split_dir / s for s in scenes]
        elif split_dir.is_dir():
            scene_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        else:
            continue
        for scene_dir in scene_dirs:
            if not scene_dir.is_dir():
                raise FileNotFoundError(f"scene folder listed in {list_file} not found: {scene_dir}")
            for view in stems_by_suffix(scene_dir, VIEW_SUFFIXES):
                if not _VIEW_RE.match(view):
                    continue
                files = {"rgb": scene_dir / f"{view}_rgb.png", "depth": scene_dir / f"{view}_depth.png"}
                for name in (f"{view}_normals.npy", f"{view}_normals.png"):
                    if (scene_dir / name).exists():
                        files["normals"] = scene_dir / name
                        break
                if (scene_dir / f"{view}_mask.png").exists():
                    files["mask"] = scene_dir / f"{view}_mask.png"
                records.append(
                    SampleRecord(
                        id=safe_id(scene_type, scene_dir.name, view),
                        scene_type=scene_type,
                        files=files,
                        extra={"layout": "plain"},
                    )
                )
    return records


def _is_png_rgb16(path: Path) -> bool:
    """Whether ``path`` is a PNG with 16-bit RGB pixels (IHDR bit depth 16, colour type 2)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] == 2


def decode_normals_file(path: Path, frame: str) -> np.ndarray:
    """Read ``_normals.png`` / ``_normals.npy`` -> normals ``[H, W, 3]`` in OUR frame (normalised by the base)."""
    if path.suffix == ".npy":
        try:
            n = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"cannot read normals {path}: {exc}") from exc
        if n.ndim == 3 and n.shape[0] == 3 and n.shape[-1] != 3:
            n = np.moveaxis(n, 0, -1)
        n = n.astype(np.float32)
    elif _is_png_rgb16(path):
        # Pillow reads 16-bit RGB PNGs as 8 bits; `pager synth` writes them with its own encoder,
        # whose decoder keeps all 16 bits.
        from pager.data.synthetic.png import decode_png

        n = decode_png(path).astype(np.float32) / 65535.0 * 2.0 - 1.0
    else:
        img = read_image(path, what="normals image")
        if img.shape[2] < 3:
            raise ValueError(f"normals image {path}: expected 3 channels, got {img.shape[2]}")
        vmax = 65535.0 if img.dtype == np.uint16 else 255.0
        n = img[:, :, :3].astype(np.float32) / vmax * 2.0 - 1.0
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals {path}: expected [H, W, 3], got shape {n.shape}")
    if frame == "reference":
        n[:, :, 2] *= -1.0
    return n


def load_plain(record: SampleRecord, meta: Dict[str, Any], dataset: str) -> RawSample:
    """Decode one plain-layout sample (depth in metres, normals in our frame, optional mask)."""
    rgb = read_rgb(record.files["rgb"], what=f"{dataset} rgb")
    raw = read_png16(record.files["depth"], what=f"{dataset} depth")
    depth = raw.astype(np.float32) * float(meta["depth_scale"])
    depth[raw == int(meta["depth_invalid"])] = 0.0
    normals = None
    if "normals" in record.files:
        normals = decode_normals_file(Path(record.files["normals"]), meta["normals_frame"])
    valid = None
    if "mask" in record.files:
        m = read_image(record.files["mask"], what=f"{dataset} mask")
        valid = (m > 0).any(axis=2)
    return RawSample(rgb=rgb, depth=depth, normals=normals, valid=valid)
