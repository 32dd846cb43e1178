"""One command-line convention for every PaGeR command (``pager ...`` and the original scripts).

:func:`finalize_parser` is applied to every parser (and its sub-parsers) before parsing; it

* shows defaults in ``--help`` and escapes stray ``%`` in help texts (``--help`` never crashes);
* accepts both spellings of every long option, ``--no_progress`` and ``--no-progress``;
* adds ``-v/--verbose`` (accepted before or after the sub-command) and ``--threads`` where missing;
* checks numeric options at parse time by name (:data:`pager.config_schema.VALUE_RULES`: ``--face_size 0``,
  ``--depth_scale 0``, negative counts, ...) and ``--device`` against this torch build, so that the
  error names the option before any model is loaded.

:func:`apply_common_options` applies ``--threads`` and the logging level after parsing.

:func:`add_model_options` declares the options that load and run the model (``--checkpoint_path``,
``--variant``, ``--face_size``, ``--dtype``, ``--device``, ...) once, for every command that runs the
pipeline (``pager predict``, ``pager video``, ``pager pointcloud``, the app), so that they cannot drift apart.
"""
from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any, Callable, Iterator, List, Optional

from pager.config_schema import DTYPE_NAMES, MODALITY_NAMES, VALUE_RULES

logger = logging.getLogger(__name__)

#: Option destinations whose value is a torch device.
DEVICE_OPTIONS = ("device",)

#: Spellings accepted by ``--dtype`` (as ``PagerPipeline.from_pretrained(torch_dtype=...)``).
DTYPE_CHOICES = DTYPE_NAMES


def _model_option_specs(unit: str) -> dict:
    """``name -> (flags, add_argument keywords)`` of the model options (see :func:`add_model_options`)."""
    from pager.config_schema import leaf_choices  # not pager.geometry: parsing must not import torch

    return {
        "checkpoint_path": (("--checkpoint_path",), dict(
            nargs="+", default=None,
            help="checkpoint folder(s) or Hugging Face repo id(s); default: the embedded default model")),
        "modalities": (("--modalities",), dict(
            nargs="+", default=None, choices=MODALITY_NAMES,
            help="what to predict (default: every modality of the loaded checkpoints)")),
        "variant": (("--variant",), dict(default=None, choices=("EMA", "original"),
                                         help="UNet variant of a training checkpoint")),
        "face_size": (("--face_size",), dict(type=int, default=None,
                                             help="cube face size in pixels (default: the checkpoint's)")),
        "output_height": (("--output_height",), dict(type=int, default=None,
                                                     help="output ERP height (default: the input's)")),
        "batch_size": (("--batch_size",), dict(type=int, default=1, help=f"{unit} per forward pass")),
        "stitching": (("--stitching",), dict(
            default="exact", choices=leaf_choices("stitching", "inference"),
            help="ERP<->cube resampling: exact (default) or reference (the original project's, to reproduce its "
                 "published numbers; output widths must be multiples of 4)")),
        "seam_blend": (("--seam_blend",), dict(
            action="store_true",
            help="hide cube face borders: a second pass on a cube turned by 45 deg, blended (about 2x time)")),
        "device": (("--device",), dict(default=None, help="cpu, cuda, cuda:1, mps (default: best available)")),
        "dtype": (("--dtype",), dict(default="float32", choices=DTYPE_CHOICES,
                                     help="fast path: float16/bfloat16 on GPUs (bfloat16 on CPUs with AVX512-BF16/AMX)")),
        "enable_xformers": (("--enable_xformers",), dict(
            action="store_true", help="xformers attention (falls back to SDPA with a warning)")),
        "channels_last": (("--channels_last",), dict(action="store_true", help="fast path: channels_last memory layout")),
        "compile": (("--compile",), dict(action="store_true",
                                         help="fast path: torch.compile the networks (the first batch compiles)")),
        "tiled_vae": (("--tiled_vae", "--tiled_decoding"), dict(
            action="store_true", help="fast path: exact low-memory VAE encoding and decoding in bands of rows "
                                      "(panorama-wide GroupNorm statistics first; same output); --tiled_decoding is "
                                      "its earlier name")),
        "allow_pickle": (("--allow_pickle",), dict(
            action="store_true", help="also load .bin pickle weights (only if you trust them)")),
    }


#: Every model option of :func:`add_model_options`, in ``--help`` order.
MODEL_OPTIONS = ("checkpoint_path", "modalities", "variant", "face_size", "output_height", "batch_size", "stitching",
                 "seam_blend", "device", "dtype", "enable_xformers", "channels_last", "compile", "tiled_vae", "allow_pickle")


def add_model_options(parser: Any, names: Any = MODEL_OPTIONS, unit: str = "panoramas") -> Any:
    """Declare the model options ``names`` (a subset of :data:`MODEL_OPTIONS`) on ``parser`` (a parser or an
    argument group); ``unit`` names what ``--batch_size`` counts. Returns ``parser``."""
    specs = _model_option_specs(unit)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"add_model_options: unknown option(s) {unknown}; known: {list(MODEL_OPTIONS)}")
    for name in names:
        flags, kwargs = specs[name]
        parser.add_argument(*flags, **kwargs)
    return parser


