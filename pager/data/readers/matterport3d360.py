"""Matterport3D360: real indoor panoramas with ``.dpt`` depth (2048x1024 natively).

Layout::

    Matterport3D360/scenes_{train,val,test}.txt            one scene name per line
    Matterport3D360/<any folder>/data/<scene>/<key>_rgb.png
    Matterport3D360/<any folder>/data/<scene>/<key>_depth.dpt   (float32 metres, see ``read_dpt``)

Depth range 0.01-75 m; the top and bottom 14 % of rows are left out of evaluation (``eval_mask``).
No normals. Sample id: ``<scene>__<key>``; the original dataloader's id (its prediction file name): ``<key>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_dpt, read_list, read_rgb, stems_by_suffix


class Matterport3D360(PanoramaDataset):
    NAME = "Matterport3D360"
    EVAL_BAND = 0.14

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        split_file = root / f"scenes_{split}.txt"
        wanted = set(read_list(split_file, what=f"{self.NAME} split file"))
        records = []
        found = set()
        for scene_dir in sorted(root.glob("*/data/*")):
            if not scene_dir.is_dir() or scene_dir.name not in wanted:
                continue
            found.add(scene_dir.name)
            # the union over both files of a view: a view missing either is listed and reported
            for key in stems_by_suffix(scene_dir, ("_rgb.png", "_depth.dpt")):
                records.append(
                    SampleRecord(
                        id=safe_id(scene_dir.name, key),
                        files={"rgb": scene_dir / f"{key}_rgb.png", "depth": scene_dir / f"{key}_depth.dpt"},
                        reference_id=key,
                    )
                )
        missing = sorted(wanted - found)
        if missing:
            raise FileNotFoundError(
                f"{self.NAME}: {len(missing)} scene(s) listed in {split_file} not found as {root}/*/data/<scene>: "
                + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            )
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return f"{root}/*/data/<scene>/*_rgb.png for the scenes of {root / f'scenes_{split}.txt'}"

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        depth = read_dpt(record.files["depth"])
        return RawSample(rgb=rgb, depth=depth)
