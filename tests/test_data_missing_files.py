"""Every reader notices a listed sample that lacks one of its files (the kind: samples must not be discovered
by globbing one modality, or a sample whose RGB is missing silently vanishes from inference and evaluation).

Fixtures are written in each dataset's real on-disk layout (``tests/fixtures_data.py``); one file of one sample
is deleted, and the dataset must then (a) stop with an error naming that file, (b) with ``skip_bad_samples``
count and skip exactly that sample, (c) for the RGB under ``rgb_only`` (what inference reads) also name it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pager.data import build_dataset
from tests.fixtures_data import make_dataset, make_plain

# (dataset, file kind of a sample); the plain layout's normals and mask are optional by design
CASES = [
    ("Matterport3D360", "rgb"), ("Matterport3D360", "depth"),
    ("Stanford2D3DS", "rgb"), ("Stanford2D3DS", "depth"),
    ("Structured3D", "rgb"), ("Structured3D", "depth"), ("Structured3D", "normals"),
    ("Replica360_4K", "rgb"), ("Replica360_4K", "depth"), ("Replica360_4K", "mask"),
    ("ScannetPP", "rgb"), ("ScannetPP", "depth"),
    ("Synthetic", "rgb"), ("Synthetic", "depth"),
]
PLAIN_PANOINFINIGEN = [("PanoInfinigen", "rgb"), ("PanoInfinigen", "depth")]


def _make(name: str, data_path: Path) -> None:
    if name == "PanoInfinigen":  # its plain-file layout (the LMDB layout has one index of keys, tested elsewhere)
        make_plain(data_path, name="PanoInfinigen")
    else:
        make_dataset(name, data_path)


def _all_samples(ds) -> None:
    for i in range(len(ds)):
        ds[i]


@pytest.mark.parametrize("name,kind", CASES + PLAIN_PANOINFINIGEN)
def test_sample_missing_one_file_is_reported(tmp_path, name, kind):
    _make(name, tmp_path)
    full = build_dataset(name, tmp_path, split="train")
    n = len(full)
    victim = full.records[0]
    path = Path(victim.files[kind])
    assert path.is_file()
    path.unlink()

    # (a) an error naming the missing file, whichever file it is (the sample is still listed)
    ds = build_dataset(name, tmp_path, split="train")
    assert len(ds) == n
    with pytest.raises(FileNotFoundError, match=str(path.name)) as exc:
        _all_samples(ds)
    assert str(path) in str(exc.value)

    # (b) skip_bad_samples: exactly that sample is counted and skipped
    ds = build_dataset(name, tmp_path, split="train", skip_bad_samples=True)
    assert len(ds) == n - 1 and ds.skipped == 1
    assert victim.id not in {r.id for r in ds.records}

    # (c) inference reads the RGB only: a missing RGB is named there too; another missing file does not matter
    ds = build_dataset(name, tmp_path, split="train", rgb_only=True)
    assert len(ds) == n
    if kind == "rgb":
        with pytest.raises(FileNotFoundError) as exc:
            _all_samples(ds)
        assert str(path) in str(exc.value)
    else:
        _all_samples(ds)


def _add_ghost(name: str, root: Path) -> None:
    files = {
        "Matterport3D360": root / "Matterport3D360" / "scenes_train.txt",
        "ScannetPP": root / "ScannetPP" / "splits" / "nvs_sem_train.txt",
        "Synthetic": root / "Synthetic" / "indoor" / "train.txt",
    }
    if name in files:
        files[name].write_text(files[name].read_text() + "ghost_scene\n")
    elif name == "Replica360_4K":
        (root / name / "train.txt").write_text("room_0\nghost_scene\n")
    elif name == "Stanford2D3DS":
        (root / name / "train.txt").write_text("area_1\nghost_scene\n")


@pytest.mark.parametrize("name", ["Matterport3D360", "ScannetPP", "Synthetic", "Replica360_4K", "Stanford2D3DS"])
def test_scene_listed_in_split_file_but_absent_is_reported(tmp_path, name):
    _make(name, tmp_path)
    _add_ghost(name, tmp_path)
    with pytest.raises(FileNotFoundError, match="ghost_scene"):
        build_dataset(name, tmp_path, split="train")
