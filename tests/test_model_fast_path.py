"""The inference fast path (issue 17): channels_last layout and the GPU check script's CPU smoke mode."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pager.model import Pager, build_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        base = root / "base"
        yield {
            "depth": build_tiny_checkpoint(root / "depth", seed=0, base_dir=base),
            "normals": build_tiny_checkpoint(root / "normals", modality="normals", positional_encoding="uv", seed=1,
                                             base_dir=base),
        }


def test_channels_last_predicts_the_same(checkpoints):
    """Both float32 layouts lie within float32 rounding of the float64 prediction, so they differ by at most
    about twice that error (factor 4 for rounding that differs between kernels)."""
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    src = {k: str(v) for k, v in checkpoints.items()}
    plain = Pager.from_pretrained(src, device="cpu")
    ref = plain.predict(x, face_size=16)
    ref64 = Pager.from_pretrained(src, device="cpu").to(torch.float64).predict(x.double(), face_size=16)
    fast = Pager.from_pretrained(src, device="cpu").optimize(channels_last=True)
    assert fast.memory_format == torch.channels_last
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.vae.parameters() if p.dim() == 4)
    out = fast.predict(x, face_size=16)
    for key in ("depth_values", "normals"):
        own = (ref[key].double() - ref64[key]).abs().max().item()
        diff = (out[key] - ref[key]).abs().max().item()
        assert diff <= 4 * max(own, torch.finfo(torch.float32).eps), (key, diff, own)


def test_gpu_check_cpu_smoke_runs_every_step(tmp_path, script_runner):
    """benchmarks/gpu_check.py --cpu-smoke: the GPU machine's script runs end to end on the CPU with a tiny model
    (golden check on the device, inference per dtype, attention backends, a training step, the video loop) and prints
    its table. It runs as ``python benchmarks/gpu_check.py ...`` in a process of its own (forked from the suite's
    script server, which saves the seconds of importing torch / diffusers again)."""
    out_json = tmp_path / "rows.json"
    args = ["--cpu-smoke", "--repeats", "1", "--train_steps", "1", "--json", str(out_json)]
    proc = script_runner.run(REPO / "benchmarks" / "gpu_check.py", args, cwd=REPO, timeout=900,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out_json.read_text())["rows"]
    steps = {(r["step"], r["config"]) for r in rows}
    assert ("fidelity", "golden set on cpu") in steps
    fid = next(r for r in rows if r["step"] == "fidelity")
    assert fid["note"].startswith("2 cases (") and ": PASS;" in fid["note"], fid
    for dtype in ("fp32", "bf16"):
        r = next(r for r in rows if r["step"] == "infer" and r["config"] == f"face 32 {dtype}")
        assert r["seconds"] > 0 and r["peak_mb"] is not None
    assert any(r["step"] == "attention" and r["seconds"] for r in rows)
    train = next(r for r in rows if r["step"] == "train")
    assert train["seconds"] > 0 and "steps/s" in train["note"]
    video = next(r for r in rows if r["step"] == "video")
    assert video["seconds"] > 0 and "frames/s" in video["note"], video
    assert "PaGeR gpu_check summary" in proc.stdout


@pytest.mark.parametrize("command,flag", [
    ("predict", ["--tiled_vae"]), ("predict", ["--tiled_decoding"]),  # the earlier name turns on both as well
    ("video", ["--tiled_vae"]), ("infer", ["--tiled_vae", "true"]), ("infer", ["--tiled_decoding", "true"]),
    ("app", ["--tiled_vae"]),
])
def test_tiled_vae_option_reaches_the_model(command, flag, checkpoints, tmp_path, monkeypatch):
    """Every command's low-memory option turns on the tiled encoder and decoder of the model it loads: its
    predictions go through both (counted by wrapping them); the app's loader sets both."""
    import argparse

    import numpy as np
    from PIL import Image

    import pager.model.tiled_decoding as td

    ckpt = str(checkpoints["depth"])
    if command == "app":
        from pager.app import cli as app_cli

        args = app_cli.add_arguments(argparse.ArgumentParser()).parse_args(["--checkpoint_path", ckpt, *flag])
        args.device = "cpu"
        model = app_cli.load_pipeline(args).model
        assert model.tiled_encoding is not None and model.tiled_decoding is not None
        return
    calls = {"encode": 0, "decode": 0}

    def counted(name, real):
        def run(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return run

    monkeypatch.setattr(td, "tiled_encode", counted("encode", td.tiled_encode))
    monkeypatch.setattr(td, "tiled_decode", counted("decode", td.tiled_decode))
    rgb = (np.random.default_rng(0).random((32, 64, 3)) * 255).astype(np.uint8)
    frames = 1
    if command == "predict":
        Image.fromarray(rgb).save(tmp_path / "pano.png")
        argv = ["predict", str(tmp_path / "pano.png"), "--out", str(tmp_path / "out")]
    elif command == "video":
        (tmp_path / "frames").mkdir()
        for k in range(2):
            Image.fromarray(rgb).save(tmp_path / "frames" / f"{k:03d}.png")
        argv, frames = ["video", str(tmp_path / "frames"), "--out", str(tmp_path / "out"), "--no_video"], 2
    else:
        from fixtures_data import make_plain

        make_plain(tmp_path / "data", layout={("indoor", "test"): [("room_000", 1)]})
        argv = ["infer", "--data_path", str(tmp_path / "data"), "--dataset", "Synthetic", "--split", "test",
                "--results_path", str(tmp_path / "results")]
    from pager.cli.main import main

    assert main([*argv, "--checkpoint_path", ckpt, *flag, "--device", "cpu"]) == 0
    assert calls == {"encode": frames, "decode": frames}
