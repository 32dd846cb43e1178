"""One command-line convention over every command: ``pager`` and its sub-commands, and the original scripts.

Each test is one kind of behaviour checked over every parser (see :mod:`pager.cli.common`): ``--help`` works,
both spellings of long options, ``-v`` anywhere, defaults in ``--help``, numeric options validated at parse
time with the option named, ``--device`` checked against the torch build, ``--version``.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from pager.cli.common import HelpFormatter, finalize_parser, iter_parsers
from pager.config_schema import VALUE_RULES

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_SCRIPTS = ["inference.py", "train.py", "app.py", "generate_point_cloud.py", "evaluation/depth_evaluation.py",
                    "evaluation/normals_estimation.py", "evaluation/edge_estimation.py",
                    "evaluation/seams_evaluation.py"]


def _script_parsers() -> Dict[str, argparse.ArgumentParser]:
    """The parsers the stand-alone scripts use (built as their ``main`` builds them)."""
    import pager.app.cli as app_cli
    import pager.cli.infer as infer
    import pager.cli.pointcloud as pointcloud
    import pager.cli.train as train
    from pager.evaluation import runners

    parsers = {
        "inference.py": infer.build_parser(),
        "train.py": train.add_arguments(argparse.ArgumentParser(prog="train.py")),
        "app.py": app_cli.add_arguments(argparse.ArgumentParser(prog="app.py")),
        "generate_point_cloud.py": pointcloud.add_arguments(argparse.ArgumentParser(prog="generate_point_cloud.py")),
    }
    for task in runners.TASKS:
        parsers[f"evaluation {task}"] = runners.build_parser(task)
    return {name: finalize_parser(p) for name, p in parsers.items()}


def all_parsers() -> List[Tuple[str, argparse.ArgumentParser]]:
    """``(name, parser)`` of every leaf command: the scripts and every ``pager`` sub-command (recursively)."""
    from pager.cli.main import build_parser

    out = list(_script_parsers().items())
    for path, parser in iter_parsers(build_parser(all_commands=True)):
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            out.append(("pager " + " ".join(path), parser))
    return out


PARSERS = all_parsers()
PARSER_IDS = [name for name, _ in PARSERS]


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def _parse_error(parser: argparse.ArgumentParser, argv: List[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_every_command_is_covered():
    names = set(PARSER_IDS)
    for cmd in ("predict", "infer", "synth", "pointcloud", "train", "app", "evaluate depth", "evaluate normals",
                "evaluate edges", "evaluate seams"):
        assert f"pager {cmd}" in names
    assert len(names) == len(PARSER_IDS)


#: Modules that take seconds to import; ``--help`` and argument errors must answer without them.
HEAVY_MODULES = {"torch", "diffusers", "transformers", "gradio", "accelerate"}


def _imported(importtime_stderr: str) -> set:
    """Top-level package names in the ``python -X importtime`` report (stderr) of a run."""
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*([\w.]+)\s*$", importtime_stderr, re.M)}


@pytest.mark.parametrize("script", ORIGINAL_SCRIPTS + ["evaluation/video_evaluation.py"])
def test_original_scripts_help(script):
    """``python SCRIPT --help`` works, shows the common options, and does not import torch & co."""
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / script), "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage:" in out.stdout and "--threads" in out.stdout and "-v, --verbose" in out.stdout
    assert not HEAVY_MODULES & _imported(out.stderr), HEAVY_MODULES & _imported(out.stderr)


def _leaf_commands():
    from pager.cli.main import build_parser

    return [" ".join(path) for path, parser in iter_parsers(build_parser(all_commands=True))
            if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)]


@pytest.mark.parametrize("command", _leaf_commands())
def test_pager_commands_help_without_heavy_imports(command):
    """``pager COMMAND --help`` in a fresh process: the help text, without importing torch & co (seconds)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pager.cli.main", *command.split(), "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"usage: pager {command}" in " ".join(out.stdout.split())
    assert not HEAVY_MODULES & _imported(out.stderr), HEAVY_MODULES & _imported(out.stderr)


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["--version"]], ids=" ".join)
def test_pager_top_level_help_and_version(argv, capsys):
    from pager import __version__
    from pager.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert (f"pager {__version__}" in out) if argv == ["--version"] else ("usage: pager" in out)


