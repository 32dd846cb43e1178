"""Synthetic: our procedural scenes (``pager synth``) in the plain-file layout.

See :mod:`pager.data.readers.plain` for the layout under ``<data_path>/Synthetic/``. Depth range
0.01-15 m when ``scenes="indoor"``, else 0.01-75 m (like PanoInfinigen); ``meta.json`` may override
them with ``min_depth`` / ``max_depth_indoor`` / ``max_depth_outdoor`` (written by ``pager synth``). Normals are in OUR world frame unless ``meta.json`` says
``"normals_frame": "reference"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord
from pager.data.readers.plain import list_plain, load_plain, read_meta


class Synthetic(PanoramaDataset):
    NAME = "Synthetic"
    HAS_NORMALS = True
    SCENE_TYPES = ("indoor", "outdoor")
    INDOOR_MAX_DEPTH = 15.0

    def _scene_types(self, scenes: str) -> Tuple[str, ...]:
        return self.SCENE_TYPES if scenes == "both" else (scenes,)

    def depth_range(self) -> Tuple[float, float]:
        meta = read_meta(self.root)  # defaults when the file (or folder) is missing
        lo = float(meta.get("min_depth", self.MIN_DEPTH))
        if self.scenes == "indoor":
            hi = float(meta.get("max_depth_indoor", self.INDOOR_MAX_DEPTH))
        else:
            hi = float(meta.get("max_depth_outdoor", self.MAX_DEPTH))
        if not 0 < lo < hi:
            raise ValueError(f"{self.root / 'meta.json'}: need 0 < min_depth < max depth, got {lo}, {hi}")
        return lo, hi

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        self._meta = read_meta(root)
        return list_plain(root, split, self._scene_types(scenes))

    def describe_search(self, root: Path, split: str) -> str:
        return " and ".join(str(root / t / split) + "/<scene>/<view>_{rgb,depth,...}" for t in self._scene_types(self.scenes))

    def load_record(self, record: SampleRecord) -> RawSample:
        return load_plain(record, self._meta, self.NAME)
