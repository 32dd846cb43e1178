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
from pager.data.readers._io import read_list, read_png16, read_rgb, stems_by_suffix


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
        split_file = self.split_file(root, split)
        for scene in read_list(split_file, what=f"{self.NAME} split file"):
            pano = root / "data" / scene / "panocam"
            if not pano.is_dir():
                raise FileNotFoundError(f"{self.NAME}: scene {scene} listed in {split_file} not found: {pano}")
            images, depths = pano / "resized_images", pano / "resized_depth"
            # the union over RGB and depth: a frame missing either is listed and reported
            stems = set(stems_by_suffix(images, (".jpg",), recursive=True))
            stems.update(stems_by_suffix(depths, (".png",), recursive=True))
            for stem in sorted(stems):
                rel = Path(stem)
                records.append(
                    SampleRecord(id=safe_id(scene, *rel.parent.parts, rel.name),
                                 files={"rgb": images / f"{stem}.jpg", "depth": depths / f"{stem}.png"},
                                 reference_id=f"{scene}_{rel.name}")
                )
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return f"{root}/data/<scene>/panocam/resized_images/*.jpg for the scenes of {self.split_file(root, split)}"

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        depth = read_png16(record.files["depth"], what=f"{self.NAME} depth").astype(np.float32) / 1000.0
        return RawSample(rgb=rgb, depth=depth)
