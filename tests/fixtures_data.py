"""Writers for the on-disk formats of every dataset, and tiny fixture datasets built with them.

Reusable by any test (e.g. evaluation tests that need a small dataset on disk)::

    from tests.fixtures_data import make_dataset
    truth = make_dataset("Matterport3D360", tmp_path, height=16)
    ds = build_dataset("Matterport3D360", tmp_path, "test")

Each ``make_*`` function writes ``<data_path>/<Dataset>/...`` in the exact layout the reader expects
and returns ``{split: {sample_id: Truth}}`` with the depth in metres *as stored* (after the format's
quantisation, 0 where the file says unknown), the analytic depth before quantisation, normals in OUR
world frame (x forward, y up, z right) and the dataset's own validity mask where it has one.

The scene is an axis-aligned box room around the camera (:func:`box_room`), so depth and normals are
known in closed form.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

DPT_TAG = 202021.25


# ----------------------------------------------------------------------------------------------
# Analytic scene
# ----------------------------------------------------------------------------------------------

def erp_rays(height: int, width: int) -> np.ndarray:
    """Unit rays ``[H, W, 3]`` of ERP pixel centres in our frame: (cos p cos t, sin p, cos p sin t)."""
    theta = (np.arange(width) + 0.5) / width * 2 * np.pi - np.pi
    phi = np.pi / 2 - (np.arange(height) + 0.5) / height * np.pi
    t, p = np.meshgrid(theta, phi)
    return np.stack([np.cos(p) * np.cos(t), np.sin(p), np.cos(p) * np.sin(t)], axis=-1)


def box_room(height: int, width: int, half: Tuple[float, float, float] = (3.0, 1.5, 2.0),
             yaw: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Range depth ``[H, W]`` (metres) and inward unit normals ``[H, W, 3]`` (our frame) of a box room.

    The box has half extents ``half`` = (x, y, z) around the camera and is turned by ``yaw`` radians
    about the up axis (positive yaw turns x towards z).
    """
    rays = erp_rays(height, width)
    c, s = np.cos(yaw), np.sin(yaw)
    # box frame coordinates of the rays: rotate by -yaw
    local = np.stack([rays[..., 0] * c + rays[..., 2] * s, rays[..., 1], -rays[..., 0] * s + rays[..., 2] * c], -1)
    with np.errstate(divide="ignore"):
        t = np.array(half)[None, None, :] / np.abs(local)
    axis = np.argmin(t, axis=-1)
    depth = np.take_along_axis(t, axis[..., None], -1)[..., 0]
    n_local = np.zeros_like(local)
    sign = -np.sign(np.take_along_axis(local, axis[..., None], -1)[..., 0])
    np.put_along_axis(n_local, axis[..., None], sign[..., None], -1)
    normals = np.stack([n_local[..., 0] * c - n_local[..., 2] * s, n_local[..., 1],
                        n_local[..., 0] * s + n_local[..., 2] * c], -1)
    return depth.astype(np.float32), normals.astype(np.float32)


