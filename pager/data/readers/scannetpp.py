"""ScannetPP (ScanNet++ panoramas): real indoor panoramas with millimetre PNG depth.

Layout::

    ScannetPP/splits/nvs_sem_{train,val}.txt                     one scene id per line
    ScannetPP/data/<scene>/panocam/resized_images/<stem>.jpg      (searched recursively)
    ScannetPP/data/<scene>/panocam/resized_depth/<stem>.png       uint16 millimetres, 0 = missing

Like the reference, ``test`` reads ``nvs_sem_val.txt`` (the official test scenes have no public
ground truth) unless a ``nvs_sem_test.txt`` exists. Depth range 0.01-75 m, no normals.
RGB and depth must have the same size (the reference resized both to 2572x1284; we do not guess).
Sample id: ``<scene>__<stem>``; the original dataloader's id (its prediction file name): ``<scene>_<stem>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_list, read_png16, read_rgb


class ScannetPP(PanoramaDataset):
    NAME = "ScannetPP"

    @staticmethod
    def split_file(root: Path, split: str) -> Path:
        path = root / "splits" / f"nvs_sem_{split}.txt"
        if split == "test" and not path.is_file():
            path = root / "splits" / "nvs_sem_val.txt"
        return path

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        records = []
        for scene in read_list(self.split_file(root, split), what=f"{self.NAME} split file"):
            images = root / "data" / scene / "panocam" / "resized_images"
            for rgb in sorted(images.rglob("*.jpg")):
                rel = rgb.relative_to(images)
                depth = images.parent / "resized_depth" / rel.parent / f"{rgb.stem}.png"
                records.append(
                    SampleRecord(id=safe_id(scene, *rel.parent.parts, rgb.stem), files={"rgb": rgb, "depth": depth},
                                 reference_id=f"{scene}_{rgb.stem}")
                )
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return f"{root}/data/<scene>/panocam/resized_images/*.jpg for the scenes of {self.split_file(root, split)}"

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        depth = read_png16(record.files["depth"], what=f"{self.NAME} depth").astype(np.float32) / 1000.0
        return RawSample(rgb=rgb, depth=depth)
