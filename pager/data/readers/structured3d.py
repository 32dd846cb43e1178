"""Structured3D: synthetic indoor panoramas with depth and normals (1024x512 natively).

Layout::

    Structured3D/scene_{id:05d}/2D_rendering/<room>/panorama/full/rgb_rawlight.png
                                                                 /depth.png    uint16 millimetres, 0 = missing
                                                                 /normal.png   8-bit RGB normals
                                                                 (``normals.png`` is accepted too)

Splits by scene id: 0-2999 train, 3000-3249 val, 3250-3499 test. Depth range 0.01-75 m.

Normals: decoded like the reference, ``n = v / 128 - 1`` per channel, then normalised. According to
the Structured3D authors (bertjiazheng/Structured3D issue #61) R is the look-at axis, G the up axis and
B the third axis of a *left-handed* frame, i.e. x forward, y up, z left: the frame the reference
project works in. We take "look-at" to be the panorama centre (as the reference does; not verified on
real files) and convert to OUR frame (x forward, y up, z right) by negating z.
Sample id: ``scene_XXXXX__<room>``; the original dataloader's id (its prediction file name):
``scene_XXXXX_<room>``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import numpy as np

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_png16, read_rgb

SPLIT_SCENES = {"train": range(0, 3000), "val": range(3000, 3250), "test": range(3250, 3500)}
_SCENE_RE = re.compile(r"^scene_(\d+)$")


def decode_structured3d_normals(v: np.ndarray) -> np.ndarray:
    """8-bit ``[H, W, 3]`` Structured3D normal image -> normals in OUR frame ``[H, W, 3]`` (not yet unit length)."""
    n = v[:, :, :3].astype(np.float32) / 128.0 - 1.0
    n[:, :, 2] *= -1.0  # left-handed (z left) -> ours (z right)
    return n


class Structured3D(PanoramaDataset):
    NAME = "Structured3D"
    HAS_NORMALS = True

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        ids = SPLIT_SCENES[split]
        records = []
        for scene_dir in sorted(root.glob("scene_*")):
            m = _SCENE_RE.match(scene_dir.name)
            if not m or int(m.group(1)) not in ids:
                continue
            # every panorama folder holding any of its files (not only the RGB): one missing its RGB,
            # depth or normals is listed, and the missing file reported
            fulls = sorted(d for d in scene_dir.glob("2D_rendering/*/panorama/full")
                           if any((d / n).is_file() for n in ("rgb_rawlight.png", "depth.png", "normal.png", "normals.png")))
            for full in fulls:
                rgb = full / "rgb_rawlight.png"
                normal = full / "normal.png"
                if not normal.exists() and (full / "normals.png").exists():
                    normal = full / "normals.png"
                room = full.parent.parent.name
                records.append(
                    SampleRecord(
                        id=safe_id(scene_dir.name, room),
                        files={"rgb": rgb, "depth": full / "depth.png", "normals": normal},
                        reference_id=f"{scene_dir.name}_{room}",
                    )
                )
        return records

    def describe_search(self, root: Path, split: str) -> str:
        r = SPLIT_SCENES[split]
        return f"{root}/scene_{r.start:05d}..scene_{r.stop - 1:05d}/2D_rendering/*/panorama/full/rgb_rawlight.png"

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        depth = read_png16(record.files["depth"], what=f"{self.NAME} depth").astype(np.float32) / 1000.0
        nimg = read_rgb(record.files["normals"], what=f"{self.NAME} normals")
        if nimg.dtype != np.uint8:
            raise ValueError(f"{self.NAME} normals {record.files['normals']}: expected an 8-bit image, got {nimg.dtype}")
        return RawSample(rgb=rgb, depth=depth, normals=decode_structured3d_normals(nimg))
