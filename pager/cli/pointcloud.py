"""``pager pointcloud`` / ``generate_point_cloud.py``: coloured ERP point clouds as GLB or PLY.

Two modes:

* one panorama: ``pager pointcloud IMAGE --out scene.glb [--checkpoint_path CKPT] [--max_points N]``
  runs the model (:class:`pager.pipeline.PagerPipeline`) and writes one point cloud;
* saved predictions (as in the original README): ``--depth_path`` (and ``--normals_path``) point at the
  results of ``inference.py --generate_eval``; every ``eval/<id>.npz`` (``arr_0``: depth ``[H, W]`` in
  metres; normals ``[3, H, W]`` or ``[H, W, 3]``) becomes ``<out>/<id>.glb``. RGB colours come from the
  dataset's test split (``--data_path``/``--dataset``) or, without ``--data_path``, from an ``rgb`` array in
  the npz or a ``<id>.png``/``<id>.jpg`` beside it. Missing predictions are reported by name and make
  the exit code 1 (the others are still written).

Pixels that the prediction marks invalid (its ``mask``: sky and depths saturated at the checkpoint's range
ends, degenerate normals; in saved predictions the ``mask`` array of our ``inference.py``) are left out unless
``--keep_invalid``; flying pixels (points smeared between a near and a far surface at depth edges, see
:func:`pager.export.pointcloud.flying_pixel_mask`) unless ``--keep_flying_pixels``.

The prediction folder may be given as the results folder (``<path>/<dataset>/eval/`` is used), the
dataset folder (``<path>/eval/``) or the ``eval`` folder itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pager.config_schema import SCENES

logger = logging.getLogger(__name__)

RGB_SIDE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the point-cloud arguments (shared by ``pager pointcloud`` and ``generate_point_cloud.py``)."""
    parser.add_argument("image", nargs="?", default=None,
                        help="one panorama to predict and back-project (omit to convert saved predictions)")
    parser.add_argument("--out", default=None,
                        help="output file (with IMAGE; default <image stem>.<format>) or output folder "
                             "(with --depth_path; default <eval folder>/../<color_modality>_point_clouds)")
    parser.add_argument("--format", choices=("glb", "ply"), default=None,
                        help="file format (default: the --out suffix, else glb)")
    parser.add_argument("--color_modality", choices=("rgb", "normals", "normal"), default="rgb",
                        help="colour the points by the RGB image or by the predicted normals")
    parser.add_argument("--max_points", type=int, default=None,
                        help="subsample uniformly on the sphere to at most this many points (default: keep all)")
    parser.add_argument("--max_depth", type=float, default=None,
                        help="drop points farther than this many metres (e.g. sky)")
    parser.add_argument("--edge_threshold", type=float, default=None,
                        help="flying pixels: only where the depth is steep, relative depth change per radian to a "
                             "neighbour above this (default 1.7, about 60 deg incidence)")
    parser.add_argument("--edge_tolerance", type=float, default=None,
                        help="flying pixels: relative inverse-depth disagreement with the surfaces on both sides "
                             "(default 0.1)")
    parser.add_argument("--edge_window", type=float, default=None,
                        help="flying pixels: how far (degrees) to look for the surfaces on each side; edges smeared "
                             "over about this much are caught (default 4.2, i.e. 6 px at 512 px width)")
    parser.add_argument("--keep_flying_pixels", action="store_true", help="do not remove flying (depth-edge) pixels")
    parser.add_argument("--keep_invalid", action="store_true",
                        help="keep pixels the prediction marks invalid (sky, saturated at the depth range ends, "
                             "degenerate normals); by default they are left out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsampling")
    parser.add_argument("--overwrite", action="store_true", help="replace existing point-cloud files")
    parser.add_argument("--skip_existing", action="store_true",
                        help="skip samples (or IMAGE) whose point-cloud file exists: continue an interrupted run "
                             "(each file is written atomically, so an existing one is complete)")
    parser.add_argument("--normalize_input", action="store_true",
                        help="map float images with values outside [0, 1] (float TIFF, HDR/EXR) linearly to [0, 1] "
                             "(with a warning); without it they are refused")
    # saved predictions
    parser.add_argument("--depth_path", default=None, help="results folder holding <dataset>/eval/<id>.npz depth predictions")
    parser.add_argument("--normals_path", "--normal_path", dest="normals_path", default=None,
                        help="results folder holding the normals predictions (same layout)")
    parser.add_argument("--data_path", default=None, help="dataset root (RGB colours and ids of the test split)")
    parser.add_argument("--dataset", default=None, help="dataset name, e.g. PanoInfinigen, Matterport3D360, Synthetic")
    parser.add_argument("--scenes", default="both", choices=SCENES, help="scene type of the dataset")
    parser.add_argument("--use_dataset_mask", action="store_true",
                        help="also drop pixels outside the dataset's ground-truth valid mask (as the reference did)")
    # one panorama
    parser.add_argument("--checkpoint_path", default=None,
                        help="checkpoint (folder or hub id) for IMAGE; default: the embedded default model")
    parser.add_argument("--normals_checkpoint_path", default=None,
                        help="a separate normals checkpoint for IMAGE (needed for --color_modality normals "
                             "unless --checkpoint_path provides normals)")
    from pager.cli.common import add_model_options

    add_model_options(parser, ("enable_xformers", "device", "face_size", "output_height"))
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pager pointcloud`` sub-command."""
    parser = subparsers.add_parser(
        "pointcloud",
        help="turn a panorama (or predictions) into a GLB/PLY point cloud",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    return add_arguments(parser)


def _cloud_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    from pager.export.pointcloud import DEFAULT_EDGE_THRESHOLD, DEFAULT_EDGE_TOLERANCE, DEFAULT_EDGE_WINDOW_DEG

    if args.max_points is not None and args.max_points <= 0:
        raise ValueError(f"--max_points must be positive, got {args.max_points}")
    for name in ("edge_threshold", "edge_tolerance", "edge_window"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return dict(
        max_points=args.max_points,
        remove_flying_pixels=not args.keep_flying_pixels,
        edge_threshold=pick(args.edge_threshold, DEFAULT_EDGE_THRESHOLD),
        edge_tolerance=pick(args.edge_tolerance, DEFAULT_EDGE_TOLERANCE),
        edge_window_deg=pick(args.edge_window, DEFAULT_EDGE_WINDOW_DEG),
        max_depth=args.max_depth,
        seed=args.seed,
    )


def _and_masks(*masks: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """AND of the given masks (None entries skipped); None when none is given."""
    given = [m for m in masks if m is not None]
    return np.logical_and.reduce(given) if given else None


def _modality(args: argparse.Namespace) -> str:
    return "normals" if args.color_modality in ("normals", "normal") else "rgb"


def find_eval_dir(path: str, dataset: Optional[str], what: str) -> Path:
    """The folder holding ``<id>.npz`` predictions under ``path`` (``<path>/<dataset>/eval``, ``<path>/eval`` or ``path``)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    candidates = ([root / dataset / "eval"] if dataset else []) + [root / "eval", root]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.npz")):
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no .npz predictions for {what} found (looked in {tried}); run inference.py --generate_eval first")


