"""``--skip_bad_samples`` in inference, evaluation and training (the sample itself is skipped and counted,
never replaced by another one); inference on RGB alone (no ground truth) and on a folder of images; the
embedded model's names (``default``, ``default/depth``, ``default/normals``) wherever a checkpoint is taken."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pager.model import Pager, build_tiny_checkpoint

N = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("skip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        ckpt = build_tiny_checkpoint(root / "ck", seed=0, base_dir=root / "base", face_size=16, max_depth=20.0)
        yield {"root": root, "ckpt": ckpt}


def _dataset(root, bad: str = "", no_depth: bool = False):
    """A Synthetic-layout test split of N panoramas; ``bad``: 'rgb' or 'depth' corrupts sample 1's file."""
    rng = np.random.default_rng(0)
    data = root / "data"
    d = data / "Synthetic" / "indoor" / "test" / "scene0"
    d.mkdir(parents=True)
    for k in range(N):
        Image.fromarray((rng.random((16, 32, 3)) * 255).astype(np.uint8)).save(d / f"{k:04d}_rgb.png")
        if not no_depth:
            Image.fromarray((rng.random((16, 32)) * 5000 + 500).astype(np.uint16)).save(d / f"{k:04d}_depth.png")
    if bad:
        (d / f"0001_{bad}.png").write_bytes(b"not a png")
    return data, d


def _infer(world, data, results, *extra):
    from pager.cli.infer import main

    return main(["--checkpoint_path", str(world["ckpt"]), "--data_path", str(data), "--dataset", "Synthetic",
                 "--results_path", str(results), "--generate_eval", "--no_progress", *extra])


