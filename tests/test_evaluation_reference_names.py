"""Evaluation of prediction files named the original project's way, and what counts as evaluated.

The original ``inference.py --generate_eval`` writes ``eval/<id>.npz`` (``np.savez(eval_dir / id, pred)``, depth
``[1, H, W]``) with the id its dataloader returns; the expected ids below are those dataloaders' formulas
(prs-eth/PaGeR at af693157, written relative to the dataset folder), applied to the fixture files.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pager.data import build_dataset
from pager.evaluation import runners as R
from tests.fixtures_data import make_dataset, make_matterport3d360, make_panoinfinigen_lmdb, make_structured3d


def _original_id(name: str, record, root: Path, split: str) -> str:
    """The id the original dataloader returns for the sample stored at ``record.files``."""
    if name == "Matterport3D360":
        return record.files["rgb"].name[:-8]  # minus "_rgb.png"
    if name == "Stanford2D3DS":
        return record.files["rgb"].name[:-37]  # minus "_frame_equirectangular_domain_rgb.png"
    if name == "Structured3D":  # .../scene_XXXXX/2D_rendering/<room>/panorama/full/rgb_rawlight.png
        parts = record.files["rgb"].parts
        return parts[-6] + "_" + parts[-4]
    if name == "Replica360_4K":  # <scene>/<file>
        parts = record.files["rgb"].parts
        return parts[-2] + "_" + parts[-1][:4]
    if name == "ScannetPP":  # data/<scene>/panocam/resized_images/<stem>.jpg
        rel = record.files["rgb"].relative_to(root / "ScannetPP" / "data")
        return rel.parts[0] + "_" + record.files["rgb"].stem
    if name == "PanoInfinigen":  # f"{root.name}_shard{shard:05d}_{scene_id}_view{view:04d}", root = <type>/<split>
        shard = int(record.files["shard"].name[len("shard_"):-len(".lmdb")])
        scene, view = record.extra["key"].split("/")
        return f"{split}_shard{shard:05d}_{scene}_view{int(view):04d}"
    raise AssertionError(name)


SPLITS = {"Matterport3D360": "test", "Stanford2D3DS": "test", "Structured3D": "test", "Replica360_4K": "test",
          "ScannetPP": "val", "PanoInfinigen": "val"}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_every_reader_knows_the_original_id(name, tmp_path):
    make_dataset(name, tmp_path, height=16)
    ds = build_dataset(name, tmp_path, split=SPLITS[name])
    assert len(ds.records) >= 2
    refs = [r.reference_id for r in ds.records]
    assert refs == [_original_id(name, r, tmp_path, SPLITS[name]) for r in ds.records]
    assert all(ref != r.id for ref, r in zip(refs, ds.records))  # ours differ: both names must be tried


def _write_original_way(eval_dir: Path, ds, factor: float) -> None:
    """Predictions as the original inference.py writes them: np.savez(eval/<original id>, [1, H, W])."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    for k, rec in enumerate(ds.records):
        gt = ds[k]["depth"].numpy().reshape(1, *ds[k]["depth"].shape[-2:]).astype(np.float32)
        np.savez(eval_dir / rec.reference_id, gt * np.float32(factor))


@pytest.mark.parametrize("name,maker", [("Matterport3D360", make_matterport3d360), ("Stanford2D3DS", None)])
@pytest.mark.parametrize("factor,alignment,abs_rel", [(1.0, "metric", 0.0), (1.1, "metric", 0.1), (1.1, "scale", 0.0)])
def test_scripts_score_original_named_predictions(name, maker, factor, alignment, abs_rel, tmp_path, capsys):
    """Matterport3D360 (.dpt) and Stanford2D3DS (16-bit PNG) fixtures; predictions named by the original ids."""
    make_dataset(name, tmp_path / "data", height=16)
    ds = build_dataset(name, tmp_path / "data", split="test")
    eval_dir = tmp_path / "results" / "ckpt" / name / "eval"
    _write_original_way(eval_dir, ds, factor)
    argv = ["--pred_path", str(tmp_path / "results" / "ckpt"), "--data_path", str(tmp_path / "data"),
            "--dataset", name, "--alignment_type", alignment, "--device", "cpu"]
    assert R.depth_main(argv) == 0
    out = capsys.readouterr().out
    assert f"{len(ds)} evaluated" in out
    res = R.evaluate_depth(tmp_path / "results" / "ckpt", tmp_path / "data", name, alignment, device="cpu", write=False)
    assert res.n_evaluated == len(ds) and res.n_problems == 0 and res.unmatched == []
    assert res.metrics["abs_rel"] == pytest.approx(abs_rel, abs=1e-6)


