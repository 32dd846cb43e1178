"""`pager predict` and `inference.py` / `pager infer`: files, layout, values, no overwrite, multi-process split."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pager.model import Pager, build_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
N_SAMPLES = 5



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        base = root / "base"
        depth = build_tiny_checkpoint(root / "PaGeR-tiny-depth", seed=0, base_dir=base, face_size=16, max_depth=20.0)
        normals = build_tiny_checkpoint(root / "PaGeR-tiny-normals", modality="normals", seed=1, base_dir=base,
                                        face_size=16, normals_frame="pager")
        rng = np.random.default_rng(0)
        data = root / "data"
        for k in range(N_SAMPLES):  # the plain layout of the Synthetic reader
            d = data / "Synthetic" / "indoor" / "test" / f"scene{k // 2}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((16, 32, 3)) * 255).astype(np.uint8)).save(d / f"{k % 2:04d}_rgb.png")
            Image.fromarray((rng.random((16, 32)) * 5000 + 500).astype(np.uint16)).save(d / f"{k % 2:04d}_depth.png")
        imgs = root / "imgs"
        imgs.mkdir()
        for name in ("one.png", "two.jpg"):
            Image.fromarray((rng.random((16, 32, 3)) * 255).astype(np.uint8)).save(imgs / name)
        yield {"root": root, "depth": depth, "normals": normals, "data": data, "imgs": imgs}


def pager_main(argv):
    from pager.cli.main import main

    return main(argv)


def test_predict_writes_every_file(world, tmp_path):
    out = tmp_path / "out"
    argv = ["predict", str(world["imgs"]), "--out", str(out), "--checkpoint_path", str(world["depth"]),
            str(world["normals"]), "--no_progress"]
    assert pager_main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}{suffix}" for s in ("one", "two")
                           for suffix in (".npz", "_depth.png", "_depth16.png", "_normals.png"))
    z = np.load(out / "one.npz")
    ref = Pager.from_pretrained({"depth": str(world["depth"]), "normals": str(world["normals"])}, device="cpu")
    rgb = torch.from_numpy(np.asarray(Image.open(world["imgs"] / "one.png"), dtype=np.float32) / 255.0)
    pred = ref.predict(rgb.permute(2, 0, 1)[None] * 2 - 1, face_size=16)
    assert np.allclose(z["depth"], pred["depth"][0].numpy(), atol=1e-5)
    assert np.allclose(z["normals"], pred["normals"][0].permute(1, 2, 0).numpy(), atol=1e-5)
    assert z["max_depth"] == pytest.approx(20.0) and not bool(z["metric_depth"])
    png16 = np.asarray(Image.open(out / "one_depth16.png")).astype(np.float64)
    valid = z["depth_mask"]
    assert np.allclose(png16[valid], np.round(z["depth"][valid] * 1000.0), atol=1.0)
    assert np.asarray(Image.open(out / "one_normals.png")).shape == (16, 32, 3)
    # nothing is silently overwritten
    before = (out / "one.npz").read_bytes()
    assert pager_main(argv) == 2
    assert (out / "one.npz").read_bytes() == before
    assert pager_main(argv + ["--overwrite"]) == 0
    assert pager_main(["predict", str(world["imgs"] / "nope.png"), "--out", str(out)]) == 2


def infer_args(world, results, *extra):
    return ["--checkpoint_path", str(world["depth"]), "--data_path", str(world["data"]), "--dataset", "Synthetic",
            "--results_path", str(results), "--no_progress", *extra]


def test_inference_layout_and_values(world, tmp_path, caplog):
    from pager.cli.infer import main

    results = tmp_path / "results"
    rc = main(infer_args(world, results, "--generate_eval", "--img_report_frequency", "2", "--log_scale", "false"))
    assert rc == 0
    assert "log_scale=False ignored" in caplog.text  # checkpoint YAML wins, with a warning
    root = results / "PaGeR-tiny-depth" / "Synthetic"
    evals = sorted(p.stem for p in (root / "eval").glob("*.npz"))
    from pager.data import build_dataset

    ds = build_dataset("Synthetic", str(world["data"]), split="test")
    ids = [r.id for r in ds.records]
    assert evals == sorted(ids)
    assert sorted(p.stem for p in (root / "example_images").glob("*.jpg")) == sorted(ids[0::2])
    mosaic = np.asarray(Image.open(root / "example_images" / f"{ids[0]}.jpg"))
    assert mosaic.shape == (16, 64, 3)  # RGB | prediction
    # arr_0 is the ERP depth in metres, decoded with the checkpoint's range (max 20 m), not the dataset's
    model = Pager.from_pretrained(str(world["depth"]), device="cpu")
    pred = model.predict(ds[1]["rgb"][None], face_size=16)
    z = np.load(root / "eval" / f"{ids[1]}.npz")
    assert np.allclose(z["arr_0"], pred["depth"][0].numpy(), atol=1e-5)
    assert z["arr_0"].max() <= 20.0 + 1e-4 and z["arr_0"].shape == (16, 32)
    # pred-only images; existing files are not overwritten without --overwrite
    assert main(infer_args(world, results, "--pred_only", "--img_report_frequency", "1")) == 2
    assert main(infer_args(world, results, "--pred_only", "--img_report_frequency", "1", "--overwrite")) == 0
    assert np.asarray(Image.open(root / "example_images" / f"{ids[0]}.jpg")).shape == (16, 32, 3)


def test_split_indices_cover_each_sample_once():
    from pager.cli.infer import split_indices

    for n in (0, 1, 5, 8):
        for world in (1, 2, 3):
            parts = [split_indices(n, r, world) for r in range(world)]
            flat = sorted(i for p in parts for i in p)
            assert flat == list(range(n))


def test_two_processes_write_each_sample_exactly_once(world, tmp_path):
    pytest.importorskip("accelerate")
    results = tmp_path / "results"
    env = dict(os.environ, PAGER_CACHE_DIR=str(world["root"] / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # the documented command; inference.py turns accelerate's single --cpu process into 2 (pager.cli.launch)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 1000),
           str(REPO / "inference.py"), *infer_args(world, results, "--generate_eval", "--img_report_frequency", "1")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    counts = {int(r): int(k) for r, k in re.findall(r"process (\d) of 2: (\d+) sample", log)}
    assert counts == {0: 3, 1: 2}, log[-3000:]
    root = results / "PaGeR-tiny-depth" / "Synthetic"
    assert len(list((root / "eval").glob("*.npz"))) == N_SAMPLES
    assert len(list((root / "example_images").glob("*.jpg"))) == N_SAMPLES


@pytest.mark.parametrize("stitching", ["exact", "reference"])
def test_stitching_option_of_every_command(world, tmp_path, stitching):
    """``--stitching`` of pager predict, inference.py and the demo reaches Pager.predict and is recorded."""
    import json

    from pager.app.core import DemoPredictor
    from pager.cli.infer import main as infer_main
    from pager.data import build_dataset
    from pager.pipeline import PagerPipeline

    model = Pager.from_pretrained(str(world["depth"]), device="cpu")
    rgb = torch.from_numpy(np.asarray(Image.open(world["imgs"] / "one.png"), dtype=np.float32) / 255.0)
    rgb = rgb.permute(2, 0, 1)[None] * 2 - 1
    want = model.predict(rgb, face_size=16, stitching=stitching)["depth"][0].numpy()
    other = model.predict(rgb, face_size=16, stitching="exact" if stitching == "reference" else "reference")
    assert np.abs(want - other["depth"][0].numpy()).max() > 1e-3  # the option matters at this size

    out = tmp_path / "predict"
    assert pager_main(["predict", str(world["imgs"] / "one.png"), "--out", str(out), "--checkpoint_path",
                       str(world["depth"]), "--no_progress", "--stitching", stitching]) == 0
    z = np.load(out / "one.npz")
    assert str(z["stitching"]) == stitching
    assert np.allclose(z["depth"], want, atol=1e-5)

    results = tmp_path / "results"
    assert infer_main(infer_args(world, results, "--generate_eval", "--img_report_frequency", "0",
                                 "--stitching", stitching)) == 0
    ds = build_dataset("Synthetic", str(world["data"]), split="test")
    z = np.load(results / "PaGeR-tiny-depth" / "Synthetic" / "eval" / f"{ds.records[1].id}.npz")
    assert str(z["stitching"]) == stitching
    assert np.allclose(z["arr_0"], model.predict(ds[1]["rgb"][None], face_size=16, stitching=stitching)["depth"][0].numpy(),
                       atol=1e-5)

    demo = DemoPredictor(PagerPipeline(model), output_root=tmp_path / "app", face_size=16, stitching=stitching)
    res = demo.run(world["imgs"] / "one.png", modalities=("depth",), point_cloud=False)
    assert res.metadata["stitching"] == stitching
    saved = np.load(next(f for f in res.files if f.name.endswith(".npz")))
    assert json.loads(str(saved["metadata"]))["stitching"] == stitching
    assert np.allclose(saved["depth"], want, atol=1e-5)


def test_reference_stitching_needs_a_width_multiple_of_4(world, tmp_path):
    """Checked before any model is loaded (pager predict) and named with the image."""
    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((15, 30, 3), np.uint8)).save(odd)
    argv = ["predict", str(odd), "--out", str(tmp_path / "o"), "--checkpoint_path", "/nonexistent/checkpoint",
            "--stitching", "reference"]
    assert pager_main(argv) == 2  # the width, not the missing checkpoint, is reported
    from pager.pipeline import PagerPipeline

    pipe = PagerPipeline(Pager.from_pretrained(str(world["depth"]), device="cpu"))
    with pytest.raises(ValueError, match="odd.png.*multiple of 4"):
        pipe(str(odd), face_size=16, stitching="reference", show_progress=False)
    with pytest.raises(ValueError, match="stitching must be one of"):
        pipe(str(odd), face_size=16, stitching="original", show_progress=False)


@pytest.mark.parametrize("command", ["predict", "infer"])
def test_seam_blend_option_reaches_the_model_and_the_files(world, tmp_path, monkeypatch, command):
    """``--seam_blend`` of ``pager predict`` and ``inference.py``: the model runs its blended two-pass prediction
    (off by default) and the files hold that prediction."""
    calls = []
    real = Pager.predict

    def spy(self, *args, **kwargs):
        calls.append(bool(kwargs.get("seam_blend", False)))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Pager, "predict", spy)
    arrays = {}
    for flag in (False, True):
        out = tmp_path / f"out_{flag}"
        extra = ["--seam_blend"] if flag else []
        if command == "predict":
            argv = ["predict", str(world["imgs"] / "one.png"), "--out", str(out), "--checkpoint_path",
                    str(world["depth"]), "--no_progress", *extra]
            assert pager_main(argv) == 0
            saved = np.load(out / "one.npz")
            arrays[flag] = saved["depth"]
        else:
            from pager.cli.infer import main

            assert main(infer_args(world, out, "--generate_eval", "--max_samples", "1", *extra)) == 0
            (npz,) = (out / "PaGeR-tiny-depth" / "Synthetic" / "eval").glob("*.npz")
            saved = np.load(npz)
            arrays[flag] = saved["arr_0"]
        assert bool(saved["seam_blend"]) is flag  # the files say how they were made
        assert str(saved["stitching"]) == "exact"
    assert calls == [False, True]
    rgb = torch.from_numpy(np.asarray(Image.open(world["imgs"] / "one.png"), dtype=np.float32) / 255.0)
    if command == "predict":
        model = Pager.from_pretrained(str(world["depth"]), device="cpu")
        blended = real(model, rgb.permute(2, 0, 1)[None] * 2 - 1, face_size=16, seam_blend=True)["depth"][0].numpy()
        np.testing.assert_allclose(arrays[True], blended, rtol=1e-5, atol=1e-5)
    assert not np.allclose(arrays[True], arrays[False])


def test_inference_interrupted_then_skip_existing(world, tmp_path, monkeypatch, capsys):
    """Ctrl-C while writing the second sample: one line with the progress and exit 130; a plain rerun refuses;
    ``--skip_existing`` predicts only the samples without all their files."""
    import pager.export as export
    from pager.cli.infer import main

    results = tmp_path / "results"
    args = infer_args(world, results, "--generate_eval", "--img_report_frequency", "0", "--batch_size", "1")
    real, calls = export.save_npz, []

    def interrupted_on_second(path, **arrays):
        calls.append(Path(path).stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, **arrays)

    monkeypatch.setattr(export, "save_npz", interrupted_on_second)
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"interrupted: 1 of {N_SAMPLES} sample(s) predicted into {results}; rerun with "
                            "--skip_existing to continue"), err
    monkeypatch.setattr(export, "save_npz", real)
    assert main(args) == 2 and "already exist" in capsys.readouterr().err
    written = []
    monkeypatch.setattr(export, "save_npz", lambda path, **a: written.append(Path(path).stem) or real(path, **a))
    assert main(args + ["--skip_existing"]) == 0
    assert calls[0] not in written and len(written) == N_SAMPLES - 1
    assert len(list((results / "PaGeR-tiny-depth" / "Synthetic" / "eval").glob("*.npz"))) == N_SAMPLES