def _expected(world, rgb_file):
    model = Pager.from_pretrained(str(world["ckpt"]), device="cpu")
    rgb = torch.from_numpy(np.asarray(Image.open(rgb_file), dtype=np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    with torch.inference_mode():
        return model.predict(rgb, face_size=16, output_size=rgb.shape[-2:])["depth"][0].numpy()


def test_inference_skips_and_counts_bad_samples(world, tmp_path, capsys):
    data, scene = _dataset(tmp_path, bad="rgb")
    assert _infer(world, data, tmp_path / "r1") == 2
    err = capsys.readouterr().err
    assert "0001_rgb.png" in err and "Traceback" not in err
    assert _infer(world, data, tmp_path / "r2", "--skip_bad_samples") == 0
    assert "1 bad sample(s) skipped" in capsys.readouterr().out
    eval_dir = tmp_path / "r2" / "ck" / "Synthetic" / "eval"
    assert sorted(p.stem for p in eval_dir.glob("*.npz")) == [f"indoor__scene0__{k:04d}" for k in (0, 2, 3)]
    for k in (0, 2, 3):  # each file holds its own sample's prediction (no substitute sample)
        got = np.load(eval_dir / f"indoor__scene0__{k:04d}.npz")["arr_0"]
        assert np.allclose(got, _expected(world, scene / f"{k:04d}_rgb.png"), atol=1e-5)


def test_inference_needs_rgb_only(world, tmp_path):
    data, scene = _dataset(tmp_path, no_depth=True)
    assert _infer(world, data, tmp_path / "r") == 0
    eval_dir = tmp_path / "r" / "ck" / "Synthetic" / "eval"
    assert len(list(eval_dir.glob("*.npz"))) == N
    got = np.load(eval_dir / "indoor__scene0__0002.npz")["arr_0"]
    assert np.allclose(got, _expected(world, scene / "0002_rgb.png"), atol=1e-5)


def test_inference_on_a_folder_of_images(world, tmp_path):
    from pager.cli.infer import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((16, 32, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray((rng.random((32, 64, 3)) * 255).astype(np.uint8)).save(folder / "b.png")  # another size
    assert main(["--checkpoint_path", str(world["ckpt"]), "--dataset", "Images", "--data_path", str(folder),
                 "--results_path", str(tmp_path / "r"), "--generate_eval", "--batch_size", "2", "--no_progress"]) == 0
    eval_dir = tmp_path / "r" / "ck" / "Images" / "eval"
    assert np.load(eval_dir / "b.npz")["arr_0"].shape == (32, 64)
    assert np.allclose(np.load(eval_dir / "a.npz")["arr_0"], _expected(world, folder / "a.png"), atol=1e-5)


def test_evaluation_skips_and_counts_bad_ground_truth(world, tmp_path, capsys):
    from pager.evaluation.runners import depth_main

    data, scene = _dataset(tmp_path)
    assert _infer(world, data, tmp_path / "r") == 0
    (scene / "0001_depth.png").write_bytes(b"broken")
    args = ["--pred_path", str(tmp_path / "r" / "ck"), "--data_path", str(data), "--dataset", "Synthetic",
            "--alignment_type", "scale_and_shift"]
    assert depth_main(args) == 2
    assert "0001_depth.png" in capsys.readouterr().err
    assert depth_main(args + ["--skip_bad_samples"]) == 0
    import json

    report = json.loads(next((tmp_path / "r" / "ck" / "Synthetic").glob("evaluation_metrics_*.json")).read_text())
    text = json.dumps(report)
    assert "indoor__scene0__0001" in text and "bad_sample" in text
    assert report.get("n_evaluated", N - 1) == N - 1


def test_embedded_model_names_resolve():
    from pager.model.loading import DEFAULT_WEIGHTS_DIR, load_checkpoint_config_only, resolve_folder

    assert resolve_folder("default") == DEFAULT_WEIGHTS_DIR
    for name, modality in (("default/depth", "depth"), ("default/normals", "normals"), ("default/normal", "normals")):
        assert resolve_folder(name) == DEFAULT_WEIGHTS_DIR / modality
        assert load_checkpoint_config_only(name).modality == modality


@pytest.mark.parametrize("source", ["default", "default/depth"])
def test_train_accepts_the_default_model_and_skips_bad_samples(tmp_path, source):
    """Fine-tuning the embedded model offline (its own base, no download), with a listing-time bad sample."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from pager.config import load_config, merge_overrides
    from pager.data.synthetic.writer import write_dataset
    from pager.training.trainer import train

    data = tmp_path / "data"
    write_dataset(data / "Synthetic", num=6, height=32, seed=3, progress=False)
    depth_files = sorted((data / "Synthetic").rglob("train/*/*_depth.png"))
    depth_files[0].unlink()
    cfg = merge_overrides(load_config(None), {
        "model.checkpoint_path": source, "model.face_size": 32, "data.data_path": str(data), "data.dataset": "Synthetic",
        "data.skip_bad_samples": True, "training.num_workers": 0, "training.max_train_steps": 1,
        "training.gradient_checkpointing": False, "validation.run_validation": False,
        "validation.run_tiny_validation": False, "logging.report_to": "none", "logging.save_path": str(tmp_path / "runs"),
        "logging.run_name": "ft", "model.enable_xformers": True})
    try:
        result = train(cfg, overrides={"model.face_size": 32})
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
    assert result.global_step == 1 and result.skipped == 1
    from omegaconf import OmegaConf

    saved = OmegaConf.load(result.checkpoint_dir / "config.yaml")  # the attention that actually ran (no xformers here)
    assert saved.model.attention_backend == "sdpa" and saved.model.enable_xformers is False
    model = Pager.from_pretrained(str(result.checkpoint_dir), device="cpu")
    assert model.modalities == ("depth",)


def test_tables_built_during_inference_serve_training():
    """Cached index tables / grids first built under ``inference_mode`` must not break a later backward pass."""
    from pager.geometry import cubemap_to_erp, erp_to_cubemap
    from pager.geometry.cube_padding import cube_pad

    def step(x):
        faces = erp_to_cubemap(x, face_size=7)
        padded = cube_pad(faces.flatten(0, 1), 2)
        return cubemap_to_erp(padded[..., 2:-2, 2:-2].unflatten(0, (1, 6)), 14, 28).sum()

    x = torch.rand(1, 2, 14, 28)
    with torch.inference_mode():
        step(x)
    y = x.clone().requires_grad_(True)
    step(y).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("metric", [False, True], ids=["relative", "metric"])
def test_depth_files_record_their_unit(tmp_path, metric):
    """16-bit PNG, PLY header and point clouds from saved predictions say 'relative' for relative-depth models
    (every command that writes them: predict, pointcloud from an image and from saved predictions, video)."""
    from pager.cli.main import main

    ck = build_tiny_checkpoint(tmp_path / "ck", seed=0, base_dir=tmp_path / "base", face_size=16, metric_depth=metric)
    want = "metres" if metric else "relative"
    img = tmp_path / "pano.png"
    Image.fromarray((np.random.default_rng(0).random((16, 32, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["predict", str(img), "--out", str(tmp_path / "p"), "--checkpoint_path", str(ck), "--no_progress"]) == 0
    assert Image.open(tmp_path / "p" / "pano_depth16.png").info["pager:depth_unit"] == want
    assert main(["pointcloud", str(img), "--out", str(tmp_path / "c.ply"), "--checkpoint_path", str(ck),
                 "--keep_flying_pixels"]) == 0
    header = (tmp_path / "c.ply").read_bytes().split(b"end_header")[0].decode()
    assert f"comment depth_unit {want}" in header and ("metres" in header) == metric
    data, _ = _dataset(tmp_path)
    from pager.cli.infer import main as infer_main

    assert infer_main(["--checkpoint_path", str(ck), "--data_path", str(data), "--dataset", "Synthetic",
                       "--results_path", str(tmp_path / "r"), "--generate_eval", "--no_progress"]) == 0
    assert main(["pointcloud", "--depth_path", str(tmp_path / "r" / "ck"), "--dataset", "Synthetic",
                 "--data_path", str(data), "--format", "ply", "--out", str(tmp_path / "clouds")]) == 0
    ply = next((tmp_path / "clouds").glob("*.ply")).read_bytes().split(b"end_header")[0].decode()
    assert f"comment depth_unit {want}" in ply
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(2):
        Image.open(img).save(frames / f"{k:02d}.png")
    for filter_args in ([], ["--causal_filter"]):  # point clouds written at the end (two-sided) or per batch
        out = tmp_path / f"v{len(filter_args)}"
        assert main(["video", str(frames), "--out", str(out), "--checkpoint_path", str(ck), "--depth_png",
                     "--pointcloud_every", "1", "--pointcloud_format", "ply", "--no_video", "--no_progress",
                     *filter_args]) == 0
        assert Image.open(out / "depth16" / "000000.png").info["pager:depth_unit"] == want
        clouds = sorted((out / "pointclouds").glob("*.ply"))
        assert len(clouds) == 2
        for cloud in clouds:
            header = cloud.read_bytes().split(b"end_header")[0].decode()
            assert f"comment depth_unit {want}" in header and ("metres" in header) == metric
