"""Write a procedural data set to disk: plain files or the PanoInfinigen LMDB layout.

Scenes
    ``num`` is the total number of scenes; ``scenes="both"`` gives ``ceil(num/2)`` indoor and
    ``floor(num/2)`` outdoor ones. Scene ``i`` of kind ``k`` (0 = indoor, 1 = outdoor) has the seed
    ``SeedSequence([seed, k, i]).generate_state(1, uint32)[0]`` and the id
    ``<kind>_<i:05d>_<scene seed as 8 hex digits>``, so ``render_scene(int(hex, 16), kind=kind, view=v)``
    regenerates any sample. Each kind's scenes are cut, in order, into train / val / test by the split
    ratios (largest remainder; every split with a positive ratio gets a scene when ``n >= 3``).
    ``views_per_scene`` views (different camera positions in the same scene) per scene.

Plain files (``format="files"``, read by ``pager.data.readers.plain``: datasets ``Synthetic`` and
``PanoInfinigen`` without ``index.npy``)::

    <out>/meta.json
    <out>/{indoor,outdoor}/{train,val,test}.txt                scene ids of the split, one per line
    <out>/{indoor,outdoor}/{split}/<scene_id>/<view:04d>_rgb.png      8-bit RGB
                                            /<view:04d>_depth.png    16-bit grey, metres = value * 0.002 (max 131 m), 0 = invalid
                                            /<view:04d>_normals.npy  float16 [H, W, 3] unit normals, OUR world frame, 0 = invalid
                                            /<view:04d>_mask.png     8-bit grey, 255 = valid, 0 = sky / beyond max depth
    (``normals_format="png"``: ``<view:04d>_normals.png`` 16-bit RGB, ``n = v / 65535 * 2 - 1``.
    Pillow reads 16-bit RGB PNGs as 8 bits, so prefer ``npy`` or :func:`pager.data.synthetic.png.decode_png`.)

PanoInfinigen LMDB (``format="lmdb"``)::

    <out>/meta.json
    <out>/{indoor,outdoor}/{split}/index.npy                  object array [N, 3]: (shard:int, scene_id:str, num_views:int)
    <out>/{indoor,outdoor}/{split}/shard_{shard:05d}.lmdb/    LMDB environment folder (data.mdb, lock.mdb)
        "<scene_id>/<view:04d>#rgb"     PNG bytes, 8-bit RGB
        "<scene_id>/<view:04d>#depth"   np.save bytes, float32 [H, W], range in metres, +inf = invalid (sky, beyond max)
        "<scene_id>/<view:04d>#normal"  np.save bytes, float32 [H, W, 3], the REFERENCE frame (x fwd, y up, z left), 0 = invalid

What is known about the real PanoInfinigen LMDB comes from the reference dataloader
(``prs-eth/PaGeR``, ``dataloaders/PanoInfinigen_dataloader.py``): ``{indoor,outdoor}/{split}/index.npy``
loaded with ``allow_pickle=True`` and iterated as ``(shard_idx, scene_id, num_views)`` rows (hence the
object array here); shards ``shard_{shard:05d}.lmdb`` opened with ``subdir=True``; keys
``f"{scene_id}/{view:04d}#rgb"`` (decoded with PIL), ``#depth`` and ``#normal`` (``np.load`` of the
bytes, ``allow_pickle=False``; normals ``[H, W, 3]``); depth is clipped to ``[0.01, max]`` and pixels
``>= 0.99 * max`` are masked (max 15 m indoor, 75 m otherwise) -- so invalid depth must be stored as a
large value, and +inf is used here (0 would become a valid 1 cm). Its normals live in the reference
frame (its ``depth_to_normals`` uses the ray ``(cos p cos t, sin p, -cos p sin t)``), so they are written
that way here and ``meta.json`` says ``"normals_frame": "reference"``. Not known: the real image
encoding (PNG/JPEG) and resolution (the reference class says 3840 x 2160), the number of scenes per
shard, and the exact sky value. LMDB shards are written into a temporary folder that is renamed at the end.

Determinism: pixels are bit-identical for equal arguments on every machine; PNG bytes are
identical for the same zlib (see :mod:`pager.data.synthetic.png`); ``.npy`` bytes are identical.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
from tqdm.auto import tqdm

from pager.data.synthetic.png import encode_png
from pager.data.synthetic.raycast import SyntheticPanorama, render_scene
from pager.data.synthetic.scene import INDOOR_MAX_DEPTH, OUTDOOR_MAX_DEPTH
from pager.io_utils import atomic_directory

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
DEPTH_PNG_SCALE = 0.002  # metres per uint16 step of ``_depth.png`` (max 131.07 m)
NORMALS_PNG_MAX = 65535
SPLITS = ("train", "val", "test")
KINDS = ("indoor", "outdoor")


def scene_seed(seed: int, kind: str, index: int) -> int:
    """The render seed of scene ``index`` of ``kind`` in a set generated with base ``seed``."""
    ss = np.random.SeedSequence([int(seed), KINDS.index(kind), int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


def scene_id(kind: str, index: int, seed_of_scene: int) -> str:
    """``<kind>_<index:05d>_<seed:08x>``."""
    return f"{kind}_{index:05d}_{seed_of_scene:08x}"


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` (largest remainder; each positive ratio gets >= 1 when possible)."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or len(r) != 3 or np.any(r < 0) or not r.sum() > 0:
        raise ValueError(f"splits must be three non-negative ratios (train, val, test) with a positive sum, got {ratios!r}")
    r = r / r.sum()
    exact = r * n
    counts = np.floor(exact).astype(int)
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    positive = [i for i in range(3) if r[i] > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return [int(c) for c in counts]


def _kinds(scenes: str) -> tuple[str, ...]:
    if scenes == "both":
        return KINDS
    if scenes in KINDS:
        return (scenes,)
    raise ValueError(f"scenes must be 'indoor', 'outdoor' or 'both', got {scenes!r}")


def _plan(num: int, scenes: str, seed: int, splits: Sequence[float]) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """[(kind, split, [(scene_id, scene_seed), ...])] in writing order."""
    kinds = _kinds(scenes)
    per_kind = [num // len(kinds) + (1 if k < num % len(kinds) else 0) for k in range(len(kinds))]
    plan = []
    for kind, n in zip(kinds, per_kind):
        counts = split_counts(n, splits)
        i = 0
        for split, c in zip(SPLITS, counts):
            items = []
            for _ in range(c):
                s = scene_seed(seed, kind, i)
                items.append((scene_id(kind, i, s), s))
                i += 1
            plan.append((kind, split, items))
    return plan


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode_depth_png(depth: np.ndarray, mask: np.ndarray) -> bytes:
    """16-bit PNG of ``round(depth / DEPTH_PNG_SCALE)``; 0 where ``mask`` is False (depth in metres)."""
    steps = np.floor(depth.astype(np.float64) / DEPTH_PNG_SCALE + 0.5)
    if np.any(steps[mask] > 65535):
        raise ValueError(f"depth above {65535 * DEPTH_PNG_SCALE} m cannot be stored in a 16-bit depth PNG")
    steps = np.where(mask, np.clip(steps, 1, 65535), 0)
    return encode_png(steps.astype(np.uint16))


def encode_normals_png(normals: np.ndarray) -> bytes:
    """16-bit RGB PNG with ``v = round((n + 1) / 2 * 65535)``."""
    v = np.floor((normals.astype(np.float64) + 1.0) * (NORMALS_PNG_MAX / 2.0) + 0.5)
    return encode_png(np.clip(v, 0, NORMALS_PNG_MAX).astype(np.uint16))


def _check_out(out_dir: Path, overwrite: bool) -> bool:
    """Whether ``out_dir`` exists with content that would be replaced (checked before any rendering)."""
    from pager.io_utils import check_writable_folder

    check_writable_folder(out_dir.parent, "output folder")  # the data set is built beside it, then renamed
    if out_dir.exists():
        if not out_dir.is_dir():
            raise NotADirectoryError(f"output path exists and is not a folder: {out_dir}")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(f"output folder {out_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
            return True
        out_dir.rmdir()
    return False


def _meta(args: dict, fmt: str, plan, normals_format: str) -> dict:
    meta = {
        "generator": "pager.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "format": fmt,
        **args,
        "width": 2 * args["height"],
        "max_depth_indoor": INDOOR_MAX_DEPTH,
        "max_depth_outdoor": OUTDOOR_MAX_DEPTH,
        "conventions": (
            "ERP pixel (i, j) centre u=(j+0.5)/W, v=(i+0.5)/H, theta=2*pi*u-pi, phi=pi/2-pi*v; "
            "world frame x forward, y up, z right; ray=(cos phi cos theta, sin phi, cos phi sin theta); "
            "depth = range along the ray in metres; normals = unit vectors facing the camera"
        ),
        "counts": {f"{k}/{s}": len(items) for k, s, items in plan},
    }
    if fmt == "files":
        meta.update(
            {
                "depth_scale": DEPTH_PNG_SCALE,
                "depth_invalid": 0,
                "depth_png": "uint16 grey, metres = value * depth_scale, 0 = invalid",
                "normals_frame": "pager",
                "normals_file": (
                    "<view>_normals.npy float16 [H, W, 3], 0 = invalid"
                    if normals_format == "npy"
                    else "<view>_normals.png uint16 RGB, n = v / 65535 * 2 - 1"
                ),
                "mask_png": "uint8 grey, 255 = valid, 0 = sky or beyond the max depth",
            }
        )
    else:
        meta.update(
            {
                "normals_frame": "reference",
                "lmdb_keys": "<scene_id>/<view:04d>#rgb (PNG), #depth (npy float32 [H, W] metres, +inf = invalid), "
                "#normal (npy float32 [H, W, 3], reference frame x fwd / y up / z left, 0 = invalid)",
                "index": "index.npy: object array [N, 3] of (shard, scene_id, num_views)",
            }
        )
    return meta


def write_dataset(
    out_dir: str | os.PathLike,
    num: int,
    height: int = 512,
    scenes: Literal["indoor", "outdoor", "both"] = "both",
    seed: int = 0,
    format: Literal["files", "lmdb"] = "files",
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    supersample: int = 1,
    views_per_scene: int = 1,
    scenes_per_shard: int = 64,
    normals_format: Literal["npy", "png"] = "npy",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``num`` procedural scenes (``views_per_scene`` panoramas each) into ``out_dir``.

    ``format="files"``: the plain layout (datasets ``Synthetic`` / ``PanoInfinigen`` from files);
    ``format="lmdb"``: the PanoInfinigen LMDB layout. See the module docstring for both. The whole
    folder is built under a temporary name and renamed when complete; a non-empty ``out_dir`` raises
    ``FileExistsError`` unless ``overwrite=True``. Returns ``out_dir``.
    """
    out = Path(out_dir)
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    if not isinstance(height, (int, np.integer)) or height < 2:
        raise ValueError(f"height must be an integer >= 2, got {height!r}")
    if format not in ("files", "lmdb"):
        raise ValueError(f"format must be 'files' or 'lmdb', got {format!r}")
    if normals_format not in ("npy", "png"):
        raise ValueError(f"normals_format must be 'npy' or 'png', got {normals_format!r}")
    if not isinstance(views_per_scene, (int, np.integer)) or views_per_scene < 1:
        raise ValueError(f"views_per_scene must be a positive integer, got {views_per_scene!r}")
    if not isinstance(scenes_per_shard, (int, np.integer)) or scenes_per_shard < 1:
        raise ValueError(f"scenes_per_shard must be a positive integer, got {scenes_per_shard!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    plan = _plan(int(num), scenes, int(seed), splits)
    replace = _check_out(out, overwrite)
    args = {
        "num": int(num),
        "height": int(height),
        "scenes": scenes,
        "seed": int(seed),
        "splits": [float(s) for s in splits],
        "supersample": int(supersample),
        "views_per_scene": int(views_per_scene),
    }
    total = sum(len(items) for _, _, items in plan) * int(views_per_scene)
    bar = tqdm(total=total, desc=f"pager synth ({format})", unit="pano", disable=not progress)
    with atomic_directory(out, overwrite=replace) as tmp:
        for kind, split, items in plan:
            split_dir = tmp / kind / split
            split_dir.mkdir(parents=True, exist_ok=True)
            views = _views(items, kind, int(height), int(supersample), int(views_per_scene), bar)
            if format == "files":
                _write_files_split(split_dir, items, views, normals_format)
                (tmp / kind / f"{split}.txt").write_text("".join(f"{sid}\n" for sid, _ in items))
            else:
                _write_lmdb_split(split_dir, items, views, int(views_per_scene), int(scenes_per_shard), int(height))
        meta = _meta(args, format, plan, normals_format)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    bar.close()
    logger.info("wrote %d panoramas (%s) to %s", total, format, out)
    return out


def _views(items, kind: str, height: int, supersample: int, views_per_scene: int, bar) -> Iterable[tuple[str, int, SyntheticPanorama]]:
    for sid, s in items:
        for view in range(views_per_scene):
            pano = render_scene(s, height=height, kind=kind, supersample=supersample, view=view)
            yield sid, view, pano
            bar.update(1)


def _write_files_split(split_dir: Path, items, views, normals_format: str) -> None:
    for sid, view, pano in views:
        d = split_dir / sid
        d.mkdir(parents=True, exist_ok=True)
        stem = f"{view:04d}"
        (d / f"{stem}_rgb.png").write_bytes(encode_png(pano.rgb))
        (d / f"{stem}_depth.png").write_bytes(encode_depth_png(pano.depth, pano.mask))
        (d / f"{stem}_mask.png").write_bytes(encode_png(np.where(pano.mask, 255, 0).astype(np.uint8)))
        if normals_format == "npy":
            (d / f"{stem}_normals.npy").write_bytes(_npy_bytes(pano.normals.astype(np.float16)))
        else:
            (d / f"{stem}_normals.png").write_bytes(encode_normals_png(pano.normals))


def lmdb_view_values(pano: SyntheticPanorama) -> dict[str, bytes]:
    """The three LMDB values of one view: PNG rgb, float32 depth (+inf invalid), reference-frame normals."""
    depth = np.where(pano.mask, pano.depth, np.float32(np.inf)).astype(np.float32)
    normals = pano.normals.astype(np.float32).copy()
    normals[:, :, 2] = -normals[:, :, 2]
    normals[~pano.mask] = 0.0
    return {"rgb": encode_png(pano.rgb), "depth": _npy_bytes(depth), "normal": _npy_bytes(normals)}


def _write_lmdb_split(split_dir: Path, items, views, views_per_scene: int, per_shard: int, height: int) -> None:
    import lmdb

    per_view = height * 2 * height * (3 + 4 + 12) + 4096
    map_size = max(1 << 26, int(per_view * views_per_scene * per_shard * 1.5) + (1 << 24))
    index_rows = []
    env = None
    shard = -1
    scene_in_shard = per_shard
    current = None
    try:
        for sid, view, pano in views:
            if sid != current:
                current = sid
                if scene_in_shard >= per_shard:
                    if env is not None:
                        env.sync(True)
                        env.close()
                    shard += 1
                    scene_in_shard = 0
                    env = lmdb.open(str(split_dir / f"shard_{shard:05d}.lmdb"), map_size=map_size, subdir=True, meminit=True)
                scene_in_shard += 1
                index_rows.append([shard, sid, views_per_scene])
            assert env is not None
            with env.begin(write=True) as txn:
                for part, value in lmdb_view_values(pano).items():
                    txn.put(f"{sid}/{view:04d}#{part}".encode(), value)
    finally:
        if env is not None:
            env.sync(True)
            env.close()
    index = np.empty((len(index_rows), 3), dtype=object)
    for i, row in enumerate(index_rows):
        index[i, 0], index[i, 1], index[i, 2] = int(row[0]), str(row[1]), int(row[2])
    with open(split_dir / "index.npy", "wb") as fh:
        np.save(fh, index, allow_pickle=True)
