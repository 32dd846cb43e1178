"""Ctrl-C in every CLI entry point: one line ``<prog>: interrupted[: progress]``, exit status 130, the traceback
only with ``-v``; ``pager predict --skip_existing`` continues an interrupted run without recomputing finished inputs."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import pytest

from pager.cli.main import COMMANDS, INTERRUPTED_STATUS, build_parser, main

#: the stand-alone scripts' entry points (inference.py, train.py, generate_point_cloud.py, app.py, evaluation/*.py)
SCRIPT_MAINS = [
    "pager.cli.infer:main", "pager.cli.train:main", "pager.cli.pointcloud:main", "pager.app.cli:main",
    "pager.evaluation.cli:depth_main", "pager.evaluation.cli:normals_main", "pager.evaluation.cli:edges_main",
    "pager.evaluation.cli:seams_main", "pager.evaluation.video_runner:main",
]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _check_one_line(capsys, rc, verbose):
    err = capsys.readouterr().err
    assert rc == INTERRUPTED_STATUS
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].endswith("interrupted"), err
    assert ("Traceback" in err) == verbose, err
    if not verbose:
        assert len(lines) == 1, err


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("entry", SCRIPT_MAINS)
def test_script_ctrl_c_is_one_line_and_130(monkeypatch, capsys, entry, verbose):
    module, name = entry.split(":")
    # the first thing every script does (through run_script) is finishing its parser: interrupt there
    monkeypatch.setattr("pager.cli.common.finalize_parser", _interrupt)
    rc = getattr(importlib.import_module(module), name)(["-v"] if verbose else [])
    _check_one_line(capsys, rc, verbose)


def _required_argv(parser: argparse.ArgumentParser) -> list:
    """Placeholder values for the required arguments of ``parser`` (the first choice of a sub-parser)."""
    argv = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name, sub = next(iter(action.choices.items()))
            argv += [name] + _required_argv(sub)
        elif not action.option_strings and action.nargs != 0:
            argv.append("x")
        elif action.required:
            argv += [action.option_strings[0], action.choices[0] if action.choices else "x"]
    return argv


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_pager_command_ctrl_c_is_one_line_and_130(monkeypatch, capsys, command, verbose):
    module = importlib.import_module(COMMANDS[command][0])
    monkeypatch.setattr(module, "run", _interrupt)
    sub = build_parser([command], all_commands=True)._subparsers._group_actions[0].choices[command]
    rc = main([command] + _required_argv(sub) + (["-v"] if verbose else []))
    _check_one_line(capsys, rc, verbose)


def test_predict_interrupted_then_skip_existing(tmp_path, monkeypatch, capsys):
    """A real ``pager predict`` on a tiny checkpoint, interrupted while writing its second input: the message says
    what was written; a plain rerun refuses; ``--skip_existing`` predicts only the unfinished inputs."""
    from PIL import Image

    from pager.model import build_tiny_checkpoint

    ck = build_tiny_checkpoint(tmp_path / "ck", face_size=16, base_dir=tmp_path / "base")
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        images.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(images[-1])
    out = tmp_path / "out"
    argv = ["predict", *map(str, images), "--out", str(out), "--checkpoint_path", str(ck), "--no_progress",
            "--batch_size", "1"]
    import pager.export as export

    real = export.save_npz
    calls = []

    def save_npz_interrupted_on_second(path, **arrays):  # the .npz is each input's last file
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, **arrays)

    monkeypatch.setattr(export, "save_npz", save_npz_interrupted_on_second)
    assert main(argv) == INTERRUPTED_STATUS
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pager predict: interrupted: 1 of 3 panorama(s) written to ") and "--skip_existing" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert (out / "im0.npz").is_file() and not (out / "im1.npz").exists()  # im1 cut off half-way: no .npz
    assert (out / "im1_depth16.png").is_file()
    monkeypatch.setattr(export, "save_npz", real)

    assert main(argv) == 2 and "already exist" in capsys.readouterr().err  # refuses, as before
    assert main(argv + ["--skip_existing", "--overwrite"]) == 2 and "--skip_existing" in capsys.readouterr().err

    first = (out / "im0.npz").stat().st_mtime_ns
    written = []
    monkeypatch.setattr(export, "save_npz", lambda path, **a: written.append(Path(path).name) or real(path, **a))
    assert main(argv + ["--skip_existing"]) == 0
    assert written == ["im1.npz", "im2.npz"]  # im0 complete: skipped; im1 partial: predicted again
    assert (out / "im0.npz").stat().st_mtime_ns == first
    for i in range(3):
        assert np.load(out / f"im{i}.npz")["depth"].shape == (16, 32)
    written.clear()
    assert main(argv + ["--skip_existing"]) == 0 and written == []  # nothing left to do
