"""Evaluation runners end to end on tiny on-disk datasets (pager.evaluation.runners)."""
import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pager.data import build_dataset
from pager.evaluation import runners as R
from tests.fixtures_data import make_matterport3d360, make_structured3d

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def matterport(tmp_path):
    """4 test samples of Matterport3D360 (16x32) and a prediction folder: 2 good (2x the truth),
    one missing, one holding NaN, plus a stray file that matches no sample."""
    truth = make_matterport3d360(tmp_path / "data", height=16, scenes={"test": ["sceneD", "sceneE"]}, views=2)["test"]
    ids = sorted(truth)
    eval_dir = tmp_path / "results" / "ckpt" / "Matterport3D360" / "eval"
    eval_dir.mkdir(parents=True)
    for k, sid in enumerate(ids):
        if k == 1:
            continue  # missing
        pred = 2.0 * truth[sid].analytic.astype(np.float32)
        if k == 2:
            pred[3, 5] = np.nan
        np.savez(eval_dir / f"{sid}.npz", pred)
    np.savez(eval_dir / "stray.npz", np.ones((16, 32), np.float32))
    return tmp_path, ids, truth, eval_dir


def test_depth_runner_reports_missing_and_nan(matterport):
    tmp, ids, truth, eval_dir = matterport
    res = R.evaluate_depth(tmp / "results" / "ckpt", tmp / "data", "Matterport3D360", "metric",
                           save_error_maps=True, error_maps_saving_frequency=2, device="cpu")
    assert res.pred_dir == eval_dir
    assert res.n_total == 4 and res.n_evaluated == 2
    assert res.problems["missing"] == [ids[1]] and res.problems["nonfinite"] == [ids[2]]
    assert res.unmatched == ["stray"]
    # prediction = 2 x truth: AbsRel 1, no pixel within 1.25^3
    assert res.metrics["abs_rel"] == pytest.approx(1.0, rel=1e-5)
    assert res.metrics["delta1"] == 0.0 and res.metrics["delta3"] == 0.0

    out_dir = eval_dir.parent
    data = json.loads((out_dir / "evaluation_metrics_metric.json").read_text())
    assert data["counts"]["missing"] == 1 and data["counts"]["nonfinite"] == 1 and data["counts"]["evaluated"] == 2
    assert data["problems"]["missing"] == [ids[1]]
    assert data["metrics"]["abs_rel"] == pytest.approx(1.0, rel=1e-5)
    text = (out_dir / "evaluation_metrics_metric.txt").read_text()
    assert ids[1] in text and ids[2] in text and "abs_rel" in text
    rows = list(csv.DictReader((out_dir / "evaluation_per_sample_metric.csv").open()))
    assert [r["id"] for r in rows] == ids
    assert [r["status"] for r in rows] == ["ok", "missing", "nonfinite", "ok"]
    # the Matterport evaluation band: 2 of 16 rows masked at top and bottom; corrupted pixels excluded
    assert int(rows[3]["n_valid"]) == 12 * 32
    assert int(rows[0]["n_valid"]) == 12 * 32  # its corrupted pixels sit in row 1, inside the band
    maps = sorted(p.name for p in (out_dir / "error_maps_metric").glob("*.png"))
    assert maps == [f"{ids[0]}.png"]  # samples 0 and 2 are due; 2 holds NaN


def test_depth_runner_scale_alignment_and_strict(matterport):
    tmp, ids, truth, eval_dir = matterport
    res = R.evaluate_depth(tmp / "results", tmp / "data", "Matterport3D360", "scale", device="cpu")
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert res.metrics["delta1"] == 1.0
    rows = {r["id"]: r for r in res.per_sample}
    assert rows[ids[0]]["align_scale"] == pytest.approx(0.5, rel=1e-6)
    assert (eval_dir.parent / "evaluation_metrics_scale.json").is_file()
    with pytest.raises(ValueError, match=ids[1]):
        R.evaluate_depth(tmp / "results", tmp / "data", "Matterport3D360", "scale", strict=True, device="cpu",
                         overwrite=True)


