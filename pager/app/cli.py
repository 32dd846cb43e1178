"""``python app.py`` / ``pager app``: start the Gradio demo (binds 127.0.0.1 unless told otherwise)."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, List, Optional

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's arguments (shared by ``app.py`` and ``pager app``)."""
    parser.add_argument("--checkpoint_path", default=None,
                        help="checkpoint folder or hub id (depth or normals); default: the embedded default model")
    parser.add_argument("--normals_checkpoint_path", default=None,
                        help="a second checkpoint for normals when --checkpoint_path is a depth model")
    from pager.cli.common import add_model_options

    add_model_options(parser, ("enable_xformers", "dtype", "channels_last", "compile", "tiled_vae", "device", "face_size"))
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max_height", type=int, default=1024, help="downscale larger panoramas to this height")
    parser.add_argument("--seam_blend", action="store_true",
                        help="tick 'hide cube seams' by default (a second, blended pass; about 2x time)")
    parser.add_argument("--max_file_mb", type=float, default=50.0, help="largest accepted upload in MB")
    parser.add_argument("--output_dir", default=None, help="where result files go (default: a temporary folder)")
    parser.add_argument("--stitching", default="exact", choices=("exact", "reference"),
                        help="ERP<->cube resampling: exact (default) or reference (the original project's, to "
                             "reproduce its published numbers)")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pager app`` sub-command."""
    parser = subparsers.add_parser("app", help="start the Gradio demo (same as app.py)", description=__doc__)
    return add_arguments(parser)


def load_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline named by the arguments (the embedded default model without ``--checkpoint_path``)."""
    from pager.pipeline import PagerPipeline

    source: Any = args.checkpoint_path or "default"
    if args.normals_checkpoint_path:
        source = {"depth": source, "normals": args.normals_checkpoint_path}
    from pager.model.loading import check_face_size_option, checkpoint_face_multiple

    check_face_size_option(getattr(args, "face_size", None), checkpoint_face_multiple(source))
    pipe = PagerPipeline.from_pretrained(source, device=args.device, enable_xformers=args.enable_xformers,
                                         torch_dtype=getattr(args, "dtype", "float32"))
    pipe.model.optimize(channels_last=getattr(args, "channels_last", False), compile=getattr(args, "compile", False))
    pipe.model.enable_tiled_vae(bool(getattr(args, "tiled_vae", False)))
    return pipe


def run(args: argparse.Namespace) -> int:
    """Load the model, build the page and serve it until interrupted."""
    from pager.app.core import DemoPredictor

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    pipeline = load_pipeline(args)  # a bad checkpoint is reported before gradio (seconds of imports) is loaded
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from pager.app.demo import CSS, _theme, build_demo

    predictor = DemoPredictor(pipeline, output_root=args.output_dir, max_height=args.max_height,
                              face_size=args.face_size, max_file_mb=args.max_file_mb, stitching=args.stitching)
    demo = build_demo(predictor, seam_blend=args.seam_blend)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: the demo is reachable from other machines", args.host)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        share=False,
        show_error=True,
        max_file_size=f"{int(args.max_file_mb)}mb",
        theme=_theme(gr),
        css=CSS,
        allowed_paths=[str(predictor.output_root)],
        inbrowser=False,
    )
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``app.py``; errors become one line and exit code 2."""
    from pager.cli.main import run_script

    parser = add_arguments(argparse.ArgumentParser(prog="app.py", description=__doc__))
    return run_script(parser, run, argv, extra_errors=(OSError,))