"""generate_point_cloud.py / ``pager pointcloud``: saved predictions -> GLB/PLY files."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from pager.cli import pointcloud as pc_cli
from pager.export import erp_point_cloud

REPO = Path(__file__).resolve().parents[1]
H, W = 16, 32


def _rays(h, w):
    theta = 2 * np.pi * (np.arange(w) + 0.5) / w - np.pi
    phi = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    th, ph = np.meshgrid(theta, phi)
    return np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)], -1)


def _box_depth(h, w):
    r = _rays(h, w)
    with np.errstate(divide="ignore"):
        t = np.where(r > 0, np.array([2.0, 1.2, 3.0]) / r, np.array([2.5, 1.5, 2.0]) / -r)
    return t.min(-1).astype(np.float32)


def _coded_rgb(h, w):
    """Pixel (i, j) has colour (8 i, 4 j, 77): lets a test find the pixel of every point."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 8 * np.arange(h)[:, None]
    rgb[..., 1] = 4 * np.arange(w)[None, :]
    rgb[..., 2] = 77
    return rgb


def _load_cloud(path):
    loaded = trimesh.load(path)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return np.asarray(loaded.vertices), np.asarray(loaded.colors)[:, :3]


def _check_points_match_pixels(vertices, colors, depth):
    i = colors[:, 0].astype(int) // 8
    j = colors[:, 1].astype(int) // 4
    expected = depth[i, j, None] * _rays(H, W)[i, j]
    np.testing.assert_allclose(vertices, expected, atol=1e-4)


def _write_synthetic_dataset(root: Path, ids):
    """A tiny plain-layout Synthetic dataset (test split) with coded RGB and box-room depth."""
    base = root / "Synthetic"
    (base).mkdir(parents=True)
    (base / "meta.json").write_text(json.dumps({"depth_scale": 0.001}))
    for scene, view in ids:
        d = base / "indoor" / "test" / scene
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_coded_rgb(H, W)).save(d / f"{view:04d}_rgb.png")
        Image.fromarray(np.rint(_box_depth(H, W) * 1000).astype(np.uint16)).save(d / f"{view:04d}_depth.png")
    return [f"indoor__{s}__{v:04d}" for s, v in ids]


def test_predictions_with_dataset_rgb_and_missing_report(tmp_path, capsys, caplog):
    ids = _write_synthetic_dataset(tmp_path / "data", [("sceneA", 0), ("sceneA", 1), ("sceneB", 0)])
    eval_dir = tmp_path / "results" / "ckpt" / "Synthetic" / "eval"
    eval_dir.mkdir(parents=True)
    depth = _box_depth(H, W)
    for sample_id in ids[:2]:  # the third prediction is missing
        np.savez(eval_dir / f"{sample_id}.npz", depth[None])  # arr_0 [1, H, W] like the reference
    rc = pc_cli.main([
        "--data_path", str(tmp_path / "data"), "--dataset", "Synthetic", "--color_modality", "rgb",
        "--depth_path", str(tmp_path / "results" / "ckpt"), "--keep_flying_pixels",
    ])
    assert rc == 1
    assert ids[2] in capsys.readouterr().err  # reported by name
    out_dir = tmp_path / "results" / "ckpt" / "Synthetic" / "rgb_point_clouds"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{i}.glb" for i in ids[:2])
    v, c = _load_cloud(out_dir / f"{ids[0]}.glb")
    assert len(v) == H * W
    assert (c[:, 2] == 77).all()
    _check_points_match_pixels(v, c, depth)


def test_predictions_normals_colours_ply_and_subsampling(tmp_path):
    eval_dir = tmp_path / "depth" / "eval"
    n_dir = tmp_path / "normals" / "eval"
    eval_dir.mkdir(parents=True)
    n_dir.mkdir(parents=True)
    depth = _box_depth(H, W)
    normals = np.zeros((3, H, W), np.float32)
    normals[1] = 1.0
    np.savez(eval_dir / "s1.npz", depth, rgb=_coded_rgb(H, W))
    np.savez(n_dir / "s1.npz", normals)
    out = tmp_path / "clouds"
    rc = pc_cli.main([
        "--color_modality", "normals", "--depth_path", str(tmp_path / "depth"),
        "--normals_path", str(tmp_path / "normals"), "--format", "ply", "--out", str(out), "--max_points", "100",
    ])
    assert rc == 0
    v, c = _load_cloud(out / "s1.ply")
    assert len(v) == 100
    assert (c == np.array([128, 255, 128])).all()  # coloured by normals (+y)
    assert b"property float nx" in (out / "s1.ply").read_bytes()[:500]
    # same result as the library call with the same arguments (seeded subsampling)
    ref = erp_point_cloud(depth, None, normals=normals, max_points=100)
    np.testing.assert_allclose(v, ref.points, atol=1e-6)