def pattern_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 ``[H, W, 3]`` test image (gradients plus a seed-dependent offset)."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    r = (j * 255 // max(width - 1, 1))
    g = (i * 255 // max(height - 1, 1))
    b = np.full_like(i, (37 * seed + 11) % 256)
    return np.stack([r, g, b], -1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Format writers
# ----------------------------------------------------------------------------------------------

def write_dpt(path: Path, depth: np.ndarray) -> Path:
    """``.dpt``: float32 tag 202021.25, int32 width, int32 height, float32 row-major (little-endian)."""
    depth = np.asarray(depth, dtype="<f4")
    h, w = depth.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<fii", DPT_TAG, w, h) + depth.tobytes(order="C"))
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """PNG of a uint8 ``[H, W]`` / ``[H, W, 3]`` or uint16 ``[H, W]`` (mode I;16) array."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError("16-bit PNGs are single channel here")
        img = Image.fromarray(array)
        if img.mode != "I;16":
            img = Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes())
    elif array.dtype == np.uint8:
        img = Image.fromarray(array)
    else:
        raise ValueError(f"write_png: expected uint8 or uint16, got {array.dtype}")
    img.save(path, format="PNG")
    return path


def write_jpg(path: Path, array: np.ndarray, quality: int = 95) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format="JPEG", quality=quality)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def write_lmdb_shard(shard_dir: Path, entries: Dict[str, bytes]) -> Path:
    """An LMDB environment folder ``shard_dir`` holding ``entries`` (str key -> bytes)."""
    import lmdb

    shard_dir = Path(shard_dir)
    shard_dir.parent.mkdir(parents=True, exist_ok=True)
    size = max(1 << 20, 4 * sum(len(v) for v in entries.values()) + (1 << 16))
    env = lmdb.open(str(shard_dir), map_size=size, subdir=True)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key.encode(), value)
    env.close()
    return shard_dir


def write_index(path: Path, rows: Sequence[Tuple[int, str, int]]) -> Path:
    """``index.npy``: an object array of rows (shard, scene_id, num_views)."""
    arr = np.empty((len(rows), 3), dtype=object)
    for i, (shard, scene, views) in enumerate(rows):
        arr[i] = (int(shard), str(scene), int(views))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr, allow_pickle=True)
    return path


def encode_normals_8bit_structured3d(normals_ours: np.ndarray) -> np.ndarray:
    """Our-frame normals -> Structured3D 8-bit image (left-handed frame: z negated; v = (n + 1) * 128)."""
    n = normals_ours.copy()
    n[..., 2] *= -1.0
    return np.clip(np.round((n + 1.0) * 128.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Fixture datasets
# ----------------------------------------------------------------------------------------------

@dataclass
class Truth:
    depth: np.ndarray                    # [H, W] metres as stored (0 = unknown)
    analytic: np.ndarray                 # [H, W] metres before quantisation / corruption
    normals: Optional[np.ndarray] = None  # [H, W, 3] our frame
    valid: Optional[np.ndarray] = None    # [H, W] dataset validity mask
    rgb: Optional[np.ndarray] = None      # [H, W, 3] uint8 written (before JPEG)
    scene_type: str = "indoor"


def _scene(height: int, seed: int, half=(3.0, 1.5, 2.0)) -> Tuple[np.ndarray, np.ndarray]:
    yaw = 0.37 * seed
    scale = 1.0 + 0.1 * (seed % 5)
    return box_room(height, 2 * height, tuple(h * scale for h in half), yaw=yaw)


def make_matterport3d360(data_path: Path, height: int = 16, scenes: Optional[Dict[str, List[str]]] = None,
                         views: int = 2, corrupt: bool = True) -> Dict[str, Dict[str, Truth]]:
    """``Matterport3D360/scenes_{split}.txt`` + ``<part>/data/<scene>/<key>_rgb.png`` / ``_depth.dpt``.

    With ``corrupt`` the first view of every scene gets NaN, +inf, a negative value and 0 at four pixels.
    """
    scenes = scenes or {"train": ["sceneA", "sceneB"], "val": ["sceneC"], "test": ["sceneD"]}
    root = Path(data_path) / "Matterport3D360"
    out: Dict[str, Dict[str, Truth]] = {}
    seed = 0
    for split, names in scenes.items():
        root.mkdir(parents=True, exist_ok=True)
        (root / f"scenes_{split}.txt").write_text("\n".join(names) + "\n")
        out[split] = {}
        for k, scene in enumerate(names):
            part = f"part{k % 2}"
            for v in range(views):
                key = f"{scene}key{v:02d}"
                depth, _ = _scene(height, seed)
                stored = depth.copy()
                if corrupt and v == 0:
                    stored[1, 1], stored[1, 2], stored[1, 3], stored[1, 4] = np.nan, np.inf, -1.0, 0.0
                rgb = pattern_rgb(height, 2 * height, seed)
                write_png(root / part / "data" / scene / f"{key}_rgb.png", rgb)
                write_dpt(root / part / "data" / scene / f"{key}_depth.dpt", stored)
                truth_depth = np.where(np.isfinite(stored) & (stored > 0), stored, 0).astype(np.float32)
                out[split][f"{scene}__{key}"] = Truth(truth_depth, depth, rgb=rgb)
                seed += 1
    return out


def make_stanford2d3ds(data_path: Path, height: int = 16, areas: Sequence[str] = ("area_1", "area_5a"),
                       per_area: int = 2) -> Dict[str, Dict[str, Truth]]:
    """``Stanford2D3DS/<area>/pano/rgb/<name>_rgb.png`` + ``../depth/<name>_depth.png`` (uint16, 1/512 m, 65535 = missing).

    Pixel (0, 0) of every depth map is 65535 (missing). Returned under the split key ``"all"``.
    """
    root = Path(data_path) / "Stanford2D3DS"
    truth: Dict[str, Truth] = {}
    seed = 0
    for area in areas:
        for k in range(per_area):
            stem = f"camera_{seed:04x}abc_office_{k}_frame_equirectangular_domain"
            depth, _ = _scene(height, seed)
            raw = np.round(depth * 512.0).astype(np.uint16)
            raw[0, 0] = 65535
            rgb = pattern_rgb(height, 2 * height, seed)
            write_png(root / area / "pano" / "rgb" / f"{stem}_rgb.png", rgb)
            write_png(root / area / "pano" / "depth" / f"{stem}_depth.png", raw)
            stored = raw.astype(np.float32) / 512.0
            stored[raw == 65535] = 0.0
            truth[f"{area}__pano__camera_{seed:04x}abc_office_{k}"] = Truth(stored, depth, rgb=rgb)
            seed += 1
    return {"all": truth}


def make_structured3d(data_path: Path, height: int = 16,
                      scenes: Optional[Dict[str, List[int]]] = None, rooms: int = 2,
                      normal_name: str = "normal.png") -> Dict[str, Dict[str, Truth]]:
    """``Structured3D/scene_XXXXX/2D_rendering/<room>/panorama/full/{rgb_rawlight,depth,normal}.png``.

    Depth uint16 millimetres; normals 8-bit in Structured3D's left-handed frame (z = left).
    """
    scenes = scenes or {"train": [0, 2999], "val": [3000], "test": [3250, 3499]}
    root = Path(data_path) / "Structured3D"
    out: Dict[str, Dict[str, Truth]] = {}
    seed = 0
    for split, ids in scenes.items():
        out[split] = {}
        for sid in ids:
            for room in range(rooms):
                full = root / f"scene_{sid:05d}" / "2D_rendering" / f"{100 + room}" / "panorama" / "full"
                depth, normals = _scene(height, seed)
                raw = np.round(depth * 1000.0).astype(np.uint16)
                rgb = pattern_rgb(height, 2 * height, seed)
                write_png(full / "rgb_rawlight.png", rgb)
                write_png(full / "depth.png", raw)
                write_png(full / normal_name, encode_normals_8bit_structured3d(normals))
                out[split][f"scene_{sid:05d}__{100 + room}"] = Truth(raw.astype(np.float32) / 1000.0, depth, normals, rgb=rgb)
                seed += 1
    return out


def make_replica360_4k(data_path: Path, height: int = 16, scenes: Sequence[str] = ("room_0", "office_2"),
                       per_scene: int = 2) -> Dict[str, Dict[str, Truth]]:
    """``Replica360_4K/<scene>/<name>_{rgb_pano.jpg,depth_pano.dpt,mask_pano.png}``; the mask has a hole."""
    root = Path(data_path) / "Replica360_4K"
    truth: Dict[str, Truth] = {}
    seed = 0
    for scene in scenes:
        for k in range(per_scene):
            name = f"{k:04d}"
            depth, _ = _scene(height, seed)
            valid = np.ones_like(depth, dtype=bool)
            valid[height // 2, : height // 2] = False
            rgb = pattern_rgb(height, 2 * height, seed)
            write_jpg(root / scene / f"{name}_rgb_pano.jpg", rgb)
            write_dpt(root / scene / f"{name}_depth_pano.dpt", depth)
            write_png(root / scene / f"{name}_mask_pano.png", (valid * 255).astype(np.uint8))
            truth[f"{scene}__{name}"] = Truth(depth.copy(), depth, valid=valid, rgb=rgb)
            seed += 1
    return {"all": truth}


def make_scannetpp(data_path: Path, height: int = 16, splits: Optional[Dict[str, List[str]]] = None,
                   per_scene: int = 2) -> Dict[str, Dict[str, Truth]]:
    """``ScannetPP/splits/nvs_sem_{split}.txt`` + ``data/<scene>/panocam/resized_images/*.jpg`` / ``resized_depth/*.png`` (mm)."""
    splits = splits or {"train": ["0a5c013435", "1b9f2d3e44"], "val": ["7e8d2c1a00"]}
    root = Path(data_path) / "ScannetPP"
    out: Dict[str, Dict[str, Truth]] = {}
    seed = 0
    for split, scenes in splits.items():
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"nvs_sem_{split}.txt").write_text("\n".join(scenes) + "\n")
        out[split] = {}
        for scene in scenes:
            pano = root / "data" / scene / "panocam"
            for k in range(per_scene):
                stem = f"frame_{k:06d}"
                depth, _ = _scene(height, seed)
                raw = np.round(depth * 1000.0).astype(np.uint16)
                raw[0, :3] = 0  # unknown
                rgb = pattern_rgb(height, 2 * height, seed)
                write_jpg(pano / "resized_images" / f"{stem}.jpg", rgb)
                write_png(pano / "resized_depth" / f"{stem}.png", raw)
                out[split][f"{scene}__{stem}"] = Truth(raw.astype(np.float32) / 1000.0, depth, rgb=rgb)
                seed += 1
    return out


def make_panoinfinigen_lmdb(data_path: Path, height: int = 16,
                            layout: Optional[Dict[Tuple[str, str], List[Tuple[int, str, int]]]] = None,
                            far_pixels: bool = True) -> Dict[str, Dict[str, Truth]]:
    """``PanoInfinigen/{indoor,outdoor}/{split}/index.npy`` + ``shard_XXXXX.lmdb`` with ``<scene>/<view:04d>#rgb|#depth|#normal``.

    ``layout`` maps (scene_type, split) to index rows (shard, scene, views). Depth ``.npy`` float32
    metres; normals ``.npy`` float32 ``[H, W, 3]`` in the reference frame (z = left). With
    ``far_pixels`` row 0 of outdoor views is 1000 m (sky: beyond the range).
    """
    layout = layout or {
        ("indoor", "train"): [(0, "indoor_scene_a", 2), (1, "indoor_scene_b", 1)],
        ("outdoor", "train"): [(0, "outdoor_scene_c", 2)],
        ("indoor", "val"): [(0, "indoor_scene_v", 3)],
        ("outdoor", "val"): [(0, "outdoor_scene_w", 2)],
    }
    root = Path(data_path) / "PanoInfinigen"
    out: Dict[str, Dict[str, Truth]] = {}
    seed = 0
    for (scene_type, split), rows in layout.items():
        split_dir = root / scene_type / split
        shards: Dict[int, Dict[str, bytes]] = {}
        out.setdefault(split, {})
        for shard, scene, views in rows:
            for v in range(views):
                depth, normals = _scene(height, seed)
                stored = depth.copy()
                if far_pixels and scene_type == "outdoor":
                    stored[0, :] = 1000.0
                rgb = pattern_rgb(height, 2 * height, seed)
                ref = normals.copy()
                ref[..., 2] *= -1.0
                key = f"{scene}/{v:04d}"
                entries = shards.setdefault(shard, {})
                entries[f"{key}#rgb"] = png_bytes(rgb)
                entries[f"{key}#depth"] = npy_bytes(stored.astype(np.float32))
                entries[f"{key}#normal"] = npy_bytes(ref.astype(np.float32))
                out[split][f"{scene_type}__{scene}__{v:04d}"] = Truth(stored, stored.copy(), normals, rgb=rgb, scene_type=scene_type)
                seed += 1
        for shard, entries in shards.items():
            write_lmdb_shard(split_dir / f"shard_{shard:05d}.lmdb", entries)
        write_index(split_dir / "index.npy", rows)
    return out


def make_plain(data_path: Path, name: str = "Synthetic", height: int = 16,
               layout: Optional[Dict[Tuple[str, str], List[Tuple[str, int]]]] = None,
               depth_scale: float = 0.001, normals_format: str = "png16", with_mask: bool = True,
               write_split_lists: bool = True) -> Dict[str, Dict[str, Truth]]:
    """The plain layout of ``pager synth``: ``<name>/{indoor,outdoor}/{split}/<scene>/<view:04d>_*`` + ``meta.json``.

    Depth uint16 PNG (metres = value * depth_scale, 0 = unknown); normals (our frame) as a 16-bit
    (``png16``) or 8-bit (``png8``) RGB PNG ``v = (n + 1) / 2 * vmax``, or ``npy``; mask 8-bit (0 = invalid).
    """
    layout = layout or {
        ("indoor", "train"): [("room_000", 2), ("room_001", 1)],
        ("outdoor", "train"): [("street_000", 2)],
        ("indoor", "val"): [("room_100", 1)],
        ("outdoor", "val"): [("street_100", 1)],
        ("indoor", "test"): [("room_200", 1)],
    }
    root = Path(data_path) / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps({"depth_scale": depth_scale, "depth_invalid": 0, "normals_frame": "pager"}))
    out: Dict[str, Dict[str, Truth]] = {}
    lists: Dict[Tuple[str, str], List[str]] = {}
    seed = 0
    for (scene_type, split), scenes in layout.items():
        out.setdefault(split, {})
        for scene, views in scenes:
            lists.setdefault((scene_type, split), []).append(scene)
            d = root / scene_type / split / scene
            for v in range(views):
                depth, normals = _scene(height, seed)
                raw = np.round(depth / depth_scale).astype(np.uint16)
                raw[-1, :2] = 0
                rgb = pattern_rgb(height, 2 * height, seed)
                write_png(d / f"{v:04d}_rgb.png", rgb)
                write_png(d / f"{v:04d}_depth.png", raw)
                if normals_format == "npy":
                    np.save(d / f"{v:04d}_normals.npy", normals.astype(np.float32))
                    stored_n = normals
                else:
                    vmax = 65535 if normals_format == "png16" else 255
                    img = np.round((normals + 1.0) / 2.0 * vmax).astype(np.uint16 if vmax == 65535 else np.uint8)
                    if vmax == 65535:
                        _write_rgb16_png(d / f"{v:04d}_normals.png", img)
                    else:
                        write_png(d / f"{v:04d}_normals.png", img)
                    stored_n = normals
                valid = None
                if with_mask:
                    valid = np.ones_like(depth, dtype=bool)
                    valid[height // 2, -3:] = False
                    write_png(d / f"{v:04d}_mask.png", (valid * 255).astype(np.uint8))
                stored = raw.astype(np.float32) * depth_scale
                out[split][f"{scene_type}__{scene}__{v:04d}"] = Truth(stored, depth, stored_n, valid, rgb, scene_type)
                seed += 1
    if write_split_lists:
        for (scene_type, split), scenes in lists.items():
            (root / scene_type / f"{split}.txt").write_text("\n".join(scenes) + "\n")
    return out


def _write_rgb16_png(path: Path, img: np.ndarray) -> None:
    """16-bit RGB PNG (PIL cannot write it; a minimal encoder with zlib)."""
    import zlib

    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)


MAKERS = {
    "Matterport3D360": make_matterport3d360,
    "Stanford2D3DS": make_stanford2d3ds,
    "Structured3D": make_structured3d,
    "Replica360_4K": make_replica360_4k,
    "ScannetPP": make_scannetpp,
    "PanoInfinigen": make_panoinfinigen_lmdb,
    "Synthetic": make_plain,
}


def make_dataset(name: str, data_path: Path, height: int = 16, **kwargs) -> Dict[str, Dict[str, Truth]]:
    """Write the tiny fixture of dataset ``name`` under ``data_path`` and return its truth."""
    return MAKERS[name](Path(data_path), height=height, **kwargs)
