"""write_dataset / pager synth: layouts round-trip in metres, LMDB as PanoInfinigen, determinism, no silent overwrite."""

import io
import json
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from pager.data.synthetic import render_scene
from pager.data.synthetic.png import decode_png, encode_png
from pager.data.synthetic.writer import DEPTH_PNG_SCALE, scene_seed, split_counts, write_dataset

H = 16


def _scene_of(sid):
    kind, _, hexseed = sid.split("_")
    return kind, int(hexseed, 16)


def _tree_bytes(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (5, 7)), (np.uint8, (5, 7, 3)), (np.uint16, (4, 9)), (np.uint16, (4, 9, 3))])
def test_png_roundtrip_and_pillow_compatibility(dtype, shape):
    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    data = encode_png(a)
    assert np.array_equal(decode_png(data), a)
    assert encode_png(a) == data
    if not (dtype == np.uint16 and len(shape) == 3):  # Pillow reduces 16-bit RGB to 8 bits
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), a)
    with pytest.raises(ValueError):
        encode_png(a.astype(np.float32))


def test_split_counts():
    assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_counts(1, (0.8, 0.1, 0.1)) == [1, 0, 0]
    assert split_counts(7, (1, 0, 0)) == [7, 0, 0]
    assert sum(split_counts(101, (0.7, 0.2, 0.1))) == 101
    with pytest.raises(ValueError):
        split_counts(5, (0.5, 0.5))