def test_a_file_matching_two_samples_is_an_error(tmp_path, capsys):
    # the original names both an indoor and an outdoor view "val_shard00000_s_view0000"
    make_panoinfinigen_lmdb(tmp_path / "data", layout={("indoor", "val"): [(0, "s", 1)], ("outdoor", "val"): [(0, "s", 1)]})
    ds = build_dataset("PanoInfinigen", tmp_path / "data", split="val")
    eval_dir = tmp_path / "res" / "eval"
    eval_dir.mkdir(parents=True)
    np.savez(eval_dir / "val_shard00000_s_view0000", np.ones((1, 16, 32), np.float32))
    with pytest.raises(ValueError, match="matches two samples") as exc:
        R.evaluate_depth(tmp_path / "res", tmp_path / "data", "PanoInfinigen", split="val", device="cpu", write=False)
    assert "indoor__s__0000" in str(exc.value) and "outdoor__s__0000" in str(exc.value)
    argv = ["--pred_path", str(tmp_path / "res"), "--data_path", str(tmp_path / "data"), "--dataset", "PanoInfinigen",
            "--split", "val", "--device", "cpu"]
    assert R.depth_main(argv) == 2
    err = capsys.readouterr().err
    assert "indoor__s__0000" in err and "outdoor__s__0000" in err and "Traceback" not in err
    # named with our ids instead, both are evaluated
    (eval_dir / "val_shard00000_s_view0000.npz").unlink()
    for k, rec in enumerate(ds.records):
        np.savez(eval_dir / rec.id, ds[k]["depth"].numpy())
    assert R.evaluate_depth(tmp_path / "res", tmp_path / "data", "PanoInfinigen", split="val", device="cpu",
                            write=False).n_evaluated == 2


def test_a_sample_with_two_files_is_an_error(tmp_path):
    make_matterport3d360(tmp_path / "data", scenes={"test": ["sceneD"]}, views=1)
    ds = build_dataset("Matterport3D360", tmp_path / "data", split="test")
    eval_dir = tmp_path / "res" / "eval"
    eval_dir.mkdir(parents=True)
    rec = ds.records[0]
    for stem in (rec.id, rec.reference_id):
        np.savez(eval_dir / stem, np.ones((16, 32), np.float32))
    with pytest.raises(ValueError, match="two prediction files") as exc:
        R.evaluate_depth(tmp_path / "res", tmp_path / "data", "Matterport3D360", device="cpu", write=False)
    assert f"{rec.id}.npz" in str(exc.value) and f"{rec.reference_id}.npz" in str(exc.value)


@pytest.mark.parametrize("task", ["depth", "normals", "edges", "seams"])
def test_nothing_evaluated_exits_1_naming_expected_and_found(task, tmp_path, capsys):
    make_structured3d(tmp_path / "data", height=16, scenes={"test": [3250]}, rooms=2)
    ds = build_dataset("Structured3D", tmp_path / "data", split="test")
    eval_dir = tmp_path / "res" / "eval"
    eval_dir.mkdir(parents=True)
    np.savez(eval_dir / "some_other_name", np.ones((1, 16, 32), np.float32))
    argv = [task, "--pred_path", str(tmp_path / "res"), "--data_path", str(tmp_path / "data"),
            "--dataset", "Structured3D", "--device", "cpu"]
    assert R.main(argv) == 1
    cap = capsys.readouterr()
    assert f"{ds.records[0].id}.npz" in cap.err and f"{ds.records[0].reference_id}.npz" in cap.err
    assert "some_other_name.npz" in cap.err
    assert cap.out == ""  # no table printed
    text = next((tmp_path / "res").glob("evaluation_metrics_*.txt")).read_text()
    assert "FAILED" in text and "nan" not in text.lower()


