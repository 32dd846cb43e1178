"""``pager infer`` / ``python inference.py``: run a checkpoint over a dataset split (the original README's command).

Writes, for a checkpoint named ``<ckpt>`` (the last part of its path or repo id) and dataset ``<dataset>``::

    <results_path>/<ckpt>/<dataset>/example_images/<id>.jpg   every img_report_frequency-th sample:
                                                               RGB | prediction (or the prediction alone
                                                               with --pred_only); depth in the Spectral
                                                               colormap clipped at the 99th percentile
    <results_path>/<ckpt>/<dataset>/eval/<id>.npz              with --generate_eval: ``arr_0`` = the raw ERP
                                                               prediction at the dataset's resolution
                                                               (depth [H, W] in metres -- or relative units
                                                               for relative checkpoints --, normals [3, H, W]
                                                               unit vectors in PaGeR's world frame), plus
                                                               ``mask`` (the prediction's valid pixels),
                                                               ``stitching`` (the resampling used) and,
                                                               for depth, ``metric_depth`` (metres or relative)

Depth is decoded with the checkpoint's own depth range (never the dataset's) and masks are kept separate
from the predictions. Under ``accelerate launch --num_processes N`` (``--cpu`` for CPU processes) the samples
are split between the processes without padding, so every sample is written exactly once. Existing output
files are an error unless ``--overwrite`` is given; ``--skip_existing`` skips the samples whose files all exist
(continuing an interrupted run; each file is written atomically, so a sample cut off half-way lacks one and is
predicted again).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Model-loading options a user might try on the command line; the checkpoint's config.yaml wins (warning).
from pager.config import MODEL_LOADING_KEYS as IGNORED_MODEL_OPTIONS  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> Tuple[argparse.ArgumentParser, Any]:
    """Register the inference options: one per leaf of ``configs/inference.yaml`` plus a few flags."""
    from pager.config import add_config_arguments, load_config

    template = load_config(None, "inference.yaml")
    existing = {a.dest for a in parser._actions}
    if "config" not in existing:
        parser.add_argument("--config", "--configs", dest="config", default=None,
                            help="YAML config file (default: the packaged configs/inference.yaml)")
    add_config_arguments(parser, template, kind="inference")
    from pager.cli.common import add_model_options

    add_model_options(parser, ("variant", "allow_pickle"))
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--skip_existing", action="store_true",
                        help="skip samples whose output files all exist (continue an interrupted run)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--max_samples", type=int, default=None, help="stop after this many samples (quick checks)")
    from pager.config_schema import option_type

    group = parser.add_argument_group("model-loading options (ignored: the checkpoint's config.yaml decides)")
    for name in IGNORED_MODEL_OPTIONS:
        if name not in {a.dest for a in parser._actions}:
            group.add_argument(f"--{name}", type=option_type(name, "training"), default=None, help=argparse.SUPPRESS)
    return parser, template


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pager infer`` sub-command."""
    parser = subparsers.add_parser("infer", help="run a checkpoint over a dataset split (same as inference.py)",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser of ``inference.py``."""
    parser = argparse.ArgumentParser(prog="inference.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def resolve(args: argparse.Namespace) -> Any:
    """Config = packaged inference template < the ``--config`` YAML < command-line options.

    The ``--config`` file may be flat like ``configs/inference.yaml`` or sectioned like the training
    template ``configs/base.yaml`` (``data.dataset``, ``logging.img_report_frequency``, ...): leaves are
    matched by name.
    """
    from omegaconf import DictConfig, OmegaConf

    from pager.config import iter_leaves, load_config, resolve_config

    template = load_config(None, "inference.yaml")
    user, _ = resolve_config(args, template, default_config="inference.yaml")
    merged = OmegaConf.create(OmegaConf.to_container(template, resolve=False))
    for path, value in iter_leaves(user):
        if len(path) > 1 and path[-1] in merged and path[0] != "model":
            merged[path[-1]] = value
    for key in user.keys():
        value = user.get(key)
        if not isinstance(value, DictConfig):
            merged[str(key)] = value
    return merged


def checkpoint_name(source: Any) -> str:
    """``prs-eth/PaGeR-depth`` -> ``PaGeR-depth``; a folder -> its name."""
    return Path(str(source).rstrip("/\\")).name or str(source)


def split_indices(n: int, rank: int, world: int) -> List[int]:
    """Samples of process ``rank`` among ``world``: a strided split without padding (each sample once)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid process rank {rank} of {world}")
    return list(range(rank, n, world))


def _prediction_image(modality: str, pred: np.ndarray) -> np.ndarray:
    from pager.export import colorize_depth, normals_to_rgb

    if modality == "depth":
        return colorize_depth(pred, cmap="Spectral", percentile=99.0)
    return normals_to_rgb(pred)


def _rgb_uint8(rgb: Any) -> np.ndarray:
    """Dataset RGB ``[3, H, W]`` in [-1, 1] -> uint8 ``[H, W, 3]``."""
    arr = rgb.detach().float().cpu().numpy() if hasattr(rgb, "detach") else np.asarray(rgb, dtype=np.float32)
    return np.rint((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8).transpose(1, 2, 0)


def run(args: argparse.Namespace) -> int:
    """Run inference over the dataset; returns the exit code."""
    cfg = resolve(args)  # config errors are reported before the heavy imports below (torch, diffusers)
    overrides = {k: getattr(args, k) for k in IGNORED_MODEL_OPTIONS if getattr(args, k, None) is not None}
    freq = int(cfg.img_report_frequency or 0)
    if freq < 0:
        raise ValueError(f"--img_report_frequency must be >= 0 (0: no example images), got {freq}")
    if freq == 0 and not cfg.get("generate_eval"):
        raise ValueError("nothing would be written: --img_report_frequency 0 (no example images) without "
                         "--generate_eval (no eval/<id>.npz); pass one of them")
    batch_size = int(cfg.get("batch_size") or 1)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    stitching = str(cfg.get("stitching") or "exact")
    if stitching not in ("exact", "reference"):
        raise ValueError(f"--stitching must be 'exact' or 'reference', got {stitching!r}")

    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from pager.data import build_dataset
    from pager.export import mosaic, save_image, save_npz  # noqa: F401  (used by _write_chunk)
    from pager.model import Pager

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    want_cpu = (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        or str(cfg.get("device") or "").startswith("cpu")
        or (world > 1 and not torch.cuda.is_available())  # e.g. torchrun / accelerate --multi_gpu on a CPU machine
    )
    state = PartialState(cpu=want_cpu)
    device = torch.device(cfg.device) if cfg.get("device") else state.device
    ckpt = cfg.checkpoint_path if cfg.checkpoint_path else "default"
    # outputs are planned and checked before the model is loaded (only config.yaml files and the split are read)
    from pager.io_utils import check_outputs
    from pager.model.loading import checkpoint_modalities

    modalities = checkpoint_modalities(ckpt)
    from pager.model.loading import check_face_size_option, checkpoint_face_multiple

    check_face_size_option(int(cfg.face_size) if cfg.get("face_size") else None,
                           checkpoint_face_multiple(ckpt, args.variant), option="--face_size (face_size)")
    skip = bool(cfg.get("skip_bad_samples", False))
    # Inference needs no ground truth: only the RGB of each sample is read (RGB-only datasets work; a folder
    # of images is --dataset Images --data_path FOLDER).
    dataset = build_dataset(str(cfg.dataset), str(cfg.data_path), split=str(cfg.get("split") or "test"),
                            scenes=str(cfg.scenes), skip_bad_samples=skip, rgb_only=True)
    skipped_at_listing = int(getattr(dataset, "skipped", 0))
    n = len(dataset)
    if args.max_samples is not None:
        n = min(n, int(args.max_samples))
    ids = [str(dataset.records[i].id) for i in range(n)]
    names = {m: (checkpoint_name(ckpt) if ckpt != "default" else f"default-{m}") for m in modalities}
    if len(modalities) > 1 and ckpt != "default":
        names = {m: f"{checkpoint_name(ckpt)}-{m}" for m in modalities}
    roots = {m: Path(str(cfg.results_path)) / names[m] / str(cfg.dataset) for m in modalities}

    def targets(i: int, modality: str) -> List[Path]:
        out = []
        if cfg.generate_eval:
            out.append(roots[modality] / "eval" / f"{ids[i]}.npz")
        if freq and i % freq == 0:
            out.append(roots[modality] / "example_images" / f"{ids[i]}.jpg")
        return out

    todo = list(range(n))
    if args.skip_existing:
        if args.overwrite:
            raise ValueError("--skip_existing and --overwrite contradict each other; pass one of them")
        todo = [i for i in todo if not all(p.is_file() for m in modalities for p in targets(i, m))]
        if state.is_main_process and len(todo) < n:
            logger.info("--skip_existing: %d of %d sample(s) already have all their files", n - len(todo), n)
    # every sample of the split (not only this process's) must get its own files; all processes check
    # before any of them writes
    check_outputs([p for i in todo for m in modalities for p in targets(i, m)],
                  overwrite=args.overwrite or args.skip_existing, option="--results_path")
    if not todo:
        logger.info("nothing to do: every sample's files exist under %s", cfg.results_path)
        return 0
    mine = [todo[j] for j in split_indices(len(todo), state.process_index, state.num_processes)]
    state.wait_for_everyone()
    model = Pager.from_pretrained(ckpt, variant=args.variant, torch_dtype=cfg.get("dtype") or "float32", device=device,
                                  allow_pickle=args.allow_pickle, enable_xformers=bool(cfg.enable_xformers),
                                  overrides=overrides)
    model.optimize(channels_last=bool(cfg.get("channels_last")), compile=bool(cfg.get("compile")))
    model.enable_tiled_vae(bool(cfg.get("tiled_vae")) or bool(cfg.get("tiled_decoding")))
    if tuple(model.modalities) != tuple(modalities):
        raise ValueError(f"checkpoint {ckpt!r}: its config.yaml names {list(modalities)}, its weights {list(model.modalities)}")
    if state.is_main_process:
        for m, root in roots.items():
            logger.info("%s predictions of %d %s samples -> %s (%d process(es))", m, n, cfg.dataset, root, state.num_processes)
    face_size = int(cfg.face_size) if cfg.get("face_size") else None
    written = 0
    skipped: List[str] = []

    def load(i: int) -> Optional[dict]:
        """Sample ``i`` itself (never a substitute); ``None`` when it is bad and --skip_bad_samples is on."""
        try:
            return dataset.get_sample(i)
        except (OSError, ValueError, KeyError) as exc:
            if not skip:
                raise
            skipped.append(ids[i])
            logger.warning("skipping sample %s: %s", ids[i], exc)
            return None

    bar = tqdm(total=len(mine), desc=f"inference [{state.process_index}]", unit="pano",
               disable=args.no_progress or not state.is_local_main_process)
    done = [0]
    try:
        written = _predict_all(mine, batch_size, load, model, device, face_size, stitching, ids, roots, cfg, freq, bar,
                               done)
    except KeyboardInterrupt as exc:
        bar.close()
        raise KeyboardInterrupt(f"{done[0] + n - len(todo)} of {n} sample(s) predicted into {cfg.results_path}; rerun with "
                                "--skip_existing to continue") from exc
    bar.close()
    state.wait_for_everyone()
    total_skipped = len(skipped) + (skipped_at_listing if state.is_main_process else 0)
    if skip:
        logger.warning("process %d: skipped %d bad sample(s)%s", state.process_index, total_skipped,
                       (": " + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")) if skipped else "")
    logger.info("process %d of %d: %d sample(s), %d file(s) written", state.process_index, state.num_processes,
                len(mine) - len(skipped), written)
    if skip and state.is_main_process:
        print(f"inference: {total_skipped} bad sample(s) skipped" + (" on this process" if state.num_processes > 1 else ""))
    return 0


def _predict_all(mine: List[int], batch_size: int, load: Any, model: Any, device: Any, face_size: Optional[int],
                 stitching: str, ids: List[str], roots: dict, cfg: Any, freq: int, bar: Any, done: List[int]) -> int:
    """Predict and write the samples ``mine`` in batches; ``done[0]`` counts the samples finished (written or
    skipped as bad); returns the number of files written."""
    import torch

    written = 0
    for start in range(0, len(mine), batch_size):
        loaded = [(i, load(i)) for i in mine[start:start + batch_size]]
        loaded = [(i, s) for i, s in loaded if s is not None]
        if not loaded:
            bar.update(min(batch_size, len(mine) - start))
            done[0] += min(batch_size, len(mine) - start)
            continue
        # panoramas of different sizes (a folder of images) are predicted one size group at a time
        groups: dict = {}
        for i, s in loaded:
            groups.setdefault(tuple(s["rgb"].shape[-2:]), []).append((i, s))
        for (h, w), group in groups.items():
            chunk = [i for i, _ in group]
            samples = [s for _, s in group]
            rgb = torch.stack([s["rgb"] for s in samples]).to(device)
            with torch.inference_mode():
                pred = model.predict(rgb, face_size=face_size, output_size=(h, w), stitching=stitching,
                                     seam_blend=bool(cfg.get("seam_blend")))
            written += _write_chunk(chunk, samples, pred, model.modalities, ids, roots, cfg, freq, stitching,
                                    {m: bool(model.configs[m].metric_depth) for m in model.modalities},
                                    seam_blend=bool(cfg.get("seam_blend")))
        bar.update(min(batch_size, len(mine) - start))
        done[0] += min(batch_size, len(mine) - start)
    return written


def _write_chunk(chunk: List[int], samples: List[dict], pred: dict, modalities: Sequence[str], ids: List[str],
                 roots: dict, cfg: Any, freq: int, stitching: str, metric: dict, seam_blend: bool = False) -> int:
    """Write the eval npz / example images of one predicted chunk; returns the number of files written."""
    from pager.export import mosaic, save_image, save_npz

    written = 0
    for k, i in enumerate(chunk):
        sample_id = ids[i]
        for m in modalities:
            if m == "depth":
                arr, mask = pred["depth"][k].cpu().numpy(), pred["depth_mask"][k].cpu().numpy()
            else:
                arr, mask = pred["normals"][k].cpu().numpy(), pred["normals_mask"][k].cpu().numpy()
            if cfg.generate_eval:
                extra = {"metric_depth": np.bool_(metric[m])} if m == "depth" else {}
                save_npz(roots[m] / "eval" / f"{sample_id}.npz", arr_0=arr.astype(np.float32), mask=mask,
                         stitching=np.str_(stitching), seam_blend=np.bool_(seam_blend), **extra)
                written += 1
            if freq and i % freq == 0:
                image = _prediction_image(m, arr)
                if not cfg.pred_only:
                    image = mosaic([_rgb_uint8(samples[k]["rgb"]), image])
                save_image(roots[m] / "example_images" / f"{sample_id}.jpg", image)
                written += 1
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``inference.py``: errors become one line and exit code 2."""
    from pager.cli.main import run_script

    return run_script(build_parser(), run, argv)