def test_files_layout_roundtrip(tmp_path):
    out = write_dataset(tmp_path / "Synthetic", num=6, height=H, scenes="both", seed=3, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["depth_scale"] == DEPTH_PNG_SCALE and meta["normals_frame"] == "pager" and meta["seed"] == 3
    seen = 0
    for kind in ("indoor", "outdoor"):
        for split in ("train", "val", "test"):
            ids = (out / kind / f"{split}.txt").read_text().split()
            assert len(ids) == 1  # 3 scenes per kind -> 1 / 1 / 1
            for sid in ids:
                k, s = _scene_of(sid)
                assert k == kind
                ref = render_scene(s, height=H, kind=kind)
                d = out / kind / split / sid
                rgb = np.asarray(Image.open(d / "0000_rgb.png"))
                assert np.array_equal(rgb, ref.rgb)
                raw = np.asarray(Image.open(d / "0000_depth.png"))
                assert raw.dtype == np.uint16
                metres = raw.astype(np.float64) * DEPTH_PNG_SCALE
                assert np.abs(metres - ref.depth).max() <= DEPTH_PNG_SCALE / 2 + 1e-6
                mask = np.asarray(Image.open(d / "0000_mask.png")) > 0
                assert np.array_equal(mask, ref.mask) and np.array_equal(raw > 0, ref.mask)
                normals = np.load(d / "0000_normals.npy")
                assert normals.dtype == np.float16 and normals.shape == (H, 2 * H, 3)
                np.testing.assert_allclose(normals.astype(np.float32), ref.normals, atol=1e-3)
                seen += 1
    assert seen == 6


def test_lmdb_layout_is_panoinfinigen(tmp_path):
    out = write_dataset(
        tmp_path / "PanoInfinigen", num=10, height=H, seed=1, format="lmdb", scenes_per_shard=2, views_per_scene=2, progress=False
    )
    assert json.loads((out / "meta.json").read_text())["normals_frame"] == "reference"
    split_dir = out / "outdoor" / "train"
    index = np.load(split_dir / "index.npy", allow_pickle=True)  # as the reference loader does
    rows = index.tolist()
    assert len(rows) == 3 and all(len(r) == 3 for r in rows)
    assert [r[0] for r in rows] == [0, 0, 1]  # two scenes per shard
    for shard, sid, views in rows:
        assert views == 2 and isinstance(sid, str)
        env = lmdb.open(str(split_dir / f"shard_{shard:05d}.lmdb"), readonly=True, lock=False, subdir=True)
        with env.begin() as txn:
            for view in range(views):
                key = f"{sid}/{view:04d}"
                rgb = np.asarray(Image.open(io.BytesIO(txn.get(f"{key}#rgb".encode()))).convert("RGB"))
                depth = np.load(io.BytesIO(txn.get(f"{key}#depth".encode())), allow_pickle=False)
                normal = np.load(io.BytesIO(txn.get(f"{key}#normal".encode())), allow_pickle=False)
                kind, s = _scene_of(sid)
                ref = render_scene(s, height=H, kind=kind, view=view)
                assert np.array_equal(rgb, ref.rgb)
                assert depth.dtype == np.float32 and depth.shape == (H, 2 * H)
                assert np.array_equal(depth[ref.mask], ref.depth[ref.mask])
                assert np.all(np.isposinf(depth[~ref.mask])) and (~ref.mask).any()  # sky
                assert normal.dtype == np.float32 and normal.shape == (H, 2 * H, 3)
                flipped = ref.normals * np.array([1, 1, -1], np.float32)  # reference frame: z left
                assert np.array_equal(normal, flipped)
                # the reference loader's masking (clip to [0.01, 75], valid below 0.99 * 75) keeps sky out
                ref_mask = np.clip(depth, 0.01, 75.0) < 0.99 * 75.0
                assert np.all(ref_mask <= ref.mask) and ref_mask.sum() >= 0.9 * ref.mask.sum()
        env.close()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary folder left


def test_written_sets_load_through_the_dataloaders(tmp_path):
    registry = pytest.importorskip("pager.data.registry")
    write_dataset(tmp_path / "Synthetic", num=6, height=H, seed=2, progress=False)
    write_dataset(tmp_path / "PanoInfinigen", num=6, height=H, seed=2, format="lmdb", progress=False)
    for name in ("Synthetic", "PanoInfinigen"):
        ds = registry.build_dataset(name, tmp_path, "train", scenes="both")
        assert len(ds) == 2
        for i in range(len(ds)):
            sample = ds[i]
            kind, sid, view = sample["id"].split("__")
            _, s = _scene_of(sid)
            ref = render_scene(s, height=H, kind=kind, view=int(view))
            depth = sample["depth"][0].numpy()
            mask = sample["mask"][0].numpy()
            assert np.all(mask <= ref.mask)
            assert mask.sum() > 0.4 * ref.mask.sum()
            assert np.abs(depth[mask] - ref.depth[mask]).max() <= DEPTH_PNG_SCALE
            normals = sample["normals"].numpy().transpose(1, 2, 0)
            np.testing.assert_allclose(normals[mask], ref.normals[mask], atol=2e-3)


def test_same_seed_same_bytes_and_no_silent_overwrite(tmp_path):
    a = write_dataset(tmp_path / "a", num=4, height=8, seed=5, progress=False)
    b = write_dataset(tmp_path / "b", num=4, height=8, seed=5, progress=False)
    assert _tree_bytes(a) == _tree_bytes(b)
    c = write_dataset(tmp_path / "c", num=4, height=8, seed=6, progress=False)
    assert _tree_bytes(a) != _tree_bytes(c)
    before = _tree_bytes(a)
    with pytest.raises(FileExistsError):
        write_dataset(a, num=2, height=8, seed=9, progress=False)
    assert _tree_bytes(a) == before
    write_dataset(a, num=4, height=8, seed=6, overwrite=True, progress=False)
    assert _tree_bytes(a) == _tree_bytes(c)
    (tmp_path / "empty").mkdir()
    write_dataset(tmp_path / "empty", num=1, height=8, progress=False)  # an empty folder is fine
    # LMDB: identical index and values for the same seed
    la = write_dataset(tmp_path / "la", num=2, height=8, format="lmdb", progress=False)
    lb = write_dataset(tmp_path / "lb", num=2, height=8, format="lmdb", progress=False)
    for kind in ("indoor", "outdoor"):
        d = Path(kind) / "train"
        assert (la / d / "index.npy").read_bytes() == (lb / d / "index.npy").read_bytes()
        values = []
        for root in (la, lb):
            env = lmdb.open(str(root / d / "shard_00000.lmdb"), readonly=True, lock=False)
            with env.begin() as txn:
                values.append(list(txn.cursor()))
            env.close()
        assert values[0] == values[1] and len(values[0]) == 3


def test_scene_seeds_are_distinct():
    seeds = {scene_seed(0, k, i) for k in ("indoor", "outdoor") for i in range(500)}
    assert len(seeds) == 1000


@pytest.mark.parametrize(
    "kwargs",
    [dict(num=0), dict(num=2, format="zip"), dict(num=2, scenes="space"), dict(num=2, splits=(1, 0)), dict(num=2, supersample=0)],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "x", height=8, progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_synth(tmp_path, capsys):
    from pager.cli import main as cli_main

    out = tmp_path / "set"
    argv = ["synth", "--out", str(out), "--num", "2", "--height", "8", "--scenes", "indoor", "--no-progress"]
    assert cli_main.main(argv) == 0
    assert sorted(p.name for p in (out / "indoor").iterdir()) == ["test", "test.txt", "train", "train.txt", "val", "val.txt"]
    assert cli_main.main(argv) == 2  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    assert cli_main.main(argv + ["--overwrite", "--format", "lmdb", "--supersample", "2"]) == 0
    assert (out / "indoor" / "train" / "index.npy").is_file()
