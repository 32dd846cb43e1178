"""PanoInfinigen: procedurally generated indoor and outdoor panoramas (Infinigen), LMDB shards.

Layout::

    PanoInfinigen/{indoor,outdoor}/{train,val,test}/index.npy
        rows (shard, scene_id, number_of_views)
    PanoInfinigen/{indoor,outdoor}/{split}/shard_{shard:05d}.lmdb       (LMDB environment folders)
        key "<scene_id>/<view:04d>#rgb"     encoded image bytes (PNG/JPEG)
        key "<scene_id>/<view:04d>#depth"   .npy bytes, float [H, W] metres
        key "<scene_id>/<view:04d>#normal"  .npy bytes, float [H, W, 3] (or [3, H, W])

A split folder without ``index.npy`` is read in the plain-file layout of ``pager synth`` (see
:mod:`pager.data.readers.plain`). Depth range 0.01-15 m when ``scenes="indoor"``, else 0.01-75 m
(as the reference). Normals are stored in the reference project's frame (x forward, y up, z left;
assumed from the reference code, not verified on released files) unless ``PanoInfinigen/meta.json``
says ``"normals_frame": "pager"``; they are converted to OUR frame by negating z.
Sample id: ``<indoor|outdoor>__<scene_id>__<view:04d>``; the original dataloader's id (its prediction file
name): ``<split>_shard<shard:05d>_<scene_id>_view<view:04d>`` (the same for indoor and outdoor).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_npy_bytes, read_rgb
from pager.data.readers.plain import has_plain_layout, list_plain, load_plain, read_meta


def read_index(path: Path) -> List[Tuple[int, str, int]]:
    """Rows ``(shard, scene_id, num_views)`` of an ``index.npy``."""
    try:
        arr = np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read LMDB index {path}: {exc}") from exc
    rows = []
    for i, row in enumerate(arr.tolist()):
        try:
            shard, scene, views = row[0], row[1], row[2]
            rows.append((int(shard), str(scene), int(views)))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: row {i} is not (shard, scene_id, num_views): {row!r}") from exc
    return rows


class PanoInfinigen(PanoramaDataset):
    NAME = "PanoInfinigen"
    HAS_NORMALS = True
    SCENE_TYPES = ("indoor", "outdoor")
    INDOOR_MAX_DEPTH = 15.0

    def depth_range(self) -> Tuple[float, float]:
        return float(self.MIN_DEPTH), float(self.INDOOR_MAX_DEPTH if self.scenes == "indoor" else self.MAX_DEPTH)

    def _scene_types(self, scenes: str) -> Tuple[str, ...]:
        return self.SCENE_TYPES if scenes == "both" else (scenes,)

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        meta_path = root / "meta.json"
        self._meta = read_meta(root) if meta_path.is_file() else {**read_meta(root), "normals_frame": "reference"}
        records: List[SampleRecord] = []
        for scene_type in self._scene_types(scenes):
            split_dir = root / scene_type / split
            index = split_dir / "index.npy"
            if index.is_file():
                for shard, scene, views in read_index(index):
                    shard_dir = split_dir / f"shard_{shard:05d}.lmdb"
                    for view in range(views):
                        records.append(
                            SampleRecord(
                                id=safe_id(scene_type, scene, f"{view:04d}"),
                                scene_type=scene_type,
                                files={"shard": shard_dir},
                                extra={"layout": "lmdb", "key": f"{scene}/{view:04d}"},
                                reference_id=f"{split_dir.name}_shard{shard:05d}_{scene}_view{view:04d}",
                            )
                        )
            elif has_plain_layout(split_dir) or (root / scene_type / f"{split}.txt").is_file():
                records.extend(list_plain(root, split, (scene_type,)))
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return " and ".join(f"{root / t / split}/index.npy (or plain files)" for t in self._scene_types(self.scenes))

    def load_record(self, record: SampleRecord) -> RawSample:
        if record.extra.get("layout") == "plain":
            return load_plain(record, self._meta, self.NAME)
        import lmdb

        shard_dir = Path(record.files["shard"])
        base = record.extra["key"]
        if not shard_dir.is_dir():
            raise FileNotFoundError(f"LMDB shard not found: {shard_dir}")
        values = {}
        # Open, read, close: an environment left open would be inherited by forked DataLoader workers,
        # and LMDB forbids opening the same environment twice in one process (or sharing it over fork).
        try:
            env = lmdb.open(str(shard_dir), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
        except lmdb.Error as exc:
            raise ValueError(f"cannot open LMDB shard {shard_dir}: {exc}") from exc
        try:
            with env.begin(buffers=False) as txn:
                for part in ("rgb", "depth", "normal"):
                    values[part] = txn.get(f"{base}#{part}".encode())
        except lmdb.Error as exc:
            raise ValueError(f"cannot read {base} from LMDB shard {shard_dir}: {exc}") from exc
        finally:
            env.close()
        missing = [f"{base}#{p}" for p, v in values.items() if v is None]
        if missing:
            raise KeyError(f"LMDB shard {shard_dir} lacks key(s) {', '.join(missing)}")
        rgb = read_rgb(values["rgb"], what=f"{self.NAME} rgb {shard_dir}:{base}#rgb")
        depth = read_npy_bytes(values["depth"], what=f"{shard_dir}:{base}#depth").astype(np.float32)
        if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
            depth = depth.reshape(depth.shape[1:] if depth.shape[0] == 1 else depth.shape[:2])
        normals = read_npy_bytes(values["normal"], what=f"{shard_dir}:{base}#normal").astype(np.float32)
        if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[-1] != 3:
            normals = np.moveaxis(normals, 0, -1)
        if normals.ndim != 3 or normals.shape[-1] != 3:
            raise ValueError(f"{shard_dir}:{base}#normal: expected [H, W, 3] normals, got shape {normals.shape}")
        if self._meta["normals_frame"] == "reference":
            normals[:, :, 2] *= -1.0
        return RawSample(rgb=rgb, depth=depth, normals=normals)