def check_depth_scale_option(source: Any, modalities: Any, scale: Optional[float], option: str = "--depth_scale",
                             writes_png: bool = True, why_not: str = "") -> None:
    """Check ``--depth_scale`` against the depth checkpoint's range (its ``config.yaml`` only, before the model
    loads; :func:`pager.export.check_depth_png_scale`). Nothing to check without a scale; a scale that no file
    will use (no depth model, or ``writes_png=False``: ``why_not`` says why) is named in a warning."""
    if scale is None:
        return
    if "depth" not in tuple(modalities) or not writes_png:
        reason = why_not if "depth" in tuple(modalities) else "no depth is predicted (--modalities)"
        logger.warning("%s %g has no effect: %s, so no 16-bit depth PNG is written", option, scale, reason)
        return
    from pager.export.files import check_depth_png_scale
    from pager.model.loading import checkpoint_config

    cfg = checkpoint_config(source, "depth")
    if cfg is not None:
        check_depth_png_scale(scale, cfg.min_depth, cfg.max_depth, unit="metres" if cfg.metric_depth else "relative",
                              option=option)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already mentions the default or there is nothing to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        if (action.default is None or action.default is False or action.default is argparse.SUPPRESS  # not 0
                or isinstance(action, argparse._HelpAction)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def check_device(text: str) -> Optional[str]:
    """A ``--device`` value checked against this torch build (``auto``/``none``: ``None``, the best device)."""
    if text is None or str(text).strip().lower() in ("auto", "none", "null", ""):
        return None
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: CUDA is not available (torch {torch.__version__}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r} (expected cpu, cuda, cuda:N or mps)")
    return str(text)


def _with_rule(name: str, inner: Optional[Callable[[str], Any]]) -> Callable[[str], Any]:
    rule = VALUE_RULES[name]

    def parse(text: str) -> Any:
        value = inner(text) if inner is not None else text
        problem = rule.check(value)
        if problem:
            raise argparse.ArgumentTypeError(f"must be {problem}, got {text}")
        return value

    parse.__name__ = getattr(inner, "__name__", "value")
    parse._pager_rule = rule  # type: ignore[attr-defined]
    return parse


def _with_device(inner: Optional[Callable[[str], Any]]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = inner(text) if inner is not None else text
        return value if value is None else check_device(value)

    parse.__name__ = "device"
    parse._pager_device = True  # type: ignore[attr-defined]
    return parse


def iter_parsers(parser: argparse.ArgumentParser, path: tuple = ()) -> Iterator[tuple]:
    """``(path, parser)`` for ``parser`` and every sub-parser below it (``path`` = sub-command names)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_parsers(sub, path + (name,))


def _add_spellings(parser: argparse.ArgumentParser) -> None:
    for action in list(parser._actions):
        for opt in list(action.option_strings):
            if not opt.startswith("--") or len(opt) < 4:
                continue
            body = opt[2:]
            for alt_body in (body.replace("_", "-"), body.replace("-", "_")):
                alt = "--" + alt_body
                if alt != opt and alt not in parser._option_string_actions:
                    parser._option_string_actions[alt] = action  # accepted, not listed in --help


def finalize_parser(parser: argparse.ArgumentParser, top_level: bool = True, version: bool = True) -> argparse.ArgumentParser:
    """Apply the common convention (see the module docstring) to ``parser`` and all its sub-parsers."""
    from pager import __version__

    for path, p in iter_parsers(parser):
        if getattr(p, "_pager_finalized", False):
            continue
        p._pager_finalized = True  # type: ignore[attr-defined]
        p.formatter_class = HelpFormatter
        if p.description:
            p.description = p.description.replace("%", "%%").replace("%%%%", "%%")
        dests = {a.dest for a in p._actions}
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if "verbose" not in dests:
            p.add_argument("-v", "--verbose", action="store_true",
                           default=False if (top_level and not path) else argparse.SUPPRESS,
                           help="debug logging, and a traceback on errors")
        elif path:  # a sub-command's own -v must not reset the top-level one
            for a in p._actions:
                if a.dest == "verbose":
                    a.default = argparse.SUPPRESS
        if version and not path and "version" not in dests:
            p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        if not has_sub and "threads" not in dests:
            p.add_argument("--threads", type=int, default=None,
                           help="CPU threads of torch (default: torch's choice, usually one per core)")
        for action in p._actions:
            if (not action.help and action.option_strings and action.nargs != 0
                    and not (action.default is None or action.default is False or action.default is argparse.SUPPRESS)):
                action.help = "(default: %(default)s)"  # argparse renders nothing for an option without help
            if action.help and action.help is not argparse.SUPPRESS:
                action.help = _escape_percent(action.help)
            if action.dest in VALUE_RULES and action.nargs != 0 and not getattr(action.type, "_pager_rule", None):
                action.type = _with_rule(action.dest, action.type)
            if action.dest in DEVICE_OPTIONS and not getattr(action.type, "_pager_device", False):
                action.type = _with_device(action.type)
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if choice.help:
                        choice.help = _escape_percent(choice.help)
        _add_spellings(p)
    return parser


def _escape_percent(text: str) -> str:
    """Escape ``%`` that is not an argparse format field (``%(default)s``, ``%(prog)s``, ``%%``)."""
    out: List[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt == "(":
                out.append(c)
            elif nxt == "%":
                out.append("%%")
                i += 1
            else:
                out.append("%%")
        else:
            out.append(c)
        i += 1
    return "".join(out)


_PYTHON_FORMATWARNING = warnings.formatwarning


def one_line_warning(message: Any, category: type, filename: str, lineno: int, line: Optional[str] = None) -> str:
    """``warnings.formatwarning`` of command-line runs: ``WARNING: <message>`` (``-v`` keeps Python's format)."""
    return f"WARNING: {' '.join(str(message).split())}\n"


def apply_common_options(args: argparse.Namespace) -> None:
    """After parsing: logging level (``-v``), one-line warnings, and ``--threads``."""
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # a user-facing warning is one line, without the library's file, line number and source line (-v: Python's)
    warnings.formatwarning = _PYTHON_FORMATWARNING if verbose else one_line_warning
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        logger.debug("torch uses %d CPU thread(s)", threads)
