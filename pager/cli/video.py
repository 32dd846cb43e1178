"""``pager video INPUT --out DIR``: depth and normals of a 360° video or image sequence, without flicker.

INPUT is a video file (mp4, mov, webm, mkv, avi; decoded with PyAV: ``pip install "pager-360[video]"``), a
folder of frames or a quoted glob pattern (``'frames/*_rgb.png'``), in frame order by file name.
Relative-depth models get one scale for the whole sequence (robust alignment of each frame's log depth
to the previous frames, see :mod:`pager.video.consistency`); ``--temporal_filter A`` adds an edge-aware
temporal filter along the camera motion estimated between frames (:mod:`pager.video.motion`), two-sided
unless ``--causal_filter``; metric models keep metres. Outputs (see :mod:`pager.video.process`): ``depth.mp4`` and
``normals.mp4`` (colour-mapped, at the input frame rate divided by ``--stride``), ``depth.npy`` /
``depth_mask.npy`` / ``normals.npy`` (memory-mapped arrays of the whole sequence), optional 16-bit depth
PNGs (``--depth_png``) and point clouds (``--pointcloud_every N``), and ``video.json``.

Running again into the same ``--out`` with the same settings resumes after the last completed frame;
existing outputs of other runs are refused unless ``--overwrite`` is given (checked before the model loads).

Examples::

    pager video walk.mp4 --out out/walk --stride 2 --batch_size 4
    pager video 'frames/*.jpg' --out out/frames --fps 30 --depth_png --pointcloud_every 50
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: ``PagerPipeline.__call__`` parameters passed through from ``--NAME``.
PIPELINE_PASS_THROUGH = ("stitching", "seam_blend")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``pager video``'s arguments on ``parser``."""
    parser.add_argument("input", help="video file, folder of frames, or quoted glob pattern of frames")
    parser.add_argument("--out", required=True, help="output folder")
    sel = parser.add_argument_group("frames")
    sel.add_argument("--start", type=int, default=0, help="first input frame (0-based)")
    sel.add_argument("--end", type=int, default=None, help="stop before this input frame (default: the last)")
    sel.add_argument("--stride", type=int, default=1, help="process every N-th frame")
    sel.add_argument("--fps", type=float, default=None, help="frame rate of an image sequence (default 10); overrides a video's")
    from pager.cli.common import add_model_options

    add_model_options(parser.add_argument_group("model"), unit="frames")
    tc = parser.add_argument_group("temporal consistency")
    tc.add_argument("--alignment", choices=("auto", "none"), default="auto",
                    help="auto: one scale for the whole sequence for relative-depth models (metric ones keep metres); "
                         "none: every frame on its own")
    tc.add_argument("--temporal_filter", type=float, default=0.0, metavar="A",
                    help="strength in [0, 1) of the edge-aware temporal filter (0 = off); two-sided (forward and "
                         "backward along the sequence) unless --causal_filter")
    tc.add_argument("--causal_filter", action="store_true",
                    help="filter forward only: each frame is final when it is predicted (streaming), but the "
                         "filtered depth lags behind a steadily changing prediction")
    tc.add_argument("--tau", type=float, default=0.05, help="agreement scale of alignment and filter in log depth (0.05 ~ 5%%)")
    tc.add_argument("--motion_compensation", choices=("pose", "yaw", "none"), default="pose",
                    help="how the previous frames are carried into the current one for the alignment and the filter: "
                         "pose (the camera's rotation and translation, estimated from the images and depth), yaw (the "
                         "turn about the vertical only), none (same pixel)")
    tc.add_argument("--no_motion_compensation", dest="motion_compensation", action="store_const", const="none",
                    help="same as --motion_compensation none")
    out = parser.add_argument_group("outputs")
    out.add_argument("--depth_png", action="store_true", help="also write depth16/<frame>.png (16-bit)")
    out.add_argument("--depth_scale", type=float, default=None,
                     help="16-bit PNG steps per depth unit (default: the finest of 1000 (mm for metric models), 500, 200, "
                          "100, ... that holds the checkpoint's max_depth; stored in each PNG and in video.json)")
    out.add_argument("--pointcloud_every", type=int, default=0, metavar="N", help="write a point cloud every N frames (0 = none)")
    out.add_argument("--pointcloud_format", choices=("ply", "glb"), default="ply")
    out.add_argument("--no_video", action="store_true", help="no depth / normals videos")
    out.add_argument("--no_arrays", action="store_true", help="delete the .npy arrays once the videos are written")
    out.add_argument("--video_format", choices=("mp4", "mkv", "webm"), default="mp4", help="container of the output videos")
    out.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run instead of refusing / resuming")
    out.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pager video`` sub-command."""
    parser = subparsers.add_parser("video", help="depth/normals of a 360-degree video or image sequence",
                                   description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
    return add_arguments(parser)


def _checkpoint_source(ckpts) -> Any:
    from pager.model.loading import combine_checkpoints

    return combine_checkpoints(ckpts or [])


def _modalities(args: argparse.Namespace, source: Any) -> list:
    """Requested modalities, known before loading from the checkpoint configs."""
    from pager.model.loading import checkpoint_modalities
    from pager.model.pager_model import iter_modalities

    loaded = list(checkpoint_modalities(source))
    wanted = list(iter_modalities(args.modalities)) if args.modalities else loaded
    missing = [m for m in wanted if m not in loaded]
    if missing:
        raise ValueError(f"--modalities {missing}: the checkpoint(s) predict only {loaded}")
    return wanted


def run(args: argparse.Namespace) -> int:
    """Run ``pager video``; returns the exit code."""
    from pager.video.io import open_source, require_av
    from pager.video.process import VideoOptions, check_outputs, process_video

    source = open_source(args.input, start=args.start, end=args.end, stride=args.stride, fps=args.fps)
    if not args.no_video:
        require_av()
    ckpt = _checkpoint_source(args.checkpoint_path)
    mods = _modalities(args, ckpt)
    from pager.model.loading import check_face_size_option, checkpoint_face_multiple

    check_face_size_option(args.face_size, checkpoint_face_multiple(ckpt, args.variant))
    from pager.cli.common import check_depth_scale_option

    check_depth_scale_option(ckpt, mods, args.depth_scale, writes_png=args.depth_png, why_not="--depth_png is not given")
    passthrough = {n: getattr(args, n) for n in PIPELINE_PASS_THROUGH if getattr(args, n, None) is not None}
    opts = VideoOptions(
        modalities=tuple(mods), batch_size=args.batch_size, face_size=args.face_size, output_height=args.output_height,
        alignment=args.alignment, filter_strength=args.temporal_filter, tau=args.tau,
        motion_compensation=args.motion_compensation, causal_filter=args.causal_filter, depth_png=args.depth_png, depth_scale=args.depth_scale,
        pointcloud_every=args.pointcloud_every, pointcloud_format=args.pointcloud_format, videos=not args.no_video,
        keep_arrays=not args.no_arrays, video_ext=f".{args.video_format}", pipeline_kwargs=passthrough,
    )
    if args.output_height is not None and args.output_height < 1:
        raise ValueError(f"--output_height must be positive, got {args.output_height}")
    width = 2 * args.output_height if args.output_height else source.size[1]
    if args.stitching == "reference" and width % 4:
        raise ValueError(f"--stitching reference needs an output width that is a multiple of 4; the frames give {width} "
                         "(pass an --output_height that does, or use --stitching exact)")
    out_dir = Path(args.out)
    checkpoint = {"checkpoint_path": args.checkpoint_path, "variant": args.variant, "dtype": args.dtype}
    done, complete = check_outputs(out_dir, source, opts, checkpoint, args.overwrite)
    if complete:
        print(f"pager video: {out_dir} already holds the complete result of this run ({len(source)} frames); "
              "nothing to do (--overwrite recomputes it)")
        return 0
    if done:
        logger.info("resuming %s after frame %d of %d", out_dir, done, len(source))
    from pager.pipeline import PagerPipeline

    pipe = PagerPipeline.from_pretrained(ckpt, variant=args.variant, torch_dtype=args.dtype, device=args.device,
                                         allow_pickle=args.allow_pickle, enable_xformers=args.enable_xformers)
    pipe.model.optimize(channels_last=args.channels_last, compile=args.compile)
    pipe.model.enable_tiled_vae(args.tiled_vae)
    info = process_video(pipe, source, out_dir, opts, done=done, checkpoint=checkpoint, progress=not args.no_progress)
    fps = info.get("frames_per_second")
    print(f"pager video: {len(source)} frames of {args.input} -> {out_dir}"
          + (f" ({fps:.2f} frames/s)" if fps else ""))
    return 0
