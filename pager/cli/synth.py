"""``pager synth``: render a procedural data set with exact depth, normals and masks.

Example::

    pager synth --out data/Synthetic --num 200 --height 512 --scenes both --seed 0
    pager synth --out data/PanoInfinigen --num 200 --format lmdb

``--format files`` writes the plain layout read by the ``Synthetic`` (and ``PanoInfinigen``) datasets;
``--format lmdb`` writes the PanoInfinigen LMDB layout. See :mod:`pager.data.synthetic.writer`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` and its arguments."""
    p = subparsers.add_parser(
        "synth",
        help="render procedural panoramas with exact depth and normals",
        description="Render seeded procedural indoor/outdoor panoramas (RGB, range depth, normals, mask) to disk.",
    )
    p.add_argument("--out", required=True, help="output folder (e.g. <data_path>/Synthetic or <data_path>/PanoInfinigen)")
    p.add_argument("--num", type=int, default=200, help="number of scenes in total (split between indoor and outdoor for 'both')")
    p.add_argument("--height", type=int, default=512, help="panorama height in pixels (width = 2 * height)")
    p.add_argument("--scenes", choices=("indoor", "outdoor", "both"), default="both")
    p.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives the same files")
    p.add_argument("--format", choices=("files", "lmdb"), default="files", help="plain files or PanoInfinigen LMDB shards")
    p.add_argument("--supersample", type=int, default=1, help="s x s rays per pixel for anti-aliased RGB")
    p.add_argument("--views", type=int, default=1, help="camera positions (views) per scene")
    p.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--scenes-per-shard", type=int, default=64, help="scenes per LMDB shard (lmdb format)")
    p.add_argument("--normals-format", choices=("npy", "png"), default="npy", help="normals file type (files format)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(command="synth")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the data set described by ``args``; returns 0 (errors are raised as ValueError & co.)."""
    from pager.data.synthetic.writer import write_dataset

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
    print(f"wrote {args.num} scene(s) x {args.views} view(s) to {out}")
    return 0