def test_depth_cli_and_script(matterport, capsys):
    tmp, ids, truth, eval_dir = matterport
    argv = ["--pred_path", str(eval_dir), "--data_path", str(tmp / "data"), "--dataset", "Matterport3D360",
            "--alignment_type", "scale_and_shift", "--device", "cpu"]
    assert R.depth_main(argv) == 0
    assert "abs_rel" in capsys.readouterr().out
    assert (eval_dir.parent / "evaluation_metrics_scale_and_shift.txt").is_file()
    assert R.depth_main(argv) == 2  # the reports exist: refused, named, before any sample is read
    assert "evaluation_metrics_scale_and_shift.txt" in capsys.readouterr().err
    assert R.depth_main(argv + ["--strict", "--overwrite"]) == 2
    assert ids[1] in capsys.readouterr().err  # the first problem (the missing file) is named
    assert R.main(["depth"] + argv + ["--max_depth", "0.5", "--overwrite"]) == 1  # every pixel beyond 0.5 m
    assert "no prediction could be evaluated" in capsys.readouterr().err
    data = json.loads((eval_dir.parent / "evaluation_metrics_scale_and_shift.json").read_text())
    assert data["counts"]["empty_mask"] == 2 and data["counts"]["evaluated"] == 0
    proc = subprocess.run([sys.executable, str(REPO / "evaluation" / "depth_evaluation.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp)
    assert proc.returncode == 0 and "--error_maps_saving_frequency" in proc.stdout


def test_bad_shape_and_unreadable_are_reported(matterport):
    tmp, ids, truth, eval_dir = matterport
    np.savez(eval_dir / f"{ids[0]}.npz", np.ones((8, 16), np.float32))  # not resized: reported
    (eval_dir / f"{ids[3]}.npz").write_bytes(b"not a zip file")
    res = R.evaluate_depth(tmp / "results", tmp / "data", "Matterport3D360", device="cpu", write=False)
    assert res.problems["bad_shape"] == [ids[0]]
    assert res.problems["unreadable"] == [ids[3]]
    assert res.n_evaluated == 0 and res.n_problems == 4
    assert math.isnan(res.metrics["abs_rel"])
    # a plain .npy array under the .npz name and a [1, H, W] depth are accepted
    with open(eval_dir / f"{ids[3]}.npz", "wb") as fh:
        np.save(fh, 2.0 * truth[ids[3]].analytic[None].astype(np.float32))
    res = R.evaluate_depth(tmp / "results", tmp / "data", "Matterport3D360", device="cpu", write=False)
    assert res.n_evaluated == 1 and res.metrics["abs_rel"] == pytest.approx(1.0, rel=1e-5)


def test_edges_runner_perfect_prediction(matterport):
    tmp, ids, truth, eval_dir = matterport
    res = R.evaluate_edges(tmp / "results", tmp / "data", "Matterport3D360", device="cpu", dbe_max_distance=10)
    # a scaled copy of the truth has identical normalised edges
    assert res.metrics["edge_precision"] == 1.0 and res.metrics["edge_recall"] == 1.0
    assert res.metrics["dbe_accuracy"] == 0.0
    assert (eval_dir.parent / "evaluation_metrics_edges.json").is_file()


def test_seams_runner_from_predictions_only(tmp_path):
    from pager.geometry import cubemap_directions, cubemap_to_erp

    eval_dir = tmp_path / "preds" / "eval"
    eval_dir.mkdir(parents=True)
    d = cubemap_directions(32, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    cube = (3.0 + d[:, 0] + 0.4 * d[:, 1] * d[:, 2])[None, :, None]
    np.savez(eval_dir / "smooth.npz", cubemap_to_erp(cube, 48, 96)[0, 0].numpy().astype(np.float32))
    cube[:, 1] += 0.5
    np.savez(eval_dir / "stepped.npz", cubemap_to_erp(cube, 48, 96)[0].numpy().astype(np.float32))  # [1, H, W]
    top = argparse.ArgumentParser(prog="pager")
    R.add_parser(top.add_subparsers(dest="command"))  # the `pager evaluate` sub-command interface
    args = top.parse_args(["evaluate", "seams", "--pred_path", str(tmp_path / "preds"), "--device", "cpu"])
    assert R.run(args) == 0
    data = json.loads((tmp_path / "preds" / "evaluation_metrics_seams.json").read_text())
    assert data["counts"]["evaluated"] == 2
    rows = {r["id"]: r for r in csv.DictReader((tmp_path / "preds" / "evaluation_per_sample_seams.csv").open())}
    assert float(rows["smooth"]["seam_defect_density"]) == 0.0
    assert float(rows["stepped"]["seam_prevalence"]) == pytest.approx(4 / 12)
    assert data["metrics"]["seam_prevalence"] == pytest.approx(2 / 12)


def test_normals_runner_known_rotation(tmp_path):
    make_structured3d(tmp_path / "data", height=16, scenes={"test": [3250]}, rooms=2)
    ds = build_dataset("Structured3D", tmp_path / "data", split="test")
    eval_dir = tmp_path / "res" / "Structured3D" / "eval"
    eval_dir.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for k in range(len(ds)):
        s = ds[k]
        n = s["normals"].double()
        r = torch.randn(n.shape, generator=g, dtype=torch.float64)
        u = r - (r * n).sum(0, keepdim=True) * n
        u = u / u.norm(dim=0, keepdim=True)
        a = math.radians(10.0)
        pred = (math.cos(a) * n + math.sin(a) * u).float().numpy()
        np.savez(eval_dir / f"{s['id']}.npz", pred.transpose(1, 2, 0) if k == 0 else pred)  # [H,W,3] and [3,H,W]
    res = R.evaluate_normals(tmp_path / "res", tmp_path / "data", "Structured3D", device="cpu",
                             save_error_maps=True)
    assert res.n_evaluated == 2
    assert res.metrics["mean"] == pytest.approx(10.0, abs=1e-3)
    assert res.metrics["median"] == pytest.approx(10.0, abs=1e-3)
    assert res.metrics["within_11.25"] == pytest.approx(100.0) and res.metrics["within_7.5"] == 0.0
    assert len(list((tmp_path / "res" / "Structured3D" / "error_maps_normals").glob("*.png"))) == 2


def test_find_eval_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pred_path"):
        R.find_eval_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="generate_eval"):
        R.find_eval_dir(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name / "eval").mkdir(parents=True)
        np.savez(tmp_path / name / "eval" / "x.npz", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="several"):
        R.find_eval_dir(tmp_path)
    assert R.find_eval_dir(tmp_path, "b") == tmp_path / "b" / "eval"


def test_error_map_png_is_diverging():
    from PIL import Image
    import io

    err = torch.tensor([[-1.0, 0.0, 1.0, 0.5]])
    img = np.asarray(Image.open(io.BytesIO(R.render_error_map(err, torch.tensor([[True, True, True, False]])))))
    top = img[0]
    assert top[0, 2] > 50 and top[0, 0] == 0 and top[0, 1] == 0  # -1: (dark) blue
    assert top[2, 0] > 100 and top[2, 1] == 0 and top[2, 2] == 0  # +1: (dark) red
    assert (top[1] > 240).all()  # 0: white
    assert (top[3] == 128).all()  # masked: grey


@pytest.fixture()
def synthetic_sky(tmp_path):
    """2 indoor + 2 outdoor procedural test panoramas (32 x 64; outdoor ones have sky) and predictions equal
    to the truth where it is valid, 75 m elsewhere; their masks: the truth's with one pixel flipped."""
    from pager.data.synthetic.writer import write_dataset

    write_dataset(tmp_path / "data" / "Synthetic", num=4, height=32, seed=5, splits=(0, 0, 1), progress=False)
    ds = build_dataset("Synthetic", tmp_path / "data", "test")
    eval_dir = tmp_path / "results" / "m" / "Synthetic" / "eval"
    eval_dir.mkdir(parents=True)
    truth = {}
    for i in range(len(ds)):
        s = ds[i]
        gt, valid = s["depth"][0].numpy(), s["mask"][0].numpy()
        pred_valid = valid.copy()
        pred_valid[20, 7] = not pred_valid[20, 7]
        np.savez(eval_dir / f"{s['id']}.npz", arr_0=np.where(valid, gt, 75.0).astype(np.float32), mask=pred_valid)
        truth[s["id"]] = (gt, valid, pred_valid)
    return tmp_path, truth, eval_dir


def test_depth_runner_invalid_mask_iou(synthetic_sky):
    tmp, truth, eval_dir = synthetic_sky
    res = R.evaluate_depth(tmp / "results" / "m", tmp / "data", "Synthetic", "log_shift", invalid_mask_iou=True,
                           device="cpu")
    assert res.n_evaluated == 4 and res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    rows = {r["id"]: r for r in res.per_sample}
    ious = []
    for sid, (_, valid, pred_valid) in truth.items():
        p, g = ~pred_valid, ~valid
        union = (p | g).sum()
        iou = (p & g).sum() / union if union else float("nan")
        assert rows[sid]["invalid_iou"] == pytest.approx(iou, nan_ok=True)
        ious.append(iou)
    assert any(0 < v < 1 for v in ious)  # the outdoor scenes have sky
    assert res.metrics["invalid_iou"] == pytest.approx(np.nanmean(ious))
    # files without a mask are reported, not scored as all-valid
    sid = next(iter(truth))
    np.savez(eval_dir / f"{sid}.npz", truth[sid][0])
    res = R.evaluate_depth(tmp / "results" / "m", tmp / "data", "Synthetic", "log_shift", invalid_mask_iou=True,
                           device="cpu", write=False)
    assert res.problems["unreadable"] == [sid]
    assert R.depth_main(["--pred_path", str(tmp / "results" / "m"), "--data_path", str(tmp / "data"),
                         "--dataset", "Synthetic", "--alignment_type", "log_shift", "--invalid_mask_iou",
                         "--device", "cpu", "--overwrite"]) == 0
    data = json.loads((eval_dir.parent / "evaluation_metrics_log_shift.json").read_text())
    assert data["counts"]["unreadable"] == 1 and "invalid_iou" in data["metrics"]
    # a model that marks nothing invalid: precision undefined on every image, the run still succeeds
    for sid, (gt, valid, _) in truth.items():
        np.savez(eval_dir / f"{sid}.npz", arr_0=np.where(valid, gt, 75.0).astype(np.float32), mask=np.ones_like(valid))
    res = R.evaluate_depth(tmp / "results" / "m", tmp / "data", "Synthetic", "log_shift", invalid_mask_iou=True,
                           device="cpu", write=False)
    assert res.n_evaluated == 4 and not res.failure
    assert math.isnan(res.metrics["invalid_precision"]) and res.metrics["invalid_iou"] == 0.0


def test_seams_runner_with_ground_truth(synthetic_sky):
    from pager.evaluation import metrics as M

    tmp, truth, eval_dir = synthetic_sky
    res = R.evaluate_seams(tmp / "results" / "m", tmp / "data", "Synthetic", with_ground_truth=True, device="cpu")
    assert res.n_evaluated == 4
    # the prediction equals the truth over the truth's valid pixels: identical figures
    for k in M.SEAM_METRICS:
        assert res.metrics[k] == pytest.approx(res.metrics[f"gt_{k}"], nan_ok=True)
    # without --with_ground_truth: the reference statistic over every pixel (no gt_ keys)
    plain = R.evaluate_seams(tmp / "results" / "m", device="cpu", write=False)
    assert not any(k.startswith("gt_") for k in plain.metrics)
    with pytest.raises(ValueError, match="with_ground_truth"):
        R.evaluate_seams(tmp / "results" / "m", with_ground_truth=True, device="cpu")
    assert R.seams_main(["--pred_path", str(tmp / "results" / "m"), "--data_path", str(tmp / "data"),
                         "--dataset", "Synthetic", "--with_ground_truth", "--device", "cpu", "--overwrite"]) == 0
