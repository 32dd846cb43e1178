"""``pager synth``: render a procedural data set with exact depth, normals and masks.

Example::

    pager synth --out data/Synthetic --num 200 --height 512 --scenes both --seed 0
    pager synth --out data/PanoInfinigen --num 200 --format lmdb
    pager synth --sequence --out data/SyntheticVideo --num 2 --frames 24 --motion both --height 256

``--format files`` writes the plain layout read by the ``Synthetic`` (and ``PanoInfinigen``) datasets;
``--format lmdb`` writes the PanoInfinigen LMDB layout. See :mod:`pager.data.synthetic.writer`.
``--sequence`` renders ``--num`` camera paths of ``--frames`` frames instead (``--motion yaw|translate|both``),
with per-frame depth, normals, mask and camera pose; see :mod:`pager.data.synthetic.sequence`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pager.config_schema import SCENES


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` and its arguments."""
    p = subparsers.add_parser(
        "synth",
        help="render procedural panoramas with exact depth and normals",
        description="Render seeded procedural indoor/outdoor panoramas (RGB, range depth, normals, mask) to disk.",
    )
    p.add_argument("--out", required=True, help="output folder (e.g. <data_path>/Synthetic or <data_path>/PanoInfinigen)")
    p.add_argument("--num", type=int, default=None,
                   help="number of scenes (or sequences with --sequence) in total, split between indoor and outdoor for 'both' (default 200; 2 sequences)")
    p.add_argument("--height", type=int, default=512, help="panorama height in pixels (width = 2 * height)")
    p.add_argument("--scenes", choices=SCENES, default="both", help="scene types to render")
    p.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives the same files")
    p.add_argument("--format", choices=("files", "lmdb"), default="files", help="plain files or PanoInfinigen LMDB shards")
    p.add_argument("--supersample", type=int, default=1, help="s x s rays per pixel for anti-aliased RGB")
    p.add_argument("--views", type=int, default=1, help="camera positions (views) per scene")
    p.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="shares of the scenes in the train / val / test splits, per scene type (rounded down: a few "
                        "scenes can leave a split empty; the summary gives the counts)")
    p.add_argument("--scenes-per-shard", type=int, default=64, help="scenes per LMDB shard (lmdb format)")
    p.add_argument("--normals-format", choices=("npy", "png"), default="npy", help="normals file type (files format)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    seq = p.add_argument_group("sequences (--sequence)")
    seq.add_argument("--sequence", action="store_true", help="render moving-camera sequences with per-frame camera poses")
    seq.add_argument("--frames", type=int, default=24, help="frames per sequence")
    seq.add_argument("--motion", choices=("yaw", "translate", "both"), default="both", help="camera motion")
    seq.add_argument("--fps", type=float, default=10.0, help="frame rate recorded in poses.json")
    seq.add_argument("--yaw_step", type=float, default=2.0, help="degrees of yaw per frame (yaw, both)")
    seq.add_argument("--speed", type=float, default=None, help="metres per frame (translate, both; default 0.05 indoor, 0.25 outdoor)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(command="synth")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the data set described by ``args``; returns 0 (errors are raised as ValueError & co.)."""
    if args.sequence:
        from pager.data.synthetic.sequence import write_sequences

        if args.format != "files" or args.views != 1:
            raise ValueError("--sequence writes plain files with one camera path per scene (no --format lmdb, --views)")
        num = 2 if args.num is None else args.num
        out = write_sequences(args.out, num=num, frames=args.frames, motion=args.motion, height=args.height,
                              scenes=args.scenes, seed=args.seed, fps=args.fps, yaw_step_deg=args.yaw_step,
                              speed=args.speed, supersample=args.supersample, overwrite=args.overwrite,
                              progress=not args.no_progress)
        print(f"wrote {num} sequence(s) x {args.frames} frame(s) to {out}")
        return 0
    from pager.data.synthetic.writer import write_dataset

    args.num = 200 if args.num is None else args.num
    out = write_dataset(
        args.out,
        num=args.num,
        height=args.height,
        scenes=args.scenes,
        seed=args.seed,
        format=args.format,
        splits=tuple(args.splits),
        supersample=args.supersample,
        views_per_scene=args.views,
        scenes_per_shard=args.scenes_per_shard,
        normals_format=args.normals_format,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {args.num} scene(s) x {args.views} view(s) to {out}{_split_summary(out)}")
    return 0


def _split_summary(out: Any) -> str:
    """``": train N, val N, test N"`` from the written ``meta.json`` counts; an empty split is also warned about
    (``--splits`` shares are rounded down per scene type, so a few scenes can leave one empty)."""
    import json
    from pathlib import Path

    try:
        counts = json.loads((Path(out) / "meta.json").read_text()).get("counts") or {}
    except (OSError, ValueError):
        return ""
    per_split: dict = {}
    for key, n in counts.items():
        split = str(key).rsplit("/", 1)[-1]
        per_split[split] = per_split.get(split, 0) + int(n)
    if not per_split:
        return ""
    order = {"train": 0, "val": 1, "test": 2}
    per_split = dict(sorted(per_split.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))
    empty = [s for s, n in per_split.items() if n == 0]
    if empty:
        logging.getLogger(__name__).warning(
            "split(s) %s of %s are empty (--splits shares of too few scenes are rounded down); commands reading "
            "them will find no sample (e.g. inference.py reads 'test'): pass more --num or other --splits",
            ", ".join(empty), out)
    return ": " + ", ".join(f"{s} {n}" for s, n in per_split.items())
