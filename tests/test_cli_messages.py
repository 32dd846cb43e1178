"""User-facing messages found confusing by a new user: each is one line that names the argument and what was
expected (tests of the kind, over every command or function where it applies)."""
from __future__ import annotations

import logging
import warnings
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from pager.cli.main import COMMANDS, build_parser, main
from tests.test_cli_interrupt import _required_argv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pager.model import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return {"depth": str(build_tiny_checkpoint(root / "depth", face_size=16, base_dir=root / "base")),
            "depth2": str(build_tiny_checkpoint(root / "depth2", face_size=16, base_dir=root / "base", seed=1))}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "pano.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


# --- repeated / overlapping --checkpoint_path -------------------------------------------------------------------

def test_combine_checkpoints_dedupes_the_same_model(tiny):
    from pager.model.loading import combine_checkpoints

    assert combine_checkpoints([]) == "default"
    assert combine_checkpoints(["default", "default"]) == "default"
    assert combine_checkpoints(["default", "default/depth", "default/normals"]) == "default"
    assert combine_checkpoints([tiny["depth"], tiny["depth"] + "/"]) == {"depth": tiny["depth"]}


@pytest.mark.parametrize("command", ["predict", "video"])
def test_two_checkpoints_for_one_modality_named(tmp_path, capsys, tiny, image, command):
    source = image if command == "predict" else str(Path(image).parent)  # video: a folder of frames
    base = [command, source, "--out", str(tmp_path / "o")]
    assert main(base + ["--checkpoint_path", tiny["depth"], tiny["depth2"]]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pager {command}: error: --checkpoint_path: two depth checkpoints ({tiny['depth']}, {tiny['depth2']})"
    assert main(base + ["--checkpoint_path", "default", tiny["depth"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'default' already names both the depth and the normals model" in err[0]
    assert "config.yaml" not in err[0]
    assert not (tmp_path / "o").exists()


# --- the unit of the depth-PNG clipping warning follows the model -------------------------------------------------

@pytest.mark.parametrize("unit,expected", [("metres", "exceed 2 m "), ("relative", "exceed 2 (relative depth, unit-free)")])
def test_depth_png_clipping_warning_unit(tmp_path, caplog, unit, expected):
    from pager.export import save_depth_png16

    depth = np.full((4, 8), 1.0, np.float32)
    depth[0, 0] = 3.0  # 3 * 32767.5 > 65535: clipped
    with caplog.at_level(logging.WARNING):
        save_depth_png16(tmp_path / "d.png", depth, scale=65535 / 2, unit=unit)
    [record] = [r for r in caplog.records if "clipped" in r.getMessage()]
    assert expected in record.getMessage() and "1 pixel(s)" in record.getMessage()
    if unit != "metres":
        assert " m " not in record.getMessage()


# --- offline Hugging Face: advice a command-line user can act on -----------------------------------------------------

def test_offline_hub_error_gives_actionable_advice(tmp_path, monkeypatch, capsys, image):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    from pager.model.loading import resolve_folder

    with pytest.raises(FileNotFoundError) as exc:
        resolve_folder("nobody-pager-test/none")
    message = str(exc.value)
    assert "local_files_only" not in message
    assert "--checkpoint_path default" in message and "local folder" in message and "HF_HUB_OFFLINE" in message
    assert main(["predict", image, "--out", str(tmp_path / "o"), "--checkpoint_path", "nobody-pager-test/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "local_files_only" not in err[0] and "--checkpoint_path default" in err[0]


# --- warnings in command-line runs are one line --------------------------------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])
def test_cli_warnings_are_one_line(monkeypatch, verbose):
    from pager.cli.common import apply_common_options

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    apply_common_options(Namespace(verbose=verbose))
    text = warnings.formatwarning(UserWarning("a.png: 640x480 is not a 2:1 panorama"), UserWarning,
                                  "/x/pager/cli/predict.py", 171, "    out = pipe(...)")
    if verbose:
        assert "predict.py:171" in text
    else:
        assert text == "WARNING: a.png: 640x480 is not a 2:1 panorama\n"


# --- an unknown option shows the sub-command's usage ---------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_option_shows_the_subcommand_usage(capsys, command):
    sub = build_parser([command], all_commands=True)._subparsers._group_actions[0].choices[command]
    required = _required_argv(sub)
    with pytest.raises(SystemExit) as exc:
        main([command] + required + ["--bogus_option", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    leaf = " ".join([command] + [a for a in required[:1] if sub._subparsers is not None])
    assert f"usage: pager {leaf} " in err, err
    assert err.strip().splitlines()[-1] == f"pager {leaf}: error: unrecognized arguments: --bogus_option 1"


# --- decompression-bomb refusal says how to lift the limit -------------------------------------------------------------

def test_decompression_bomb_message_says_how(tmp_path, monkeypatch, image):
    import PIL.Image

    from pager.io_utils import read_image

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 16x32 = 512 > 2 * 100: refused as a bomb
    with pytest.raises(ValueError) as exc:
        read_image(image)
    message = str(exc.value)
    assert image in message and "PIL.Image.MAX_IMAGE_PIXELS" in message and "command line keeps it" in message


# --- an output folder that cannot be written names the option -------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command,out", [("predict", "/proc/pagertest"), ("pointcloud", "/proc/pagertest/s.glb")])
def test_unwritable_out_names_the_option(capsys, image, tiny, command, out):
    assert main([command, image, "--out", out, "--checkpoint_path", tiny["depth"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(--out)" in err[0] and "files cannot be created in /proc" in err[0], err
    assert "[Errno" not in err[0] and "'/proc'" not in err[0]


# --- --normalize_input warns once per image ------------------------------------------------------------------------

def test_normalize_input_warns_once(tmp_path, caplog, tiny):
    from PIL import Image

    path = tmp_path / "float.tif"
    Image.fromarray(np.linspace(0.5, 4.0, 16 * 32, dtype=np.float32).reshape(16, 32), mode="F").save(path)
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(path), "--out", str(tmp_path / "o"), "--checkpoint_path", tiny["depth"],
                     "--normalize_input", "--no_progress"]) == 0
    assert sum("normalised linearly" in r.getMessage() for r in caplog.records) == 1


# --- a --depth_scale too coarse for the model's depth range is refused before the model loads ---------------------

@pytest.mark.parametrize("command", ["predict", "video"])
def test_depth_scale_below_one_step_refused_before_loading(tmp_path, capsys, monkeypatch, tiny, image, command):
    """``--depth_scale 0.001`` (metres per step, the inverse convention) would store every depth of a model whose
    range starts at 0.1 as 1 step: refused, naming the option and the smallest usable scale, nothing loaded."""
    from pager.model.loading import load_checkpoint_config_only
    from pager.pipeline import PagerPipeline

    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(no_loading))
    min_depth = load_checkpoint_config_only(tiny["depth"]).min_depth
    source = image if command == "predict" else str(Path(image).parent)
    extra = ["--depth_png", "--no_video"] if command == "video" else []
    base = [command, source, "--out", str(tmp_path / "o"), "--checkpoint_path", tiny["depth"], *extra]
    assert main(base + ["--depth_scale", "0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pager {command}: error: --depth_scale 0.001 ")
    assert f"scale >= {1 / min_depth:g}" in err[0]
    assert not (tmp_path / "o").exists()
    # the smallest accepted scale gets past the check (to the model loading, stopped here)
    with pytest.raises(AssertionError, match="must not be loaded"):
        main(base + ["--depth_scale", repr(1 / min_depth)])


def test_depth_png_underflow_is_reported(tmp_path, caplog):
    """Valid depths below half a step are stored as 1 step (never as the invalid 0) and counted in a warning."""
    from PIL import Image

    from pager.export import check_depth_png_scale, save_depth_png16

    depth = np.array([[0.2, 0.6, 1.2, 2.0]], np.float32)  # scale 1: rint -> 0 (raised to 1), 1, 1, 2
    with caplog.at_level(logging.WARNING, logger="pager.export.files"):
        save_depth_png16(tmp_path / "d.png", depth, scale=1.0, unit="relative")
    assert np.asarray(Image.open(tmp_path / "d.png")).tolist() == [[1, 1, 1, 2]]
    [record] = [r for r in caplog.records if "stored as 1 step" in r.getMessage()]
    assert "1 pixel(s)" in record.getMessage() and "below 0.5" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pager.export.files"):
        save_depth_png16(tmp_path / "e.png", depth, scale=5.0)  # 0.2 * 5 = 1 step: nothing lost
    assert not caplog.records
    check_depth_png_scale(10.0, 0.1, 75.0)  # 0.1 m at 10 steps/m = 1 step
    with pytest.raises(ValueError, match=r"--depth_scale 9\.9 .* scale >= 10"):
        check_depth_png_scale(9.9, 0.1, 75.0)


# --- a --face_size the model cannot use is refused by name before the model loads ---------------------------------

def test_face_multiple_read_from_configs_matches_the_loaded_model(tiny):
    from pager.model import Pager
    from pager.model.loading import checkpoint_face_multiple

    for source in (tiny["depth"], "default", {"depth": tiny["depth"]}):
        assert checkpoint_face_multiple(source) == Pager.from_pretrained(source, device="cpu").face_multiple
    assert checkpoint_face_multiple("owner/not-downloaded") is None  # a Hub id: checked when the model runs


@pytest.mark.parametrize("command", ["predict", "video", "pointcloud", "infer", "app"])
def test_face_size_not_a_model_multiple_refused_before_loading(tmp_path, capsys, monkeypatch, tiny, image, command):
    from pager.model import Pager
    from pager.model.loading import checkpoint_face_multiple
    from pager.pipeline import PagerPipeline

    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(no_loading))
    monkeypatch.setattr(Pager, "from_pretrained", classmethod(no_loading))
    multiple = checkpoint_face_multiple(tiny["depth"])
    bad = multiple + multiple // 2
    out = tmp_path / "o"
    argv = {
        "predict": ["predict", image, "--out", str(out)],
        "video": ["video", str(Path(image).parent), "--out", str(out), "--no_video"],
        "pointcloud": ["pointcloud", image, "--out", str(out / "c.ply")],
        "infer": ["infer", "--dataset", "Images", "--data_path", str(Path(image).parent), "--results_path", str(out),
                  "--generate_eval"],
        "app": ["app"],
    }[command] + ["--checkpoint_path", tiny["depth"], "--face_size", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--face_size" in err[0] and f" {bad}: this model needs a positive multiple of {multiple}" in err[0]
    assert not out.exists()


def test_inference_that_would_write_nothing_is_refused_before_loading(tmp_path, capsys, monkeypatch, tiny, image):
    """``--img_report_frequency 0`` without ``--generate_eval`` would run the model and write no file."""
    from pager.model import Pager

    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(Pager, "from_pretrained", classmethod(no_loading))
    argv = ["infer", "--dataset", "Images", "--data_path", str(Path(image).parent), "--results_path",
            str(tmp_path / "r"), "--checkpoint_path", tiny["depth"], "--img_report_frequency", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing would be written" in err[0] and "--generate_eval" in err[0]
    assert not (tmp_path / "r").exists()


# --- pager synth says how many scenes each split got, and warns about an empty one ----------------------------------

@pytest.mark.parametrize("num,splits", [(2, ["0.8", "0.1", "0.1"]), (4, ["0.5", "0", "0.5"])])
def test_synth_summary_counts_scenes_per_split(tmp_path, capsys, caplog, num, splits):
    out = tmp_path / "Synthetic"
    with caplog.at_level(logging.WARNING):
        assert main(["synth", "--out", str(out), "--num", str(num), "--height", "16", "--scenes", "indoor",
                     "--splits", *splits, "--no-progress"]) == 0
    on_disk = {s: len([p for p in (out / "indoor" / s).iterdir() if p.is_dir()]) if (out / "indoor" / s).is_dir() else 0
               for s in ("train", "val", "test")}
    assert sum(on_disk.values()) == num
    printed = capsys.readouterr().out
    assert printed.strip().endswith(": " + ", ".join(f"{s} {n}" for s, n in on_disk.items())), printed
    empty = [s for s, n in on_disk.items() if n == 0]
    warned = [r.getMessage() for r in caplog.records if "are empty" in r.getMessage()]
    assert bool(warned) == bool(empty) and all(s in warned[0] for s in empty) if empty else not warned


# --- a checkpoint folder without the wanted UNet says what it does hold -------------------------------------------

def test_missing_unet_folder_message_points_to_what_is_there(tmp_path):
    from pager.model.loading import find_unet_folder

    run = tmp_path / "run"  # train.py's run folder: checkpoints below it
    (run / "checkpoint-last" / "EMA").mkdir(parents=True)
    (run / "checkpoint-last" / "EMA" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"training run folder: its latest checkpoint is .*checkpoint-last$"):
        find_unet_folder(run, None)
    assert find_unet_folder(run / "checkpoint-last", None) == run / "checkpoint-last" / "EMA"
    released = tmp_path / "released"
    (released / "unet").mkdir(parents=True)
    (released / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no UNet folder 'original/'.*\(it has 'unet/'; --variant applies"):
        find_unet_folder(released, "original")


# --- the evaluation scripts call themselves by the name they were run with ---------------------------------------

@pytest.mark.parametrize("task", ["depth", "normals", "edges", "seams"])
def test_evaluation_scripts_name_themselves(task, capsys):
    from types import SimpleNamespace

    from pager.evaluation import cli as ev

    script = {"depth": "depth_evaluation.py", "normals": "normals_estimation.py", "edges": "edge_estimation.py",
              "seams": "seams_evaluation.py"}[task]
    entry = {"depth": ev.depth_main, "normals": ev.normals_main, "edges": ev.edges_main, "seams": ev.seams_main}[task]
    assert (Path(__file__).resolve().parents[1] / "evaluation" / script).is_file()
    with pytest.raises(SystemExit):
        entry(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {script} ")
    with pytest.raises(SystemExit):
        main(["evaluate", task, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: pager evaluate {task} ")
    failed = SimpleNamespace(failure="no prediction could be evaluated", outputs={"txt": "a.txt", "json": "a.json",
                                                                                   "csv": "a.csv"})
    assert ev._report(failed, task, script) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{script}: error: no prediction could be evaluated" and "failure report" in err[1]
    assert ev._report(failed, task) == 1  # the pager sub-command
    assert capsys.readouterr().err.startswith(f"pager evaluate {task}: error: ")


@pytest.mark.parametrize("command,extra,reason", [
    ("predict", ["--modalities", "normals"], "no depth is predicted"),
    ("video", ["--no_video"], "--depth_png is not given"),
])
def test_depth_scale_without_effect_is_named(tmp_path, caplog, monkeypatch, image, command, extra, reason):
    """``--depth_scale`` where no 16-bit depth PNG will be written is not ignored silently."""
    from pager.pipeline import PagerPipeline

    def no_loading(*a, **k):
        raise AssertionError("stop before loading")

    monkeypatch.setattr(PagerPipeline, "from_pretrained", classmethod(no_loading))
    source = image if command == "predict" else str(Path(image).parent)
    with caplog.at_level(logging.WARNING), pytest.raises(AssertionError, match="stop before loading"):
        main([command, source, "--out", str(tmp_path / "o"), "--depth_scale", "100", *extra])
    assert any(f"--depth_scale 100 has no effect: {reason}" in r.getMessage() for r in caplog.records)