@pytest.mark.parametrize("name,parser", PARSERS, ids=PARSER_IDS)
def test_help_renders_and_shows_defaults(name, parser):
    text = parser.format_help()  # raises on a stray '%' in a help string
    assert "usage:" in text
    formatter = HelpFormatter(parser.prog)
    for action in _options(parser):
        if action.help is argparse.SUPPRESS or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            continue  # (identity: a default of 0 is a default to show)
        shown = formatter._get_help_string(action) % {"default": action.default, "prog": parser.prog}
        assert "default" in shown.lower() or "config:" in shown, (name, action.dest, shown)
        assert action.help, (name, action.dest, "argparse shows no help line (hence no default) without a help text")


@pytest.mark.parametrize("name,parser", PARSERS, ids=PARSER_IDS)
def test_both_spellings_of_every_long_option(name, parser):
    for action in _options(parser):
        for opt in action.option_strings:
            if opt.startswith("--") and ("_" in opt[2:] or "-" in opt[2:]):
                for alt in ("--" + opt[2:].replace("-", "_"), "--" + opt[2:].replace("_", "-")):
                    assert parser._option_string_actions.get(alt) is action, (name, opt, alt)


def test_both_spellings_parse_the_same():
    from pager.cli.main import build_parser

    for argv in (["synth", "--out", "o", "--no_progress", "--scenes_per_shard", "3"],
                 ["synth", "--out", "o", "--no-progress", "--scenes-per-shard", "3"]):
        args = build_parser(argv).parse_args(argv)
        assert args.no_progress is True and args.scenes_per_shard == 3
    argv = ["predict", "a.jpg", "--out", "o", "--no-progress", "--depth-scale", "256"]
    args = build_parser(argv).parse_args(argv)
    assert args.no_progress is True and args.depth_scale == 256.0


@pytest.mark.parametrize("position", ["before", "after"])
def test_verbose_at_any_position(position):
    from pager.cli.main import build_parser

    base = ["predict", "a.jpg", "--out", "o"]
    argv = ["-v"] + base if position == "before" else base + ["-v"]
    assert build_parser(argv).parse_args(argv).verbose is True
    assert build_parser(base).parse_args(base).verbose is False


def _numeric_options(parser):
    """Options whose parser accepts a negative number (an unchecked int/float would)."""
    out = []
    for action in _options(parser):
        if action.type is None or action.nargs == 0:
            continue
        try:
            action.type("1")
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        out.append(action)
    return out


@pytest.mark.parametrize("name,parser", PARSERS, ids=PARSER_IDS)
def test_numeric_options_validated_at_parse_time(name, parser, capsys):
    checked = 0
    for action in _numeric_options(parser):
        try:
            value = action.type("1")
        except Exception:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        assert action.dest in VALUE_RULES, f"{name}: numeric option --{action.dest} has no rule in VALUE_RULES"
        bad = VALUE_RULES[action.dest].bad_example()
        if bad is None:
            continue
        count = action.nargs if isinstance(action.nargs, int) else 1
        err = _parse_error(parser, [action.option_strings[-1]] + [str(bad)] * count, capsys)
        assert f"argument {action.option_strings[0]}" in err or f"argument {action.option_strings[-1]}" in err, err
        assert "must be" in err, err
        checked += 1
    if any(a.dest in ("face_size", "batch_size", "depth_scale") for a in _options(parser)):
        assert checked > 0


@pytest.mark.parametrize("name,parser", [(n, p) for n, p in PARSERS if any(a.dest == "device" for a in p._actions)],
                         ids=[n for n, p in PARSERS if any(a.dest == "device" for a in p._actions)])
