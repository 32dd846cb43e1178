"""Runner of ``evaluation/video_evaluation.py``: accuracy and flicker of depth videos on sequences with true poses.

Sequences come from ``pager synth --sequence`` (:mod:`pager.data.synthetic.sequence`). Two modes:

* ``--pred_path P``: evaluate ``pager video`` outputs: ``P/depth.npy`` (+ ``depth_mask.npy``) when
  ``--data_path`` is one sequence, else ``P/<seq_id>/depth.npy`` for every sequence under ``--data_path``.
* ``--predict``: run a model (``--checkpoint_path``, default: the embedded default model) once per frame and
  evaluate, from the same predictions, independent frames (``independent``: no alignment, no filter), the
  sequence alignment of :mod:`pager.video.consistency` (``aligned``) and alignment + temporal filter
  (``aligned+filter``, strength ``--temporal_filter``).

Per sequence: per-frame AbsRel and delta1 (each frame aligned by itself: ``log_shift`` for relative
models, none for metric ones; averaged over frames), the same with one scale for the whole sequence
(``abs_rel_seq``, ``delta1_seq``), and the flicker of :func:`pager.evaluation.temporal.sequence_flicker`
(mean over consecutive pairs). The table averages over sequences; ``flicker_ratio`` divides a variant's
flicker by that of ``independent`` (``--predict`` only). Results go to ``--output`` (JSON) when given.

Example::

    pager synth --sequence --out data/SyntheticVideo --num 4 --frames 24 --height 256 --motion both
    python evaluation/video_evaluation.py --data_path data/SyntheticVideo --predict --output video_eval.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from pager.config_schema import SCENES

logger = logging.getLogger(__name__)

__all__ = ["evaluate_sequence", "predict_sequence", "build_parser", "run", "main"]

COLUMNS = ("abs_rel", "delta1", "abs_rel_seq", "delta1_seq", "flicker", "covisible")


def evaluate_sequence(pred: np.ndarray, pred_mask: Optional[np.ndarray], seq: Any, metric: bool) -> Dict[str, float]:
    """Metrics of one predicted sequence ``pred [N, H, W]`` against ``seq`` (:class:`SequenceFrames`).

    Predictions of another size than the ground truth are resized (bilinear) to it. Returns the
    frame means of the per-frame metrics and the pair mean of the flicker.
    """
    import numpy as np  # here, not at the top: the parser (--help) stays torch-free
    import torch

    from pager.evaluation.temporal import frame_depth_metrics, sequence_flicker

    if len(pred) != len(seq):
        raise ValueError(f"{seq.folder}: {len(seq)} frames but {len(pred)} predictions")
    frames = [seq.load(i) for i in range(len(seq))]
    gt = torch.from_numpy(np.stack([f["depth"] for f in frames])).double()
    mask = torch.from_numpy(np.stack([f["mask"] for f in frames]))
    p = torch.from_numpy(np.array(pred, dtype=np.float32)).double()
    pm = torch.ones_like(p, dtype=torch.bool) if pred_mask is None else torch.from_numpy(np.array(pred_mask, dtype=bool))
    if p.shape[-2:] != gt.shape[-2:]:
        p = torch.nn.functional.interpolate(p[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        pm = torch.nn.functional.interpolate(pm[:, None].double(), size=gt.shape[-2:], mode="nearest")[:, 0] > 0.5
    valid = mask & pm & (p > 0)
    per = frame_depth_metrics(p, gt, valid, alignment="metric" if metric else "log_shift", scope="per_frame")
    seqm = frame_depth_metrics(p, gt, valid, scope="sequence")
    fl = sequence_flicker(p, gt, torch.from_numpy(seq.poses), mask=mask, pred_mask=pm)
    mean = lambda t: float(torch.nanmean(t.double()))  # noqa: E731
    return {"abs_rel": mean(per["abs_rel"]), "delta1": mean(per["delta1"]), "abs_rel_seq": mean(seqm["abs_rel"]),
            "delta1_seq": mean(seqm["delta1"]), "flicker": mean(fl["flicker"]), "covisible": mean(fl["covisible"]),
            "frames": len(seq)}


def predict_sequence(pipe: Any, seq: Any, batch_size: int = 4) -> Dict[str, np.ndarray]:
    """Raw per-frame predictions of the model: ``depth``, ``depth_mask`` ``[N, H, W]`` and ``rgb [N, H, W, 3]``."""
    import numpy as np

    from pager.io_utils import read_image

    depth, dmask, rgb = [], [], []
    for s in range(0, len(seq), batch_size):
        frames = [read_image(seq.rgb_path(i), what="sequence rgb")[..., :3] for i in range(s, min(len(seq), s + batch_size))]
        out = pipe(frames, modalities=("depth",), batch_size=len(frames), show_progress=False)
        depth.append(out.depth), dmask.append(out.depth_mask), rgb.append(out.rgb)
    return {"depth": np.concatenate(depth), "depth_mask": np.concatenate(dmask), "rgb": np.concatenate(rgb)}


def consistent(raw: Dict[str, np.ndarray], align: bool, filter_strength: float, tau: float = 0.05,
               motion_compensation: str = "pose", two_sided: bool = True) -> np.ndarray:
    """Raw predictions (in order) through :func:`pager.video.consistency.filter_sequence`."""
    import numpy as np  # here, not at the top: the parser (--help) stays torch-free
    import torch

    from pager.video.consistency import filter_sequence

    out, _ = filter_sequence(torch.from_numpy(np.asarray(raw["depth"])), torch.from_numpy(np.asarray(raw["depth_mask"])),
                             torch.from_numpy(np.asarray(raw["rgb"])), align=align, filter_strength=filter_strength, tau=tau,
                             motion_compensation=motion_compensation, two_sided=two_sided)
    return out.numpy()


def _mean_rows(rows: List[Dict[str, float]]) -> Dict[str, float]:
    import numpy as np

    return {k: float(np.nanmean([r[k] for r in rows])) for k in COLUMNS}


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    keys = list(COLUMNS) + (["flicker_ratio"] if any("flicker_ratio" in r["mean"] for r in results.values()) else [])
    lines = ["variant            " + " ".join(f"{k:>12s}" for k in keys)]
    for name, r in results.items():
        lines.append(f"{name:18s} " + " ".join(f"{r['mean'].get(k, float('nan')):12.4f}" for k in keys))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="video_evaluation.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data_path", required=True, help="a `pager synth --sequence` folder or one sequence folder")
    parser.add_argument("--pred_path", default=None, help="`pager video` output folder (one sequence) or folder of <seq_id>/ outputs")
    parser.add_argument("--predict", action="store_true", help="run the model here and compare independent / aligned / filtered")
    parser.add_argument("--scenes", choices=SCENES, default="both")
    parser.add_argument("--temporal_filter", type=float, default=0.5, help="filter strength of the aligned+filter variant")
    parser.add_argument("--tau", type=float, default=0.05, help="agreement scale of alignment and filter (log depth)")
    parser.add_argument("--motion_compensation", choices=("pose", "yaw", "none"), default="pose",
                        help="motion compensation of the aligned variants (as pager video's option)")
    parser.add_argument("--causal_filter", action="store_true",
                        help="forward filter only (as pager video --causal_filter); default: two-sided")
    parser.add_argument("--batch_size", type=int, default=4)
    from pager.cli.common import add_model_options

    add_model_options(parser.add_argument_group("model (with --predict)"), ("checkpoint_path", "device", "dtype"))
    parser.add_argument("--metric", action="store_true", help="--pred_path holds metric depth (no per-frame alignment)")
    parser.add_argument("--output", default=None, help="write the results as JSON here (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return parser


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate (see the module docstring); returns ``{variant: {"mean": {...}, "sequences": {...}}}``."""
    import numpy as np

    from pager.data.synthetic.sequence import list_sequences

    if bool(args.pred_path) == bool(args.predict):
        raise ValueError("give exactly one of --pred_path (evaluate pager video outputs) and --predict")
    if not 0.0 <= args.temporal_filter < 1.0:
        raise ValueError(f"--temporal_filter must be in [0, 1), got {args.temporal_filter}")
    if args.output:  # the rule of every command: checked before any work, existing files refused by name
        from pager.io_utils import check_outputs

        check_outputs([args.output], overwrite=args.overwrite)
    scenes = ("indoor", "outdoor") if args.scenes == "both" else (args.scenes,)
    seqs = list_sequences(args.data_path, scenes)
    results: Dict[str, Dict[str, Any]] = {}
    if args.pred_path:
        pred_root = Path(args.pred_path)
        single = (pred_root / "depth.npy").is_file()
        if single and len(seqs) != 1:
            raise ValueError(f"{pred_root} holds one sequence's depth.npy but {args.data_path} has {len(seqs)} sequences")
        jobs = []
        for seq in seqs:
            folder = pred_root if single else pred_root / seq.folder.name
            if not (folder / "depth.npy").is_file():
                raise FileNotFoundError(f"prediction not found: {folder / 'depth.npy'} (for sequence {seq.folder})")
            jobs.append((seq, folder))
        rows = {}
        for seq, folder in jobs:
            pred = np.load(folder / "depth.npy", mmap_mode="r")
            pm = np.load(folder / "depth_mask.npy", mmap_mode="r") if (folder / "depth_mask.npy").is_file() else None
            rows[seq.folder.name] = evaluate_sequence(pred, pm, seq, args.metric)
        results["prediction"] = {"mean": _mean_rows(list(rows.values())), "sequences": rows}
    else:
        from pager.cli.video import _checkpoint_source
        from pager.pipeline import PagerPipeline

        pipe = PagerPipeline.from_pretrained(_checkpoint_source(args.checkpoint_path), device=args.device,
                                            torch_dtype=args.dtype)
        if "depth" not in pipe.modalities:
            raise ValueError("--predict needs a depth checkpoint")
        metric = bool(pipe.model.configs["depth"].metric_depth)
        variants = {"independent": (False, 0.0), "aligned": (not metric, 0.0), "aligned+filter": (not metric, args.temporal_filter)}
        rows: Dict[str, Dict[str, Dict[str, float]]] = {v: {} for v in variants}
        seconds = frames = 0
        for seq in seqs:
            t0 = time.perf_counter()
            raw = predict_sequence(pipe, seq, args.batch_size)
            seconds += time.perf_counter() - t0
            frames += len(seq)
            for v, (align, strength) in variants.items():
                pred = raw["depth"] if (not align and strength == 0) else consistent(raw, align, strength, args.tau, args.motion_compensation,
                                                                               not args.causal_filter)
                rows[v][seq.folder.name] = evaluate_sequence(pred, raw["depth_mask"], seq, metric)
                logger.info("%s %s: %s", seq.folder.name, v, rows[v][seq.folder.name])
        base = _mean_rows(list(rows["independent"].values()))["flicker"]
        for v in variants:
            mean = _mean_rows(list(rows[v].values()))
            mean["flicker_ratio"] = mean["flicker"] / base if base > 0 else float("nan")
            results[v] = {"mean": mean, "sequences": rows[v]}
        results["_prediction_frames_per_second"] = {"mean": {}, "value": frames / seconds if seconds else None}
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    from pager.cli.main import run_script

    def _run(args: argparse.Namespace) -> int:
        results = run(args)
        table = {k: v for k, v in results.items() if not k.startswith("_")}
        print(format_table(table))
        if args.output:
            from pager.io_utils import atomic_save

            atomic_save(args.output, (json.dumps(results, indent=1) + "\n").encode())
            print(f"wrote {args.output}")
        return 0

    return run_script(build_parser(), _run, argv)
