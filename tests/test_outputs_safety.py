"""One rule for every command that writes: existing outputs are refused by name (``--overwrite`` replaces them),
checked before any model is loaded or any sample is read; two inputs of a run never share an output name;
outputs are checked (name length, writable folder, file type) before the work starts.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pager.io_utils import check_outputs, unique_stems
from tests.fixtures_data import make_structured3d

SENTINEL = b"precious: written by someone else"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from pager.data import build_dataset
    from pager.model import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAGER_CACHE_DIR", str(root / "cache"))
        depth = build_tiny_checkpoint(root / "tiny-depth", seed=0, base_dir=root / "base", face_size=16, max_depth=20.0)
    make_structured3d(root / "data", height=16, scenes={"test": [3250]}, rooms=2)
    ds = build_dataset("Structured3D", root / "data", split="test")
    ids = [r.id for r in ds.records]
    for task in ("depth", "normals"):  # saved predictions (what inference.py --generate_eval writes)
        eval_dir = root / "preds" / task / "Structured3D" / "eval"
        eval_dir.mkdir(parents=True)
        for k in range(len(ds)):
            s = ds[k]
            arr = (1.5 * s["depth"][0]).numpy() if task == "depth" else s["normals"].numpy()
            np.savez(eval_dir / f"{s['id']}.npz", arr_0=arr.astype(np.float32))
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 32, 3)) * 255).astype(np.uint8)).save(imgs / "one.png")
    return {"root": root, "depth": depth, "data": root / "data", "ids": ids, "preds": root / "preds", "imgs": imgs}


def _pager(argv):
    from pager.cli.main import main

    return main(argv)


def _infer(argv):
    from pager.cli.infer import main

    return main(argv)


def _pointcloud_script(argv):
    from pager.cli.pointcloud import main

    return main(argv)


def _evaluation(task):
    def run(argv):
        from pager.evaluation import runners

        return getattr(runners, f"{task}_main")(argv)

    return run


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the outputs were checked")


def _no_samples(*args, **kwargs):
    raise AssertionError("a sample was read before the outputs were checked")


def _eval_argv(task, w, out, *extra):
    preds = w["preds"] / ("normals" if task == "normals" else "depth")
    return ["--pred_path", str(preds), "--data_path", str(w["data"]), "--dataset", "Structured3D",
            "--output_dir", str(out), "--device", "cpu", *extra]


# command -> (entry point, argv(world, out), the existing file it must not replace, what "work" means)
CASES = {
    "pager predict": (_pager, lambda w, o: ["predict", str(w["imgs"] / "one.png"), "--out", str(o), "--checkpoint_path",
                                            str(w["depth"]), "--no_progress"],
                      lambda w, o: o / "one_depth16.png", "pager.pipeline.PagerPipeline.from_pretrained"),
    "inference.py": (_infer, lambda w, o: ["--checkpoint_path", str(w["depth"]), "--data_path", str(w["data"]),
                                           "--dataset", "Structured3D", "--results_path", str(o), "--generate_eval",
                                           "--no_progress"],
                     lambda w, o: o / "tiny-depth" / "Structured3D" / "eval" / f"{w['ids'][1]}.npz",
                     "pager.model.pager_model.Pager.from_pretrained"),
    "depth_evaluation.py txt": (_evaluation("depth"), lambda w, o: _eval_argv("depth", w, o),
                                lambda w, o: o / "evaluation_metrics_metric.txt",
                                "pager.evaluation.runners.load_prediction"),
    "depth_evaluation.py json": (_evaluation("depth"), lambda w, o: _eval_argv("depth", w, o, "--alignment_type", "scale"),
                                 lambda w, o: o / "evaluation_metrics_scale.json",
                                 "pager.evaluation.runners.load_prediction"),
    "depth_evaluation.py csv": (_evaluation("depth"), lambda w, o: _eval_argv("depth", w, o),
                                lambda w, o: o / "evaluation_per_sample_metric.csv",
                                "pager.evaluation.runners.load_prediction"),
    "depth_evaluation.py error map": (_evaluation("depth"), lambda w, o: _eval_argv("depth", w, o, "--save_error_maps"),
                                      lambda w, o: o / "error_maps_metric" / f"{w['ids'][0]}.png",
                                      "pager.evaluation.runners.load_prediction"),
    "normals_estimation.py": (_evaluation("normals"), lambda w, o: _eval_argv("normals", w, o, "--save_error_maps"),
                              lambda w, o: o / "error_maps_normals" / f"{w['ids'][1]}.png",
                              "pager.evaluation.runners.load_prediction"),
    "edge_estimation.py": (_evaluation("edges"), lambda w, o: _eval_argv("edges", w, o),
                           lambda w, o: o / "evaluation_metrics_edges.json", "pager.evaluation.runners.load_prediction"),
    "seams_evaluation.py": (_evaluation("seams"), lambda w, o: ["--pred_path", str(w["preds"] / "depth"),
                                                                "--output_dir", str(o), "--device", "cpu"],
                            lambda w, o: o / "evaluation_per_sample_seams.csv", "pager.evaluation.runners.load_prediction"),
    "pager pointcloud": (_pager, lambda w, o: ["pointcloud", str(w["imgs"] / "one.png"), "--out", str(o / "scene.ply"),
                                               "--checkpoint_path", str(w["depth"])],
                         lambda w, o: o / "scene.ply", "pager.pipeline.PagerPipeline.from_pretrained"),
    "generate_point_cloud.py": (_pointcloud_script, lambda w, o: ["--depth_path", str(w["preds"] / "depth"),
                                                                  "--data_path", str(w["data"]), "--dataset",
                                                                  "Structured3D", "--out", str(o)],
                                lambda w, o: o / f"{w['ids'][0]}.glb", "pager.cli.pointcloud._load_array"),
    "pager synth": (_pager, lambda w, o: ["synth", "--out", str(o / "syn"), "--num", "2", "--height", "16",
                                          "--no-progress"],
                    lambda w, o: o / "syn" / "notes.txt", "pager.data.synthetic.writer.render_scene"),
    "pager synth --sequence": (_pager, lambda w, o: ["synth", "--sequence", "--out", str(o / "seq"), "--num", "1",
                                                     "--frames", "2", "--height", "16", "--no-progress"],
                               lambda w, o: o / "seq" / "notes.txt", "pager.data.synthetic.sequence.render_sequence"),
    "pager video": (_pager, lambda w, o: ["video", str(w["imgs"]), "--out", str(o), "--checkpoint_path", str(w["depth"]),
                                          "--no_progress"],
                    lambda w, o: o / "depth.mp4", "pager.pipeline.PagerPipeline.from_pretrained"),
}


@pytest.mark.parametrize("command", list(CASES))
def test_every_command_refuses_to_overwrite_before_any_work(world, tmp_path, monkeypatch, capsys, command):
    entry, argv, target, work = CASES[command]
    out = tmp_path / "out"
    existing = target(world, out)
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(SENTINEL)
    with monkeypatch.context() as m:
        m.setattr(work, _no_samples if "load" in work.rsplit(".", 1)[-1] or "render" in work else _no_model)
        assert entry(argv(world, out)) == 2
    err = capsys.readouterr().err
    named = existing.parent if command.startswith("pager synth") else existing  # synth writes one folder
    assert str(named) in err and "--overwrite" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert existing.read_bytes() == SENTINEL
    # --overwrite replaces it
    assert entry(argv(world, out) + ["--overwrite"]) == 0, capsys.readouterr().err
    assert not existing.exists() or existing.read_bytes() != SENTINEL


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _error_lines(err):
    """stderr without progress bars."""
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]


@pytest.mark.parametrize("command", list(CASES))
def test_full_disk_is_one_line_naming_the_file(world, tmp_path, monkeypatch, capsys, command):
    """The disk fills up while results are written: one line naming the file, nothing half-written left."""
    entry, argv, target, work = CASES[command]
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        if command.startswith("pager synth"):  # writes inside a temporary folder, not through atomic_write
            m.setattr("pager.data.synthetic.writer.encode_png", _enospc)
        else:
            m.setattr(os, "fsync", _enospc)
        assert entry(argv(world, out)) == 2
        err = capsys.readouterr().err
        lines = _error_lines(err)
        assert "Traceback" not in err and len(lines) == 1, err
        assert "No space left on device" in lines[0] and str(out) in lines[0], lines[0]
        leftovers = [p for p in out.rglob("*") if p.is_file() or p.name.endswith(".tmp")] if out.exists() else []
        assert not leftovers
        if command == "pager predict":  # -v adds the traceback
            assert _pager(["-v"] + argv(world, out)) == 2
            assert "Traceback" in capsys.readouterr().err


def test_point_cloud_never_written_under_another_file_type(world, tmp_path, capsys):
    for argv in (["pointcloud", str(world["imgs"] / "one.png"), "--out", str(tmp_path / "notes.txt")],
                 ["pointcloud", str(world["imgs"] / "one.png"), "--out", str(tmp_path / "notes.txt"), "--format", "ply"],
                 ["pointcloud", str(world["imgs"] / "one.png"), "--out", str(tmp_path / "a.glb"), "--format", "ply"]):
        assert _pager(argv) == 2
        err = capsys.readouterr().err
        assert "--out" in err and ("notes.txt" in err or "a.glb" in err)
    assert not list(tmp_path.iterdir())
    # without a suffix the format's is added; an existing folder receives <image stem>.<format>
    assert _pager(["pointcloud", str(world["imgs"] / "one.png"), "--out", str(tmp_path / "cloud"), "--format", "ply",
                   "--checkpoint_path", str(world["depth"])]) == 0
    (tmp_path / "dir").mkdir()
    assert _pager(["pointcloud", str(world["imgs"] / "one.png"), "--out", str(tmp_path / "dir"),
                   "--checkpoint_path", str(world["depth"])]) == 0
    assert sorted(p.name for p in tmp_path.rglob("*.*")) == ["cloud.ply", "one.glb"]


# ------------------------------------------------------------------------------------------------------
# unique output names within one run
# ------------------------------------------------------------------------------------------------------

def test_unique_stems_never_map_two_inputs_to_one_name():
    # the reported instance: 3 inputs went into 2 files
    names = unique_stems([Path("d/a.png"), Path("d/a.jpg"), Path("e/d_a_1.png")])
    assert names == ["d_a_png", "d_a_jpg", "d_a_1"]
    # same stem in two folders; case-insensitive file systems; one file named twice under different folders
    assert unique_stems([Path("x/a.png"), Path("y/a.png")]) == ["x_a", "y_a"]
    assert len({n.casefold() for n in unique_stems([Path("A.png"), Path("a.png")])}) == 2
    tricky = [Path("x/a.png"), Path("y/a.png"), Path("z/x_a.png"), Path("x/a.jpg"), Path("q/x_a_png.png"),
              Path("x/A.PNG"), Path("x_a_png_2.png")]
    names = unique_stems(tricky)
    assert len({n.casefold() for n in names}) == len(tricky)
    assert unique_stems(tricky) == names  # deterministic


def test_predict_writes_each_input_to_its_own_files(world, tmp_path):
    """d/a.png, d/a.jpg and e/d_a_1.png: three inputs, three sets of files, each holding its own image."""
    rng = np.random.default_rng(1)
    inputs = [tmp_path / "in" / "d" / "a.png", tmp_path / "in" / "d" / "a.jpg", tmp_path / "in" / "e" / "d_a_1.png"]
    pixels = {}
    for k, path in enumerate(inputs):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((16, 32, 3), 40 * k + 20, np.uint8) + (rng.random((16, 32, 3)) * 8).astype(np.uint8)
        Image.fromarray(img).save(path, quality=100)
        pixels[path] = np.asarray(Image.open(path))
    out = tmp_path / "out"
    assert _pager(["predict", *map(str, inputs), "--out", str(out), "--checkpoint_path", str(world["depth"]),
                   "--no_progress"]) == 0
    npz = sorted(out.glob("*.npz"))
    assert len(npz) == 3
    stored = [np.load(p)["rgb"] for p in npz]
    for path, px in pixels.items():  # every input's pixels are in exactly one output file
        assert sum(np.array_equal(s, px) for s in stored) == 1, path


def test_check_outputs_refuses_duplicates_long_names_and_unwritable_folders(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="same file"):
        check_outputs([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "A.png"])
    long_name = "x" * 300 + ".png"
    with pytest.raises(ValueError, match="too long") as info:
        check_outputs([tmp_path / long_name])
    assert long_name in str(info.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=str(blocker)):
        check_outputs([blocker / "sub" / "a.png"])
    # an unwritable folder (simulated: tests may run as root, who may write anywhere)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(PermissionError, match="locked"):
        check_outputs([locked / "new" / "a.png"])