def _load_array(path: Path, what: str) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    from pager.export.files import load_npz

    data = load_npz(path)
    if "arr_0" not in data:
        raise ValueError(f"{path}: expected the prediction as 'arr_0' ({what}), found keys {sorted(data)}")
    return data["arr_0"], data


def _depth_2d(a: np.ndarray, path: Path) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{path}: depth 'arr_0' must be [H, W] (or [1, H, W]), got shape {a.shape}")
    return a


def _saved_mask(data: Dict[str, np.ndarray], hw: Tuple[int, int], path: Path) -> Optional[np.ndarray]:
    """The prediction's validity mask saved beside ``arr_0`` (``mask``, True = valid), or None."""
    if "mask" not in data:
        return None
    m = np.asarray(data["mask"])
    if m.size != hw[0] * hw[1]:
        raise ValueError(f"{path}: 'mask' must have {hw[0]}x{hw[1]} pixels like the depth, got shape {m.shape}")
    return m.astype(bool).reshape(hw)


def _normals_hw3(a: np.ndarray, hw: Tuple[int, int], path: Path) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[1:] == hw:
        return np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 3 and a.shape[:2] == hw:
        return a
    raise ValueError(f"{path}: normals 'arr_0' must be [3, H, W] or [H, W, 3] with (H, W) = {hw}, got shape {a.shape}")