def test_predictions_rgb_from_npz_key_and_side_file(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    depth = _box_depth(H, W)
    np.savez(eval_dir / "a.npz", depth, rgb=_coded_rgb(H, W))
    np.savez(eval_dir / "b.npz", depth)
    Image.fromarray(_coded_rgb(H, W)).save(eval_dir / "b.png")
    np.savez(eval_dir / "c.npz", depth)  # no RGB at all
    rc = pc_cli.main(["--depth_path", str(tmp_path), "--out", str(tmp_path / "o"), "--keep_flying_pixels"])
    assert rc == 1  # c has no colours: reported, the others written
    for name in ("a", "b"):
        v, c = _load_cloud(tmp_path / "o" / f"{name}.glb")
        _check_points_match_pixels(v, c, depth)
    assert not (tmp_path / "o" / "c.glb").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert pc_cli.main(["--depth_path", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "eval").mkdir()
    # bad samples are listed one line each (naming the file and the problem), the others converted, exit code 1
    np.savez(tmp_path / "eval" / "x.npz", np.ones((2, 3, 4, 5)))
    (tmp_path / "eval" / "y.npz").write_bytes(b"PK\x03\x04 truncated zip")  # corrupt npz
    np.savez(tmp_path / "eval" / "t.npz", _box_depth(H, W).T.copy(), rgb=_coded_rgb(H, W))  # transposed depth
    np.savez(tmp_path / "eval" / "ok.npz", _box_depth(H, W), rgb=_coded_rgb(H, W))
    assert pc_cli.main(["--depth_path", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = {name: [ln for ln in err.splitlines() if f"{name}.npz" in ln] for name in ("x", "y", "t")}
    assert all(len(v) == 1 for v in lines.values()), err
    assert "must be [H, W]" in lines["x"][0] and "cannot read" in lines["y"][0]
    assert "transposed" in lines["t"][0]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ok.glb"]
    assert pc_cli.main(["--color_modality", "normals", "--depth_path", str(tmp_path)]) == 2
    assert "--normals_path" in capsys.readouterr().err
    assert pc_cli.main([]) == 2


def test_pager_dispatcher_and_script_run(tmp_path):
    (tmp_path / "eval").mkdir()
    np.savez(tmp_path / "eval" / "s.npz", _box_depth(H, W), rgb=_coded_rgb(H, W))
    from pager.cli.main import main as pager_main

    assert pager_main(["pointcloud", "--depth_path", str(tmp_path), "--out", str(tmp_path / "o1")]) == 0
    assert (tmp_path / "o1" / "s.glb").is_file()
    proc = subprocess.run(
        [sys.executable, str(REPO / "generate_point_cloud.py"), "--depth_path", str(tmp_path), "--out", str(tmp_path / "o2"),
         "--format", "ply"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o2" / "s.ply").is_file()


def test_single_panorama_with_tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("pager.pipeline")
    from pager.model.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    depth_ckpt = build_tiny_checkpoint(root / "depth", "depth")
    normals_ckpt = build_tiny_checkpoint(root / "normals", "normals", base_dir=root / "depth_base")
    h, w = 32, 64
    Image.fromarray(_coded_rgb(h, w)).save(root / "pano.png")
    out = root / "scene.ply"
    rc = pc_cli.main([str(root / "pano.png"), "--checkpoint_path", str(depth_ckpt), "--normals_checkpoint_path",
                      str(normals_ckpt), "--out", str(out), "--max_points", "300", "--device", "cpu"])
    assert rc == 0
    v, c = _load_cloud(out)
    assert 0 < len(v) <= 300
    assert b"property float nx" in out.read_bytes()[:500]  # normals from the normals model are attached
    # every point's direction falls in the pixel whose colour it carries (RGB colouring, our frame)
    r = np.linalg.norm(v, axis=1)
    theta = np.arctan2(v[:, 2], v[:, 0])
    phi = np.arcsin(np.clip(v[:, 1] / r, -1, 1))
    j = np.clip(np.floor((theta + np.pi) / (2 * np.pi) * w), 0, w - 1).astype(int)
    i = np.clip(np.floor((np.pi / 2 - phi) / np.pi * h), 0, h - 1).astype(int)
    np.testing.assert_array_equal(c, _coded_rgb(h, w)[i, j])


def _three_predictions(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    depth = _box_depth(H, W)
    for name in ("a", "b", "c"):
        np.savez(eval_dir / f"{name}.npz", depth, rgb=_coded_rgb(H, W))
    return ["--depth_path", str(tmp_path), "--out", str(tmp_path / "o"), "--keep_flying_pixels"]


def test_skip_existing_converts_only_the_missing_files(tmp_path, capsys):
    argv = _three_predictions(tmp_path)
    assert pc_cli.main(argv) == 0
    a_bytes = (tmp_path / "o" / "a.glb").read_bytes()
    (tmp_path / "o" / "b.glb").unlink()
    (tmp_path / "o" / "c.glb").write_bytes(b"kept")  # an existing file is neither read nor replaced
    capsys.readouterr()
    assert pc_cli.main(argv) == 2  # without an option, existing files are refused by name
    assert "a.glb" in capsys.readouterr().err
    assert pc_cli.main(argv + ["--skip_existing"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 point cloud(s) to" in out and "(2 existed already)" in out
    assert (tmp_path / "o" / "b.glb").read_bytes() == a_bytes  # same input, same file
    assert (tmp_path / "o" / "c.glb").read_bytes() == b"kept"
    assert pc_cli.main(argv + ["--skip_existing", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_interrupt_says_how_far_and_how_to_continue(tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first file: one line with the count written and the option that continues; exit 130."""
    from pager.export import pointcloud as pc_export

    argv = _three_predictions(tmp_path)
    real, calls = pc_export.save_point_cloud, []

    def save_then_interrupt(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(pc_export, "save_point_cloud", save_then_interrupt)
    assert pc_cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "1 of 3 point cloud(s) written" in err and "--skip_existing" in err and "Traceback" not in err
    monkeypatch.setattr(pc_export, "save_point_cloud", real)
    assert pc_cli.main(argv + ["--skip_existing"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.glb", "b.glb", "c.glb"]


def test_single_panorama_skip_existing_does_not_load_the_model(tmp_path, capsys, monkeypatch):
    Image.fromarray(_coded_rgb(H, W)).save(tmp_path / "pano.png")
    (tmp_path / "pano.glb").write_bytes(b"kept")
    import pager.pipeline

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pager.pipeline.PagerPipeline, "from_pretrained", no_model)
    assert pc_cli.main([str(tmp_path / "pano.png"), "--out", str(tmp_path / "pano.glb"), "--skip_existing"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "pano.glb").read_bytes() == b"kept"
