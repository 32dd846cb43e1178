"""Replica360_4K: synthetic indoor renderings (4096x2048 natively).

Layout::

    Replica360_4K/<scene>/<name>_rgb_pano.jpg
    Replica360_4K/<scene>/<name>_depth_pano.dpt    float32 metres (see ``read_dpt``)
    Replica360_4K/<scene>/<name>_mask_pano.png     8-bit, > 0 = valid (holes of the mesh are 0)

Depth range 0.01-75 m, no normals. The dataset has no official split: without split files every split
lists all panoramas; an optional ``Replica360_4K/{split}.txt`` (scene names) restricts a split.
Sample id: ``<scene>__<name>``; the original dataloader's id (its prediction file name):
``<scene>_<first four characters of the file name>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_dpt, read_image, read_list, read_rgb, stems_by_suffix

SUFFIX = "_rgb_pano.jpg"
SUFFIXES = (SUFFIX, "_depth_pano.dpt", "_mask_pano.png")  # every file of a panorama


class Replica360_4K(PanoramaDataset):
    NAME = "Replica360_4K"

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        split_file = root / f"{split}.txt"
        wanted = set(read_list(split_file, what=f"{self.NAME} split file")) if split_file.is_file() else None
        records = []
        if wanted is not None:
            missing = sorted(s for s in wanted if not (root / s).is_dir())
            if missing:
                raise FileNotFoundError(f"{self.NAME}: scene folder(s) listed in {split_file} not found in {root}: "
                                        + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        for scene_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if wanted is not None and scene_dir.name not in wanted:
                continue
            # the union over all files of a panorama: one missing its RGB (or depth, mask) is listed and reported
            for name in stems_by_suffix(scene_dir, SUFFIXES):
                rgb = scene_dir / f"{name}{SUFFIX}"
                records.append(
                    SampleRecord(
                        id=safe_id(scene_dir.name, name),
                        reference_id=f"{scene_dir.name}_{rgb.name[:4]}",
                        files={
                            "rgb": rgb,
                            "depth": scene_dir / f"{name}_depth_pano.dpt",
                            "mask": scene_dir / f"{name}_mask_pano.png",
                        },
                    )
                )
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return f"{root}/<scene>/*{SUFFIX}"

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        depth = read_dpt(record.files["depth"])
        mask_img = read_image(record.files["mask"], what=f"{self.NAME} mask")
        valid = (mask_img[:, :, :3] > 0).any(axis=2)
        return RawSample(rgb=rgb, depth=depth, valid=valid)