def _resize_rgb(rgb: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] (bilinear)."""
    if rgb.shape[:2] == hw:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.BILINEAR))


def _side_rgb(eval_dir: Path, sample_id: str, data: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
    """RGB uint8 [H, W, 3] from an ``rgb`` npz entry or a side image; None if there is none."""
    from pager.io_utils import image_to_float, read_image

    if "rgb" in data:
        a = np.asarray(data["rgb"])
        if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
            a = np.moveaxis(a, 0, -1)
        if a.dtype != np.uint8:
            a = a.astype(np.float32)
            if a.min() < -1e-3:  # the dataset convention [-1, 1]
                a = (a + 1.0) / 2.0
            a = np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)
        return a
    for suffix in RGB_SIDE_SUFFIXES:
        p = eval_dir / f"{sample_id}{suffix}"
        if p.is_file():
            return np.rint(image_to_float(read_image(p, what="RGB image"), name=str(p)) * 255).astype(np.uint8)
    return None


POINT_CLOUD_FORMATS = ("glb", "ply")


def _out_path(out_dir: Path, sample_id: str, fmt: str) -> Path:
    return out_dir / f"{sample_id}.{fmt}"


def cloud_file(out: Optional[str], image: Path, fmt: Optional[str]) -> Tuple[Path, str]:
    """``(path, format)`` of the one-panorama mode's output, checked before any work.

    ``--out`` may be a file named ``.glb``/``.ply`` (the format follows, or must agree with ``--format``),
    a name without a suffix (the format's suffix is added) or an existing folder (``<folder>/<stem>.<format>``).
    Any other suffix (``--out notes.txt``) is refused: a point cloud is never written under another file type.
    """
    if fmt is not None and fmt not in POINT_CLOUD_FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(POINT_CLOUD_FORMATS)}")
    if out is None:
        fmt = fmt or "glb"
        return Path(f"{image.stem}.{fmt}"), fmt
    path = Path(out)
    if path.is_dir() or out.endswith(("/", "\\")):
        fmt = fmt or "glb"
        return path / f"{image.stem}.{fmt}", fmt
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        fmt = fmt or "glb"
        return path.with_name(f"{path.name}.{fmt}"), fmt
    if suffix not in POINT_CLOUD_FORMATS:
        raise ValueError(f"--out {out}: '.{suffix}' is not a point-cloud file; name it .glb or .ply")
    if fmt is not None and fmt != suffix:
        raise ValueError(f"--out {out} is a .{suffix} file but --format is {fmt}; make them agree")
    return path, suffix


def _same_aspect(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    """Same width:height ratio up to one pixel of rounding (a resize keeps the ERP geometry)."""
    return abs(a[1] * b[0] - b[1] * a[0]) <= max(a[0], b[0])


def run_predictions(args: argparse.Namespace) -> int:
    """Saved-predictions mode; returns 0, or 1 when some predictions/colours were missing."""
    kwargs = _cloud_kwargs(args)
    mod = _modality(args)
    fmt = args.format or "glb"
    depth_dir = find_eval_dir(args.depth_path, args.dataset, "depth")
    normals_dir = None
    if args.normals_path is not None:
        normals_dir = find_eval_dir(args.normals_path, args.dataset, "normals")
    elif mod == "normals":
        raise ValueError("--color_modality normals needs --normals_path (the normals predictions)")
    out_dir = Path(args.out) if args.out else depth_dir.parent / f"{mod}_point_clouds"
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; with --depth_path it names the output folder")
    if out_dir.suffix.lower().lstrip(".") in POINT_CLOUD_FORMATS:
        raise ValueError(f"--out {out_dir}: with --depth_path, --out is a folder (one file per sample), not a "
                         f"{out_dir.suffix} file")
    if fmt not in POINT_CLOUD_FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(POINT_CLOUD_FORMATS)}")

    dataset = None
    if args.data_path is not None:
        if not args.dataset:
            raise ValueError("--data_path needs --dataset (the dataset name)")
        from pager.data import build_dataset

        dataset = build_dataset(args.dataset, args.data_path, split="test", scenes=args.scenes)
        ids = [r.id for r in dataset.records]
        if not ids:
            raise FileNotFoundError(f"dataset {args.dataset} in {args.data_path} has no test samples")
    else:
        ids = sorted(p.stem for p in depth_dir.glob("*.npz"))
    from pager.io_utils import check_outputs

    todo = list(range(len(ids)))
    if args.skip_existing:
        todo = [i for i in todo if not _out_path(out_dir, ids[i], fmt).is_file()]
        if len(todo) < len(ids):
            logger.info("--skip_existing: %d of %d point cloud(s) already exist in %s", len(ids) - len(todo), len(ids), out_dir)
    check_outputs([_out_path(out_dir, ids[i], fmt) for i in todo], overwrite=args.overwrite, what="point cloud",
                  option="--out")

    missing: List[str] = []
    written = 0
    try:
        written = _convert_predictions(args, ids, todo, depth_dir, normals_dir, out_dir, fmt, dataset, missing, kwargs)
    except KeyboardInterrupt as exc:
        done = len(ids) - len(todo) + getattr(exc, "written", 0)
        raise KeyboardInterrupt(f"{done} of {len(ids)} point cloud(s) written to {out_dir}; rerun with "
                                "--skip_existing to continue") from exc
    skipped = len(ids) - len(todo)
    print(f"wrote {written} point cloud(s) to {out_dir}" + (f" ({skipped} existed already)" if skipped else ""))
    if missing:  # one line per sample, naming its file and the problem
        print(f"{len(missing)} sample(s) could not be converted:", file=sys.stderr)
        for line in missing:
            print(f"  {' '.join(line.split())}", file=sys.stderr)
        return 1
    return 0


def _check_skip_options(args: argparse.Namespace) -> None:
    if args.skip_existing and args.overwrite:
        raise ValueError("--skip_existing and --overwrite contradict each other; pass one of them")


class _SampleProblem(Exception):
    """A sample of the saved-predictions mode that cannot be converted (the message names its file)."""


def _convert_predictions(args: argparse.Namespace, ids: List[str], todo: List[int], depth_dir: Path,
                         normals_dir: Optional[Path], out_dir: Path, fmt: str, dataset: Any, missing: List[str],
                         kwargs: Dict[str, Any]) -> int:
    """Write the point clouds of ``ids[i]`` for ``i`` in ``todo``; each sample that cannot be converted adds one line
    to ``missing``. Returns the number of files written; a ``KeyboardInterrupt`` carries it as ``.written``."""
    from tqdm.auto import tqdm

    from pager.export.pointcloud import save_point_cloud

    written = 0
    state = {"warned_no_mask": False}
    try:
        for index in tqdm(todo, desc="point clouds", unit="pano"):
            try:
                cloud = _sample_cloud(args, index, ids[index], depth_dir, normals_dir, dataset, kwargs, state)
            except _SampleProblem as exc:
                missing.append(str(exc))
                continue
            save_point_cloud(_out_path(out_dir, ids[index], fmt), cloud, fmt)
            written += 1
    except KeyboardInterrupt as exc:
        exc.written = written
        raise
    return written


def _load_prediction(sample_id: str, depth_dir: Path, normals_dir: Optional[Path]) -> tuple:
    """``(depth [H, W], npz arrays of the depth file, valid mask or None, normals [H, W, 3] or None)`` of one sample."""
    depth_file = depth_dir / f"{sample_id}.npz"
    if not depth_file.is_file():
        raise _SampleProblem(f"depth prediction {depth_file}")
    try:
        depth_raw, depth_data = _load_array(depth_file, "depth")
        depth = _depth_2d(depth_raw, depth_file)
        valid = _saved_mask(depth_data, depth.shape, depth_file)
    except ValueError as exc:  # unreadable (corrupt npz, pickled object), not [H, W], or a mis-shaped mask
        raise _SampleProblem(str(exc)) from exc
    normals = None
    if normals_dir is not None:
        nfile = normals_dir / f"{sample_id}.npz"
        if not nfile.is_file():
            raise _SampleProblem(f"normals prediction {nfile}")
        try:
            n_arr, n_data = _load_array(nfile, "normals")
            normals = _normals_hw3(n_arr, depth.shape, nfile)
            valid = _and_masks(valid, _saved_mask(n_data, depth.shape, nfile))
        except ValueError as exc:
            raise _SampleProblem(str(exc)) from exc
    return depth, depth_data, valid, normals


def _colors_and_dataset_mask(args: argparse.Namespace, index: int, sample_id: str, depth_dir: Path,
                             depth_data: Dict[str, np.ndarray], hw: Tuple[int, int], dataset: Any) -> tuple:
    """``(colours uint8 [H, W, 3] or None, the dataset's valid mask or None)`` of one sample."""
    mod = _modality(args)
    depth_file = depth_dir / f"{sample_id}.npz"
    colors = dataset_mask = None
    if dataset is not None and (mod == "rgb" or args.use_dataset_mask):
        sample = dataset[index]
        if sample["id"] != sample_id:
            raise ValueError(f"dataset returned sample {sample['id']} for {sample_id}")
        rgb = np.rint((sample["rgb"].permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        if tuple(rgb.shape[:2]) != tuple(hw):  # the evaluation's check: predictions are at the dataset's size
            raise _SampleProblem(f"{depth_file}: depth size {tuple(hw)} (H, W) differs from the dataset image "
                                 f"{tuple(rgb.shape[:2])} (transposed or resized prediction?)")
        colors = rgb
        if args.use_dataset_mask:
            dataset_mask = sample["mask"][0].numpy()
            if dataset_mask.shape != hw:
                import torch
                import torch.nn.functional as F

                dataset_mask = F.interpolate(torch.from_numpy(dataset_mask)[None, None].float(), size=hw,
                                             mode="nearest")[0, 0].numpy() > 0.5
    elif mod == "rgb":
        side = _side_rgb(depth_dir, sample_id, depth_data)
        if side is None:
            raise _SampleProblem(f"RGB for {sample_id} (give --data_path/--dataset, or put an 'rgb' array in "
                                 f"{depth_file} or {sample_id}.png/.jpg beside it)")
        if not _same_aspect(tuple(side.shape[:2]), tuple(hw)):
            raise _SampleProblem(f"{depth_file}: depth size {tuple(hw)} (H, W) does not match its RGB image "
                                 f"{tuple(side.shape[:2])} (transposed prediction?)")
        colors = _resize_rgb(side, hw)
    if mod == "normals":
        colors = None  # coloured by the normals
    return colors, dataset_mask


def _sample_cloud(args: argparse.Namespace, index: int, sample_id: str, depth_dir: Path, normals_dir: Optional[Path],
                  dataset: Any, kwargs: Dict[str, Any], state: Dict[str, bool]) -> Any:
    """The point cloud of one saved prediction; ``_SampleProblem`` when it cannot be made."""
    from pager.export.pointcloud import erp_point_cloud

    depth, depth_data, valid, normals = _load_prediction(sample_id, depth_dir, normals_dir)
    if valid is None and not args.keep_invalid and not state["warned_no_mask"]:
        logger.warning("%s has no validity 'mask' (not written by our inference.py): invalid pixels (sky, "
                       "saturated) cannot be told apart and are kept; --max_depth drops far ones",
                       depth_dir / f"{sample_id}.npz")
        state["warned_no_mask"] = True
    colors, dataset_mask = _colors_and_dataset_mask(args, index, sample_id, depth_dir, depth_data, depth.shape, dataset)
    mask = _and_masks(None if args.keep_invalid else valid, dataset_mask)
    unit = "unknown"  # inference.py records metric_depth in its npz; older files do not
    if "metric_depth" in depth_data:
        unit = "metres" if bool(np.asarray(depth_data["metric_depth"])) else "relative"
    cloud = erp_point_cloud(depth, colors, mask=mask, normals=normals, unit=unit, **kwargs)
    if len(cloud) == 0:
        raise _SampleProblem(f"points for {sample_id} (every pixel was invalid or dropped)")
    return cloud


def run_image(args: argparse.Namespace) -> int:
    """One-panorama mode: predict depth (and normals) with the pipeline and write one point cloud."""
    from pager.export.pointcloud import erp_point_cloud, save_point_cloud

    image = Path(args.image)
    if not image.is_file():
        raise FileNotFoundError(f"panorama not found: {image}")
    kwargs = _cloud_kwargs(args)
    mod = _modality(args)
    out, fmt = cloud_file(args.out, image, args.format)
    if args.skip_existing and out.is_file():
        print(f"{out} exists (--skip_existing): nothing to do")
        return 0
    from pager.io_utils import check_outputs

    check_outputs([out], overwrite=args.overwrite, what="point cloud", option="--out")
    from pager.pipeline import PagerPipeline, load_rgb  # lazy: the model stack is heavy

    load_rgb(image, str(image), normalize=args.normalize_input)  # the input decodes before the model loads

    source: Any = args.checkpoint_path or "default"
    if args.normals_checkpoint_path:
        source = {"depth": source, "normals": args.normals_checkpoint_path}
    from pager.model.loading import check_face_size_option, checkpoint_face_multiple

    check_face_size_option(args.face_size, checkpoint_face_multiple(source))
    pipe = PagerPipeline.from_pretrained(source, device=args.device, enable_xformers=args.enable_xformers)
    if "depth" not in pipe.modalities:
        raise ValueError(f"checkpoint {source!r} predicts {list(pipe.modalities)}; a point cloud needs depth")
    if mod == "normals" and "normals" not in pipe.modalities:
        raise ValueError("--color_modality normals needs a normals model: pass --normals_checkpoint_path")
    mods = ("depth", "normals") if "normals" in pipe.modalities else ("depth",)
    result = pipe(str(image), modalities=mods, face_size=args.face_size, output_height=args.output_height,
                  normalize_input=args.normalize_input)
    depth = result.depth[0]
    mask = None if args.keep_invalid else result.mask[0]  # AND of the depth and normals masks
    normals = result.normals[0] if result.normals is not None else None
    colors = result.rgb[0] if mod == "rgb" else None
    unit = "metres" if result.metadata[0].get("depth_unit", "m") == "m" else "relative"
    cloud = erp_point_cloud(depth, colors, mask=mask, normals=normals, unit=unit, **kwargs)
    if len(cloud) == 0:
        raise ValueError(f"{image}: no valid point left (every pixel was invalid, too far or a flying pixel; "
                         "see --keep_invalid, --max_depth, --keep_flying_pixels)")
    save_point_cloud(out, cloud, fmt)
    print(f"wrote {len(cloud)} points to {out} (depth unit: {unit})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the one-panorama or the saved-predictions mode."""
    _check_skip_options(args)
    if args.image is not None:
        if args.depth_path is not None:
            raise ValueError("give either IMAGE or --depth_path, not both")
        return run_image(args)
    if args.depth_path is None:
        raise ValueError("give a panorama IMAGE, or --depth_path with saved predictions (inference.py --generate_eval)")
    return run_predictions(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Stand-alone entry point (``generate_point_cloud.py``); errors become one line and exit code 2."""
    from pager.cli.main import run_script

    parser = add_arguments(argparse.ArgumentParser(
        prog="generate_point_cloud.py",
        description="Point clouds (GLB/PLY) from PaGeR predictions or from one panorama.",
    ))
    return run_script(parser, run, argv)