"""Time the evaluation metrics on one full-size panorama and print a table.

    python benchmarks/evaluation.py [--height 1024] [--threads 2] [--repeat 3] [--device cpu|cuda]

Per metric family: seconds per panorama (median of ``--repeat`` runs after one warm-up) at
``height x 2*height``. Not a test: speed targets live here, not in the test suite.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pager.evaluation import metrics as M  # noqa: E402


def _time(fn, repeat: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", type=str, default="cpu")
    ap.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    a = ap.parse_args()
    if a.smoke:
        a.height, a.repeat, a.threads = 64, 1, 1
    torch.set_num_threads(a.threads)
    h, w, dev = a.height, 2 * a.height, a.device
    g = torch.Generator().manual_seed(0)
    gt = (0.5 + 10 * torch.rand(1, 1, h, w, generator=g)).to(dev)
    pred = (gt * (1 + 0.1 * torch.randn(1, 1, h, w, generator=g).to(dev))).abs()
    mask = torch.rand(1, 1, h, w, generator=g).to(dev) > 0.05
    n_gt = torch.nn.functional.normalize(torch.randn(1, 3, h, w, generator=g), dim=1).to(dev)
    n_pr = torch.nn.functional.normalize(n_gt.cpu() + 0.1 * torch.randn(1, 3, h, w, generator=g), dim=1).to(dev)
    rows = [
        ("depth_metrics", lambda: M.depth_metrics(pred, gt, mask)),
        ("depth_metrics latitude-weighted", lambda: M.depth_metrics(pred, gt, mask, latitude_weighting=True)),
        ("align scale_and_shift", lambda: M.align_prediction(pred, gt, mask, "scale_and_shift")),
        ("normals_metrics", lambda: M.normals_metrics(n_pr, n_gt, mask)),
        ("edge_metrics (Sobel + 2 EDT)", lambda: M.edge_metrics(pred, gt, mask, max_distance=10.0)),
        ("seam_metrics", lambda: M.seam_metrics(pred)),
    ]
    print(f"evaluation metrics on {w}x{h}, device {dev}, {a.threads} CPU threads, median of {a.repeat}")
    print(f"{'metric':<34} {'s / panorama':>12}")
    print("-" * 47)
    for name, fn in rows:
        print(f"{name:<34} {_time(fn, a.repeat, dev):>12.3f}")


if __name__ == "__main__":
    main()
