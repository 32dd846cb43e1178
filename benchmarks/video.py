#!/usr/bin/env python
"""Throughput of ``pager video``: frames per second for 1024x512 frames with the default model.

An H.264 clip is made from an example panorama turning by 2 degrees per frame, then processed by the same
code as ``pager video`` (:func:`pager.video.process.process_video`: decode, ``PagerPipeline``, alignment,
memory-mapped arrays, colour-mapped videos). Printed per batch size:

* ``model``: frames/s of the prediction loop (decoding, model, alignment, array writes);
* ``end to end``: frames/s including the final encoding of the depth and normals videos.

Examples::

    python benchmarks/video.py                          # 1024x512, 8 frames, batch sizes 1 and 4
    python benchmarks/video.py --device cuda --dtype bf16 --frames 32 --batch_sizes 1 8
    python benchmarks/video.py --smoke                  # 2 frames of 128x64: checks that it runs
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clip(path: Path, frames: int, height: int, fps: float = 30.0) -> None:
    import numpy as np
    from PIL import Image

    from pager.video.io import VideoWriter

    img = Image.open(REPO / "pager" / "assets" / "examples" / "indoor_room.jpg").convert("RGB")
    base = np.asarray(img.resize((2 * height, height), Image.BICUBIC))
    step = 2.0 * (2 * height) / 360.0  # 2 degrees per frame
    with VideoWriter(path, fps=fps) as vw:
        for t in range(frames):
            vw.write(np.roll(base, int(round(t * step)), axis=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=512, help="frame height (width = 2x)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--checkpoint_path", nargs="+", default=None, help="default: the embedded default model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--temporal_filter", type=float, default=0.0)
    parser.add_argument("--smoke", action="store_true", help="2 frames of 128x64, batch size 1 (for the smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per configuration")
    args = parser.parse_args()
    if args.smoke:
        args.height, args.frames, args.batch_sizes = 64, 2, [1]

    import torch

    from pager.cli.video import _checkpoint_source
    from pager.pipeline import PagerPipeline
    from pager.video.io import open_source
    from pager.video.process import VideoOptions, process_video

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = PagerPipeline.from_pretrained(_checkpoint_source(args.checkpoint_path), torch_dtype=args.dtype, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames, args.height)
        # warm-up (first-call allocations, caches)
        pipe([open_source(clip).frames().__next__()[2]], show_progress=False)
        print(f"pager video, {2 * args.height}x{args.height}, {args.frames} frames, {args.device} {args.dtype}, "
              f"{torch.get_num_threads()} threads, model {args.checkpoint_path or 'default'}")
        for bs in args.batch_sizes:
            out = Path(tmp) / f"out{bs}"
            opts = VideoOptions(modalities=tuple(pipe.modalities), batch_size=bs, filter_strength=args.temporal_filter)
            t0 = time.perf_counter()
            info = process_video(pipe, open_source(clip), out, opts, progress=False)
            total = time.perf_counter() - t0
            row = {"batch_size": bs, "frames": args.frames, "model_fps": info["frames_per_second"],
                   "end_to_end_fps": args.frames / total, "size": f"{2 * args.height}x{args.height}"}
            if args.json:
                print(json.dumps(row))
            else:
                print(f"  batch {bs}: model {row['model_fps']:.3f} frames/s, end to end {row['end_to_end_fps']:.3f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