def test_device_checked_against_torch(name, parser, capsys):
    err = _parse_error(parser, ["--device", "cuda:99"], capsys)
    assert "argument --device" in err and "cuda:99" in err
    err = _parse_error(parser, ["--device", "tpu"], capsys)
    assert "argument --device" in err
    device = next(a for a in parser._actions if a.dest == "device")
    assert device.type("cpu") == "cpu" and device.type("auto") is None


def test_numeric_errors_come_before_any_work(tmp_path):
    """``--face_size 0`` / ``--depth_scale 0`` stop at parse time: one line, exit code 2, nothing written, and
    nothing heavy imported (the answer comes at once)."""
    image = ROOT / "pager" / "assets" / "examples" / "indoor_room.jpg"
    for bad in (["--face_size", "0"], ["--depth_scale", "0"], ["--batch_size", "-1"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pager.cli.main", "predict", str(image),
                              "--out", str(tmp_path / "o"), *bad], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode == 2
        errors = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
        assert f"argument {bad[0]}" in errors[-1] and "Traceback" not in out.stderr
        assert not HEAVY_MODULES & _imported(out.stderr), HEAVY_MODULES & _imported(out.stderr)
        assert not (tmp_path / "o").exists()


def test_api_face_size_zero_is_an_error_not_the_default():
    """``face_size=0`` must not silently mean "the checkpoint's face size" in the Python API either."""
    import numpy as np
    import torch

    from pager.model import Pager, build_tiny_checkpoint
    from pager.pipeline import PagerPipeline

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ck = build_tiny_checkpoint(Path(tmp) / "ck", face_size=16, base_dir=Path(tmp) / "base")
        model = Pager.from_pretrained(str(ck), device="cpu")
        with pytest.raises(ValueError, match="face_size"):
            model.predict(torch.zeros(1, 3, 16, 32), face_size=0)
        with pytest.raises(ValueError, match="face_size"):
            PagerPipeline(model)(np.zeros((16, 32, 3), np.uint8), face_size=0, show_progress=False)


#: Commands whose option of a model-option name means something else by design (the original scripts' interface).
MODEL_OPTION_EXCEPTIONS = {
    ("generate_point_cloud.py", "checkpoint_path"), ("pager pointcloud", "checkpoint_path"),  # one checkpoint for IMAGE
    ("app.py", "checkpoint_path"), ("pager app", "checkpoint_path"),  # one checkpoint (+ --normals_checkpoint_path)
    ("app.py", "seam_blend"), ("pager app", "seam_blend"),  # the initial state of a tick box
}


def _declaration(action: argparse.Action):
    return (tuple(sorted(action.option_strings)), type(action).__name__, action.nargs, action.default,
            tuple(action.choices) if action.choices else None, getattr(action.type, "__name__", action.type))


@pytest.mark.parametrize("name,parser", PARSERS, ids=PARSER_IDS)
def test_model_options_are_declared_once(name, parser):
    """Every command that runs the model declares --checkpoint_path, --variant, --face_size, --dtype, ... as
    pager.cli.common.add_model_options does (same spellings, type, default, choices), so they cannot drift."""
    from pager.cli.common import MODEL_OPTIONS, add_model_options

    reference = finalize_parser(add_model_options(argparse.ArgumentParser(prog="reference")))
    ref = {a.dest: a for a in _options(reference)}
    for action in _options(parser):
        if action.dest in MODEL_OPTIONS and (name, action.dest) not in MODEL_OPTION_EXCEPTIONS:
            if action.help is argparse.SUPPRESS or action.default is argparse.SUPPRESS:
                continue  # config-file overrides of inference.py / train.py (OmegaConf keys; the YAML gives the default)
            assert _declaration(action) == _declaration(ref[action.dest]), (name, action.dest)


def test_stitching_choices_are_the_geometry_modes():
    """``--stitching`` takes its choices from the config schema (torch-free); they are the geometry's modes."""
    from pager.config_schema import leaf_choices
    from pager.geometry import STITCHING_MODES

    assert tuple(leaf_choices("stitching", "inference")) == tuple(STITCHING_MODES)
