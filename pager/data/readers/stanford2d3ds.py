"""Stanford2D3DS: real indoor panoramas, 16-bit PNG depth (4096x2048 natively).

Layout: any ``**/rgb/<name>_rgb.png`` under ``Stanford2D3DS/`` with its depth at
``../depth/<name>_depth.png``: uint16 in units of 1/512 m, 65535 = missing (decoded to 0).
Depth range 0.01-75 m; the top and bottom 15 % of rows are left out of evaluation (``eval_mask``).

Splits: the reference evaluates on every panorama found, so without split files every split lists
all of them. An optional ``Stanford2D3DS/{split}.txt`` (one area folder name per line, e.g.
``area_5a``) restricts a split to the panoramas below those folders.
Normals (shipped by the dataset) are not read. Sample id: the folders above ``rgb/`` and the name
without ``_rgb.png`` / ``_frame_equirectangular_domain``, joined with ``__``; the original dataloader's id
(its prediction file name) is the file name without ``_frame_equirectangular_domain_rgb.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from pager.data.dataset import PanoramaDataset, RawSample, SampleRecord, safe_id
from pager.data.readers._io import read_list, read_png16, read_rgb, stems_by_suffix

STANFORD_DEPTH_UNIT = 1.0 / 512.0  # metres per step
STANFORD_MISSING = 65535


class Stanford2D3DS(PanoramaDataset):
    NAME = "Stanford2D3DS"
    EVAL_BAND = 0.15

    def list_records(self, root: Path, split: str, scenes: str) -> List[SampleRecord]:
        split_file = root / f"{split}.txt"
        areas = set(read_list(split_file, what=f"{self.NAME} split file")) if split_file.is_file() else None
        records = []
        # every folder holding rgb/ or depth/: its panoramas are the union over both (one missing its RGB
        # or its depth is listed, and the missing file reported)
        pano_dirs = sorted({p.parent for p in root.rglob("*") if p.is_dir() and p.name in ("rgb", "depth")})
        pairs = [(d, stem) for d in pano_dirs
                 for stem in sorted(set(stems_by_suffix(d / "rgb", ("_rgb.png",))) | set(stems_by_suffix(d / "depth", ("_depth.png",))))]
        if areas is not None:
            found = {part for d, _ in pairs for part in d.relative_to(root).parts}
            missing = sorted(areas - found)
            if missing:
                raise FileNotFoundError(f"{self.NAME}: area(s) listed in {split_file} hold no rgb/ or depth/ folder under {root}: "
                                        + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        for pano_dir, stem in pairs:
            rgb = pano_dir / "rgb" / f"{stem}_rgb.png"
            rel = rgb.relative_to(root)
            if areas is not None and not areas.intersection(rel.parts[:-1]):
                continue
            short = stem[: -len("_frame_equirectangular_domain")] if stem.endswith("_frame_equirectangular_domain") else stem
            depth = pano_dir / "depth" / f"{stem}_depth.png"
            # the original dataloader's id: the file name without "_frame_equirectangular_domain_rgb.png"
            ref = short if short != stem else None
            records.append(SampleRecord(id=safe_id(*rel.parts[:-2], short), files={"rgb": rgb, "depth": depth},
                                        reference_id=ref))
        return records

    def describe_search(self, root: Path, split: str) -> str:
        return f"{root}/**/rgb/*_rgb.png" + (f" (areas of {root / f'{split}.txt'})" if (root / f"{split}.txt").is_file() else "")

    def load_record(self, record: SampleRecord) -> RawSample:
        rgb = read_rgb(record.files["rgb"], what=f"{self.NAME} rgb")
        raw = read_png16(record.files["depth"], what=f"{self.NAME} depth")
        depth = raw.astype(np.float32) * STANFORD_DEPTH_UNIT
        depth[raw == STANFORD_MISSING] = 0.0
        return RawSample(rgb=rgb, depth=depth)
