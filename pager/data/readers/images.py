"""Images: a folder of panoramas without ground truth (``--dataset Images --data_path FOLDER``).

Every image file directly inside ``data_path`` (or ``data_path/Images``) is one sample of every split; its id is
the file name without suffix, made unique with the suffix when two files share a stem (``a.png``/``a.jpg`` ->
``a_png``, ``a_jpg``). Samples hold RGB only (``rgb_only`` is always on): inference runs on them, evaluation
and training refuse them (no ground truth).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord


class Images(PanoramaDataset):
    NAME = "Images"
    HAS_NORMALS = False
    HAS_GROUND_TRUTH = False
    SCENE_TYPES = ("indoor", "outdoor")

    def __init__(self, *args, **kwargs) -> None:
        kwargs["rgb_only"] = True
        super().__init__(*args, **kwargs)

    def _resolve_root(self, data_path: Path) -> Path:
        return data_path / "Images" if (data_path / "Images").is_dir() else data_path

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        from pager.io_utils import IMAGE_SUFFIXES

        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        stems = Counter(p.stem for p in files)
        return [SampleRecord(id=p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}",
                             scene_type="indoor", files={"rgb": p}) for p in files]

    def describe_search(self, root: Path, split: str) -> str:
        return f"image files directly in {root}"

    def load_record(self, record: SampleRecord) -> RawSample:  # pragma: no cover - rgb_only never gets here
        raise ValueError(f"{self.NAME}: {record.files['rgb']} has no ground truth (a folder of images)")
