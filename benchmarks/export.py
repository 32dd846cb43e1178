"""Timings of the export path at panorama sizes: colormaps, 16-bit PNG, point cloud build and GLB/PLY writes.

    python benchmarks/export.py [--height 1024] [--max_points 1000000]

Prints one table row per step (median of a few runs, CPU).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    from pager.export import colorize_depth, erp_point_cloud, normals_to_rgb, save_depth_png16, save_point_cloud
    from pager.geometry import depth_to_normals, erp_directions

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--max_points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.height, args.max_points, args.repeat = 64, 1000, 1
    h, w = args.height, 2 * args.height
    rng = np.random.default_rng(0)
    rays = erp_directions(h, w, dtype=torch.float64).permute(1, 2, 0).numpy()
    with np.errstate(divide="ignore"):  # a box room 5 x 2.7 x 6 m around the camera
        depth = np.where(rays > 0, np.array([2.0, 1.2, 3.5]) / rays, np.array([3.0, 1.5, 2.5]) / -rays).min(-1).astype(np.float32)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    normals = depth_to_normals(torch.from_numpy(depth)[None, None])[0].numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows.append(("colorize_depth", _median_time(lambda: colorize_depth(depth), args.repeat)))
        rows.append(("colorize_depth + colour bar", _median_time(lambda: colorize_depth(depth, colorbar=True), args.repeat)))
        rows.append(("normals_to_rgb", _median_time(lambda: normals_to_rgb(normals), args.repeat)))
        rows.append(("save_depth_png16", _median_time(lambda: save_depth_png16(tmp / "d.png", depth), args.repeat)))
        rows.append(("erp_point_cloud (all pixels)", _median_time(lambda: erp_point_cloud(depth, rgb), args.repeat)))
        cloud = erp_point_cloud(depth, rgb, normals=normals, max_points=args.max_points)
        rows.append((f"erp_point_cloud (max_points={args.max_points})",
                     _median_time(lambda: erp_point_cloud(depth, rgb, normals=normals, max_points=args.max_points), args.repeat)))
        rows.append((f"save GLB ({len(cloud)} points)", _median_time(lambda: save_point_cloud(tmp / "c.glb", cloud), args.repeat)))
        rows.append((f"save PLY ({len(cloud)} points)", _median_time(lambda: save_point_cloud(tmp / "c.ply", cloud), args.repeat)))
    print(f"export timings, ERP {w}x{h}, torch threads {torch.get_num_threads()}")
    print(f"{'step':<45} {'seconds':>8}")
    for name, sec in rows:
        print(f"{name:<45} {sec:8.3f}")


if __name__ == "__main__":
    main()
