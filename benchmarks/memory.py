#!/usr/bin/env python
"""Peak resident memory (max RSS) of ``pager predict`` by panorama size, each run in a fresh process.

    python benchmarks/memory.py                          # 4096, 8192 and 11904 px wide, default model, CPU
    python benchmarks/memory.py --widths 8192 --stitching reference
    python benchmarks/memory.py --widths 4096 --seam_blend
    python benchmarks/memory.py --smoke                  # a 512 px panorama (checks that the script runs)

For every width ``W`` a smooth synthetic ``W x W/2`` JPEG panorama is written (band by band, in this process),
then ``python -m pager.cli.main predict IMAGE --out DIR`` runs in a child process (default: the embedded default
model, depth and normals, every output file) and the child's own peak RSS is read from ``os.wait4`` (the kernel's
``ru_maxrss`` of that process). Printed per width: peak RSS, the size of the arrays ``pager predict`` returns and
writes (depth and normals float32, their masks, the uint8 RGB: 22 bytes per pixel), the peak minus those outputs,
and the wall time. The machine load (``os.getloadavg``) is printed before and after: other processes do not
change a process's own peak RSS, but they do change the times.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: bytes per output pixel of ``pager predict`` with depth and normals: depth float32 (4) + depth_mask (1) +
#: normals float32 (12) + normals_mask (1) + mask (1) + rgb uint8 (3)
OUTPUT_BYTES_PER_PIXEL = 22


def write_panorama(path: Path, width: int) -> None:
    """A smooth, non-periodic colour panorama ``width x width/2`` as JPEG, built 256 rows at a time."""
    import numpy as np
    from PIL import Image

    height = width // 2
    img = Image.new("RGB", (width, height))
    theta = np.linspace(-np.pi, np.pi, width, endpoint=False, dtype=np.float32)[None, :]
    for r0 in range(0, height, 256):
        r1 = min(height, r0 + 256)
        phi = np.linspace(np.pi / 2, -np.pi / 2, height, dtype=np.float32)[r0:r1, None]
        band = np.stack([0.5 + 0.4 * np.sin(3 * theta + 2 * phi), 0.5 + 0.4 * np.cos(5 * phi) * np.cos(theta),
                         0.5 + 0.3 * np.sin(7 * theta) * np.cos(phi)], axis=-1)
        img.paste(Image.fromarray(np.rint(band * 255).astype(np.uint8)), (0, r0))
    img.save(path, quality=90)


def run_child(cmd: List[str], log: Path) -> tuple:
    """Run ``cmd``; returns (exit status, peak RSS in bytes of that child, seconds)."""
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, time.perf_counter() - start  # ru_maxrss: KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[4096, 8192, 11904], help="panorama widths (px)")
    ap.add_argument("--checkpoint_path", nargs="+", default=None, help="default: the embedded default model")
    ap.add_argument("--stitching", default="exact", choices=("exact", "reference"))
    ap.add_argument("--seam_blend", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further pager predict options")
    ap.add_argument("--smoke", action="store_true", help="one 512 px panorama (checks that the script runs)")
    args = ap.parse_args()
    if args.smoke:
        args.widths = [512]
    env_threads = os.environ.get("OMP_NUM_THREADS", "(unset)")
    print(f"pager predict peak RSS, {args.stitching} stitching{', seam_blend' if args.seam_blend else ''}, "
          f"device {args.device}, OMP_NUM_THREADS={env_threads}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'input':>12} {'peak RSS':>10} {'outputs':>9} {'peak - outputs':>15} {'seconds':>8}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="pager_memory_") as tmp:
        for width in args.widths:
            if width % 2:
                raise SystemExit(f"--widths: {width} is odd (a panorama is W x W/2)")
            image = Path(tmp) / f"pano_{width}.jpg"
            write_panorama(image, width)
            out_dir = Path(tmp) / f"out_{width}"
            cmd = [sys.executable, "-m", "pager.cli.main", "predict", str(image), "--out", str(out_dir), "--no_progress",
                   "--device", args.device, "--stitching", args.stitching, "--overwrite"]
            if args.checkpoint_path:
                cmd += ["--checkpoint_path", *args.checkpoint_path]
            if args.seam_blend:
                cmd.append("--seam_blend")
            cmd += args.extra
            code, peak, seconds = run_child(cmd, Path(tmp) / f"log_{width}.txt")
            outputs = OUTPUT_BYTES_PER_PIXEL * width * (width // 2)
            if code != 0:
                status = 1
                print(f"{width}x{width // 2}: pager predict failed (exit {code}):\n"
                      + (Path(tmp) / f"log_{width}.txt").read_text(errors="replace")[-3000:])
                continue
            gb = 1e9
            print(f"{f'{width}x{width // 2}':>12} {peak / gb:>8.2f}GB {outputs / gb:>7.2f}GB {(peak - outputs) / gb:>13.2f}GB "
                  f"{seconds:>8.1f}")
            image.unlink()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return status


if __name__ == "__main__":
    sys.exit(main())