def test_bad_values_are_named_problems_and_evaluated_counts_what_is_averaged(tmp_path, capsys):
    """Issue 15 B: inf, a 0x0 array, a complex dtype, a float64 value beyond float32 and a prediction giving a
    non-finite metric are named problems; "N evaluated" is the number of samples averaged."""
    truth = make_matterport3d360(tmp_path / "data", height=16, scenes={"test": ["sA", "sB", "sC", "sD"]}, views=2,
                                 corrupt=False)["test"]
    ds = build_dataset("Matterport3D360", tmp_path / "data", split="test")
    ids = [r.id for r in ds.records]
    eval_dir = tmp_path / "res" / "eval"
    eval_dir.mkdir(parents=True)
    gts = {r.id: ds[k]["depth"].numpy().reshape(16, 32) for k, r in enumerate(ds.records)}
    bad = {
        ids[0]: ("nonfinite", np.where(np.arange(512).reshape(16, 32) == 40, np.inf, 1.0).astype(np.float32)),
        ids[1]: ("bad_shape", np.zeros((0, 0), np.float32)),
        ids[2]: ("bad_dtype", gts[ids[2]].astype(np.complex64)),
        ids[3]: ("nonfinite", np.full((16, 32), 1e300)),
        ids[4]: ("nonfinite_metric", np.full((16, 32), 3e38, np.float32)),  # finite, but its squared error is not
    }
    good = {ids[5]: 1.2, ids[6]: 1.3, ids[7]: 1.0}
    for sid, (_, arr) in bad.items():
        np.savez(eval_dir / sid, arr)
    for sid, f in good.items():
        np.savez(eval_dir / sid, gts[sid] * np.float32(f))
    res = R.evaluate_depth(tmp_path / "res", tmp_path / "data", "Matterport3D360", "metric", device="cpu")
    for sid, (kind, _) in bad.items():
        assert sid in res.problems[kind], (sid, kind, res.problems)
    assert res.n_evaluated == 3 and sorted(r["id"] for r in res.per_sample if r["status"] == "ok") == sorted(good)
    assert res.metrics["abs_rel"] == pytest.approx(np.mean([0.2, 0.3, 0.0]), abs=1e-6)
    assert all(math.isfinite(v) for v in res.metrics.values())
    text = (tmp_path / "res" / "evaluation_metrics_metric.txt").read_text()
    assert "3 evaluated" in text and "1 bad_dtype" in text and "1 nonfinite_metric" in text


def test_original_named_normals_are_read_in_the_original_frame(tmp_path):
    """The original writes normals in its mirrored frame (z = left): a file named its way holding the ground truth
    in that frame scores 0 degrees, like our frame under our id."""
    make_structured3d(tmp_path / "data", height=16, scenes={"test": [3250]}, rooms=2)
    ds = build_dataset("Structured3D", tmp_path / "data", split="test")
    eval_dir = tmp_path / "res" / "eval"
    eval_dir.mkdir(parents=True)
    ours, theirs = ds.records
    n0 = ds[0]["normals"].numpy()
    np.savez(eval_dir / ours.id, n0)
    n1 = ds[1]["normals"].numpy().copy()
    n1[2] *= -1.0
    np.savez(eval_dir / theirs.reference_id, n1)
    res = R.evaluate_normals(tmp_path / "res", tmp_path / "data", "Structured3D", device="cpu", write=False)
    assert res.n_evaluated == 2
    assert res.metrics["mean"] == pytest.approx(0.0, abs=0.05)
