"""Timing of the procedural renderer: ``python benchmarks/synthetic.py [--repeats N] [--seeds K]``.

Prints one row per (kind, width, supersample): the median and best wall time of
``render_scene`` (RGB + depth + normals + mask) over ``seeds x repeats`` runs, the median CPU time of
the process (the renderer is single-threaded NumPy, so on a busy machine the CPU time is the better
measure of its own cost), and panoramas/s (from the median wall time).
Target: 1024 x 512 (supersample 1) under 0.5 s on the 2-core development machine.
Numbers depend on the machine and on its load: state both when reporting them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from pager.data.synthetic import render_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--supersample", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.seeds, args.widths, args.supersample = 1, 1, [64], [1]
    render_scene(0, height=32)  # warm-up (noise table, imports)
    print(f"numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'kind':8} {'size':>10} {'ss':>3} {'wall med s':>10} {'wall best':>9} {'cpu med s':>9} {'pano/s':>7}")
    for kind in ("indoor", "outdoor"):
        for width in args.widths:
            for ss in args.supersample:
                times, cpu = [], []
                for seed in range(args.seeds):
                    for _ in range(args.repeats):
                        t0, c0 = time.perf_counter(), time.process_time()
                        render_scene(seed, height=width // 2, kind=kind, supersample=ss)
                        times.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
                med = statistics.median(times)
                size = f"{width}x{width // 2}"
                print(
                    f"{kind:8} {size:>10} {ss:>3} {med:10.3f} {min(times):9.3f} {statistics.median(cpu):9.3f} {1 / med:7.2f}"
                )


if __name__ == "__main__":
    main()
