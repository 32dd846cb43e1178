"""``pager predict IMAGE_OR_FOLDER... --out DIR``: depth / normals of your own panoramas.

For every input image ``<stem>`` it writes, atomically, into ``--out``:

* ``<stem>_depth.png``     depth colormap (Spectral, near = red; clipped at the 99th percentile; grey = invalid)
* ``<stem>_depth16.png``   16-bit depth, ``value = round(depth * depth_scale)``; by default the finest of 1000 (mm for
  metric models), 500, 200, ... steps per unit that holds the checkpoint's ``max_depth``
  (:func:`pager.export.depth_png_scale`), so no prediction clips; relative-depth models store unit-free values;
  the PNG's ``pager:depth_unit`` and ``pager:depth_scale`` say which unit and scale; 0 = invalid)
* ``<stem>_normals.png``   normals as RGB, ``(n + 1) / 2`` with x forward, y up, z right
* ``<stem>.npz``           ``depth [H, W]`` (metres, or relative for non-metric checkpoints), ``depth_mask``,
  ``normals [H, W, 3]`` (unit, PaGeR world frame), ``normals_mask``, ``rgb [H, W, 3]`` uint8, and
  ``metric_depth`` / ``min_depth`` / ``max_depth`` scalars, and the processing options ``stitching`` and
  ``seam_blend``

Existing files are not overwritten unless ``--overwrite`` is given; ``--skip_existing`` skips the inputs whose
files all exist (an interrupted run continues where it stopped; the ``.npz`` is written last, each file atomically,
so an input cut off half-way lacks it and is predicted again, replacing its partial files). Several checkpoints can be combined:
``--checkpoint_path prs-eth/PaGeR-depth prs-eth/PaGeR-normals`` (each checkpoint's config says its modality).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``pager predict``'s arguments on ``parser``."""
    parser.add_argument("inputs", nargs="+", help="panorama files and/or folders of panoramas")
    parser.add_argument("--out", required=True, help="output folder")
    from pager.cli.common import add_model_options

    add_model_options(parser, unit="panoramas")
    parser.add_argument("--depth_scale", type=float, default=None,
                        help="16-bit PNG steps per depth unit (default: the finest of 1000 (millimetres for metric "
                             "models), 500, 200, 100, ... that holds the checkpoint's max_depth; stored in the PNG)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--skip_existing", action="store_true",
                        help="skip inputs whose output files all exist (continue an interrupted run); an input with "
                             "only some of its files (cut off half-way) is predicted again")
    parser.add_argument("--normalize_input", action="store_true",
                        help="map float images with values outside [0, 1] (float TIFF, HDR/EXR) linearly to [0, 1] "
                             "(a warning names each); without it they are refused")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pager predict`` sub-command."""
    parser = subparsers.add_parser("predict", help="predict depth/normals for your own panoramas",
                                   description=__doc__.split("\n\n")[0])
    return add_arguments(parser)


def collect_images(inputs: Sequence[str]) -> List[Path]:
    """Expand files and folders (their image files, sorted) into a list; missing paths raise."""
    from pager.io_utils import IMAGE_SUFFIXES

    out: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    unique: Dict[str, Path] = {}
    for p in out:  # a file named twice (itself and through its folder) is predicted once
        unique.setdefault(os.path.realpath(p), p)
    if len(unique) < len(out):
        logger.info("%d input(s) named more than once are predicted once", len(out) - len(unique))
    return list(unique.values())


def output_stems(paths: Sequence[Path]) -> List[str]:
    """Output name stems, unique within the run (see :func:`pager.io_utils.unique_stems`)."""
    from pager.io_utils import unique_stems

    return unique_stems(paths)


def planned_files(stem: str, out_dir: Path, modalities: Sequence[str]) -> List[Path]:
    files = [out_dir / f"{stem}.npz"]
    if "depth" in modalities:
        files += [out_dir / f"{stem}_depth.png", out_dir / f"{stem}_depth16.png"]
    if "normals" in modalities:
        files.append(out_dir / f"{stem}_normals.png")
    return files


def write_outputs(stem: str, out_dir: Path, result: Dict[str, Any], meta: Dict[str, Any],
                  depth_scale: Optional[float] = None) -> List[Path]:
    """Write one panorama's files (see the module docstring); returns the paths. ``depth_scale=None``: the
    finest PNG scale that holds ``meta["max_depth"]`` (:func:`pager.export.depth_png_scale`)."""
    from pager.export import colorize_depth, depth_png_scale, normals_to_rgb, save_depth_png16, save_image, save_npz

    written: List[Path] = []
    arrays: Dict[str, Any] = {"rgb": result["rgb"], "stitching": np.str_(meta.get("stitching", "exact")),
                              "seam_blend": np.bool_(meta.get("seam_blend", False))}
    if result.get("depth") is not None:
        depth, mask = result["depth"], result["depth_mask"]
        written.append(save_image(out_dir / f"{stem}_depth.png", colorize_depth(depth, mask)))
        if depth_scale is None:
            depth_scale = depth_png_scale(meta["max_depth"])
        written.append(save_depth_png16(out_dir / f"{stem}_depth16.png", depth, scale=depth_scale, mask=mask,
                                        unit="metres" if meta.get("metric_depth") else "relative"))
        arrays.update(depth=depth, depth_mask=mask, metric_depth=np.bool_(meta.get("metric_depth", False)),
                      min_depth=np.float32(meta.get("min_depth", 0.0)), max_depth=np.float32(meta.get("max_depth", 0.0)),
                      log_scale=np.bool_(meta.get("log_scale", True)))
    if result.get("normals") is not None:
        normals, nmask = result["normals"], result["normals_mask"]
        written.append(save_image(out_dir / f"{stem}_normals.png", normals_to_rgb(np.moveaxis(normals, -1, 0), nmask)))
        arrays.update(normals=normals, normals_mask=nmask)
    written.insert(0, save_npz(out_dir / f"{stem}.npz", **arrays))
    return written


def run(args: argparse.Namespace) -> int:
    """Run ``pager predict``; returns the exit code."""
    from tqdm.auto import tqdm

    from pager.model.pager_model import iter_modalities
    from pager.pipeline import PagerPipeline

    from pager.io_utils import check_outputs
    from pager.model.loading import (check_face_size_option, checkpoint_face_multiple, checkpoint_modalities,
                                     combine_checkpoints)

    images = collect_images(args.inputs)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.stitching == "reference" and args.output_height and (2 * args.output_height) % 4:
        raise ValueError(f"--stitching reference needs an output width that is a multiple of 4; --output_height "
                         f"{args.output_height} gives {2 * args.output_height}")
    source: Any = combine_checkpoints(args.checkpoint_path or [])
    # everything about the outputs is checked before the model is loaded (only config.yaml files are read)
    available = checkpoint_modalities(source)
    wanted = iter_modalities(args.modalities) if args.modalities else available
    missing = [m for m in wanted if m not in available]
    if missing:
        raise ValueError(f"--modalities {missing}: the checkpoint(s) predict only {list(available)}")
    from pager.cli.common import check_depth_scale_option

    check_depth_scale_option(source, wanted, args.depth_scale)
    check_face_size_option(args.face_size, checkpoint_face_multiple(source, args.variant))
    stems = output_stems(images)
    total = len(images)
    if args.skip_existing and args.overwrite:
        raise ValueError("--skip_existing and --overwrite contradict each other; pass one of them")
    if args.skip_existing:
        done = [all(f.is_file() for f in planned_files(s, out_dir, wanted)) for s in stems]
        partial = [f for s, d in zip(stems, done) if not d for f in planned_files(s, out_dir, wanted) if f.exists()]
        images = [p for p, d in zip(images, done) if not d]
        stems = [s for s, d in zip(stems, done) if not d]
        if sum(done):
            logger.info("--skip_existing: %d of %d input(s) already have all their files in %s", sum(done), total, out_dir)
        if partial:
            logger.warning("--skip_existing: replacing %d file(s) of input(s) cut off half-way: %s", len(partial),
                           ", ".join(str(f) for f in partial[:5]) + (" ..." if len(partial) > 5 else ""))
        if not images:
            logger.info("nothing to do: every input's files exist in %s", out_dir)
            return 0
    check_outputs([f for s in stems for f in planned_files(s, out_dir, wanted)],
                  overwrite=args.overwrite or args.skip_existing, option="--out")
    from pager.pipeline import load_rgb

    for path in images:  # every input decodes (finite, in range, not a decompression bomb) before the model loads
        width = load_rgb(path, str(path), normalize=args.normalize_input, keep_uint8=True).shape[1]
        if args.stitching == "reference" and not args.output_height and width % 4:
            raise ValueError(f"{path}: --stitching reference needs an output width that is a multiple of 4, this "
                             f"image is {width} wide; pass an even --output_height or use --stitching exact")
    pipe = PagerPipeline.from_pretrained(source, variant=args.variant, torch_dtype=args.dtype, device=args.device,
                                         allow_pickle=args.allow_pickle, enable_xformers=args.enable_xformers)
    pipe.model.optimize(channels_last=args.channels_last, compile=args.compile)
    pipe.model.enable_tiled_vae(args.tiled_vae)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(images), desc="pager predict", unit="pano", disable=args.no_progress)
    try:
        _predict_all(args, pipe, images, stems, out_dir, wanted, bar, counter := [0])
    except KeyboardInterrupt as exc:
        bar.close()
        written = counter[0] + (total - len(images))
        raise KeyboardInterrupt(f"{written} of {total} panorama(s) written to {out_dir}; rerun with --skip_existing "
                                "to continue") from exc
    bar.close()
    logger.info("wrote predictions of %d panorama(s) to %s", len(images), out_dir)
    return 0


def _predict_all(args: argparse.Namespace, pipe: Any, images: List[Path], stems: List[str], out_dir: Path,
                 wanted: Sequence[str], bar: Any, counter: List[int]) -> None:
    """Predict and write every input in batches; ``counter[0]`` counts the inputs whose files are all written."""
    for start in range(0, len(images), args.batch_size):
        chunk = images[start:start + args.batch_size]
        out = pipe([str(p) for p in chunk], modalities=wanted, face_size=args.face_size, batch_size=len(chunk),
                   output_height=args.output_height, show_progress=False, normalize_input=args.normalize_input,
                   stitching=args.stitching, seam_blend=args.seam_blend)
        for k, path in enumerate(chunk):
            result = {key: (getattr(out, key)[k] if getattr(out, key) is not None else None)
                      for key in ("depth", "depth_mask", "normals", "normals_mask", "rgb")}
            files = write_outputs(stems[start + k], out_dir, result, out.metadata[k], args.depth_scale)
            counter[0] += 1
            logger.debug("%s -> %s", path, ", ".join(f.name for f in files))
        del out, result  # one batch's outputs in memory at a time
        bar.update(len(chunk))
