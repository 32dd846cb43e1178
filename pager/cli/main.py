"""``pager`` command: dispatches to the sub-command modules of :mod:`pager.cli`.

Each sub-command module exposes ``add_parser(subparsers)`` (registering its own arguments) and
``run(args) -> int``. Modules are imported only when their command is used, so ``pager --help`` stays fast.
Library errors (``ValueError``, ``FileNotFoundError``, ``OSError`` such as a full disk, ...) become one readable
line and exit code 2; ``-v`` also prints the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

#: Errors that mean bad input (a path, a file, an argument) or a file-system problem (permissions, full disk,
#: name too long): one readable line and exit code 2.
USER_ERRORS: Tuple[type, ...] = (ValueError, KeyError, OSError)


def report_error(prog: str, exc: BaseException, verbose: bool = False) -> None:
    """Print ``<prog>: error: <exc>`` as one line on stderr (the traceback before it with ``verbose``)."""
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    print(f"{prog}: error: {message}", file=sys.stderr)

#: exit status of a run stopped by Ctrl-C (128 + SIGINT, the shell's convention)
INTERRUPTED_STATUS = 130


def report_interrupt(prog: str, exc: KeyboardInterrupt, verbose: bool = False) -> int:
    """Print ``<prog>: interrupted[: <what was done>]`` as one line (the traceback before it with ``verbose``);
    returns :data:`INTERRUPTED_STATUS`. A command states its progress by raising
    ``KeyboardInterrupt("N of M ... written to DIR; rerun with ... to continue")`` from the original one."""
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(str(exc).split())
    print(f"{prog}: interrupted" + (f": {message}" if message else ""), file=sys.stderr)
    return INTERRUPTED_STATUS


#: command name -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "predict": ("pager.cli.predict", "predict depth/normals for your own panoramas"),
    "infer": ("pager.cli.infer", "run a checkpoint over a dataset split (same as inference.py)"),
    "video": ("pager.cli.video", "depth/normals of a 360-degree video or image sequence"),
    "synth": ("pager.cli.synth", "render procedural panoramas with exact depth and normals"),
    "pointcloud": ("pager.cli.pointcloud", "turn a panorama (or predictions) into a GLB/PLY point cloud"),
    "evaluate": ("pager.cli.evaluate", "evaluate predictions against a dataset (depth, normals, edges, seams)"),
    "train": ("pager.cli.train", "fine-tune a PaGeR model (same as train.py)"),
    "app": ("pager.cli.app", "start the Gradio demo (same as app.py)"),
}


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); a no-op when logging is already configured."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_script(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Optional[Sequence[str]] = None,
    extra_errors: Tuple[type, ...] = (),
) -> int:
    """Entry point of a stand-alone script (``train.py``, ``inference.py``, ...): parse ``argv`` (a
    ``-v/--verbose`` flag is added), set up logging, call ``run(args)``; input errors become one line
    ``<prog>: error: ...`` and exit code 2. The common options of :mod:`pager.cli.common` are added."""
    from pager.cli.common import apply_common_options, finalize_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:  # Ctrl-C at any point (parsing, imports, the run) is one line and exit code 130
        finalize_parser(parser)
        args = parser.parse_args(argv)
        verbose = bool(getattr(args, "verbose", False))
        apply_common_options(args)
        from pager.io_utils import warn_once_per_image

        with warn_once_per_image():
            return int(run(args) or 0)
    except USER_ERRORS + tuple(extra_errors) as exc:
        report_error(parser.prog, exc, verbose)
        return 2
    except KeyboardInterrupt as exc:
        return report_interrupt(parser.prog, exc, verbose)


def build_parser(argv: Optional[List[str]] = None, all_commands: bool = False) -> argparse.ArgumentParser:
    """The top-level parser; only the chosen sub-command's module is imported (every one with ``all_commands``)."""
    from pager.cli.common import finalize_parser

    parser = argparse.ArgumentParser(prog="pager", description="PaGeR: 360-degree panorama geometry from one image.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (argv or []) if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load(module_name) if (all_commands or name == wanted) else None
        if module is not None:
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return finalize_parser(parser)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``pager`` console script; returns the exit code (130 after Ctrl-C, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # while parsing or importing (the command's own run is handled in _main)
        return report_interrupt("pager", exc, "-v" in argv or "--verbose" in argv)


def _main(argv: List[str]) -> int:
    parser = build_parser(argv)
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = _load(COMMANDS[args.command][0])
    if module is None:
        print(f"pager {args.command}: this command is not available in this installation", file=sys.stderr)
        return 2
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the chosen (sub-)sub-command's parser, so its usage is shown, not the top-level one
        chosen = parser
        while chosen._subparsers is not None:
            action = next(a for a in chosen._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
            name = getattr(args, action.dest, None)
            if name not in action.choices:
                break
            chosen = action.choices[name]
        chosen.error(f"unrecognized arguments: {' '.join(extras)}")
    from pager.cli.common import apply_common_options

    apply_common_options(args)
    try:
        from pager.io_utils import warn_once_per_image

        with warn_once_per_image():
            return int(module.run(args) or 0)
    except USER_ERRORS as exc:
        report_error(f"pager {args.command}", exc, getattr(args, "verbose", False))
        return 2
    except KeyboardInterrupt as exc:
        return report_interrupt(f"pager {args.command}", exc, getattr(args, "verbose", False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
