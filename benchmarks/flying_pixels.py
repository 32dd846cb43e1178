"""Flying-pixel removal on procedural scenes with exact depth (prints a table; a measurement, not a test).

    python benchmarks/flying_pixels.py [--num 12] [--seed 950000] [--height 256] [--no_model]

For each scene (``pager.data.synthetic.render_scene``, exact range depth and validity mask) a "prediction" is
made in two ways:

(a) the ground truth smeared over ``w`` pixels (4 and 8 at 512 px width, scaled with ``--height``): a box
    blur of width ``w`` or a Gaussian of sigma ``w / 2``, separable, in log depth (the network's value
    space; sky filled with the far limit first), longitude wrapping;
(b) the default model's own prediction (``PagerPipeline``, relative depth aligned to the truth by the median
    log ratio over valid pixels).

Points are the pixels valid in the truth and in the prediction's mask (the truth's for (a)), as in
``erp_point_cloud``. "On a true depth edge": within ``r`` pixels (``w`` for (a), 8 at 512 px for (b)) of a
pixel of the truth whose 4-neighbour is invalid or differs by more than 10 relative depth units per
radian. Reported: the share of on-edge points more than 20 % off (|pred - gt| / gt > 0.2) that
``flying_pixel_mask`` removes (target >= 90 %), and the share of all points within 5 % of the truth that it
removes (target <= 2 %), pooled over the scenes; and which share of those on-edge points lies between the
two surfaces (more than 20 % from both the nearest and the farthest true depth within ``2 r`` pixels: a
smeared point), and how many of these are removed.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def smear(depth: torch.Tensor, mask: torch.Tensor, kind: str, width: float, far: float) -> torch.Tensor:
    """Box (width ``width``) or Gaussian (sigma ``width / 2``) blur of log depth, [H, W] -> [H, W]."""
    x = torch.log(torch.where(mask, depth, torch.full_like(depth, far)).double())[None, None]
    if kind == "box":
        n = int(round(width))
        k = torch.ones(n, dtype=x.dtype) / n
    else:
        sigma = width / 2.0
        r = int(math.ceil(3 * sigma))
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
    n = k.numel()
    lo, hi = (n - 1) // 2, n - 1 - (n - 1) // 2
    x = torch.cat([x[..., x.shape[-1] - lo:], x, x[..., :hi]], dim=-1)  # longitude wraps
    x = F.conv2d(x, k.view(1, 1, 1, n))
    x = F.pad(x, (0, 0, lo, hi), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, n, 1))
    return torch.exp(x[0, 0]).to(depth.dtype)


def true_edge_zone(gt: torch.Tensor, valid: torch.Tensor, radius: int) -> torch.Tensor:
    """Valid pixels within ``radius`` px of a discontinuity of the truth (or of its invalid region)."""
    h, w = gt.shape
    phi = 0.5 * math.pi - math.pi * (torch.arange(h, dtype=torch.float64) + 0.5) / h
    step_h = (2 * math.pi / w) * torch.cos(phi)[:, None]
    d = torch.where(valid, gt.double(), torch.full_like(gt.double(), float("nan")))
    edge = torch.zeros_like(valid)
    for n, vn, step in ((torch.roll(d, 1, 1), torch.roll(valid, 1, 1), step_h), (torch.roll(d, -1, 1), torch.roll(valid, -1, 1), step_h),
                        (torch.cat([d[:1], d[:-1]]), torch.cat([valid[:1], valid[:-1]]), math.pi / h),
                        (torch.cat([d[1:], d[-1:]]), torch.cat([valid[1:], valid[-1:]]), math.pi / h)):
        jump = (torch.maximum(d, n) / torch.minimum(d, n) - 1.0) / step
        edge |= valid & (~vn | (torch.nan_to_num(jump, nan=0.0) > 10.0))
    zone = F.max_pool2d(edge.float()[None, None], 2 * radius + 1, 1, radius)[0, 0] > 0
    return zone & valid


def score(pred: torch.Tensor, pred_valid: torch.Tensor, gt: torch.Tensor, gt_valid: torch.Tensor, radius: int,
          window_deg: float):
    from pager.export.pointcloud import flying_pixel_mask

    points = pred_valid & gt_valid & torch.isfinite(pred) & (pred > 0)
    fly = flying_pixel_mask(torch.where(points, pred, torch.full_like(pred, float("nan"))), window_deg=window_deg)
    rel = (pred.double() - gt.double()).abs() / gt.double().clamp_min(1e-9)
    off = points & true_edge_zone(gt, gt_valid, radius) & (rel > 0.2)
    good = points & (rel <= 0.05)
    # "between": more than 20 % from the nearest and the farthest true depth within 2 * radius (a smeared point)
    g = torch.where(gt_valid, gt.double(), torch.full_like(gt.double(), 1e9))[None, None]
    k = 4 * radius + 1
    near = -F.max_pool2d(-g, k, 1, 2 * radius)[0, 0]
    far = F.max_pool2d(torch.where(gt_valid, gt.double(), torch.zeros_like(gt.double()))[None, None], k, 1, 2 * radius)[0, 0]
    between = off & (pred.double() > 1.2 * near) & (pred.double() < far / 1.2)
    return [int((fly & off).sum()), int(off.sum()), int((fly & good).sum()), int(good.sum()), int(points.sum()),
            int((fly & between).sum()), int(between.sum())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=12, help="scenes (seeds seed .. seed + num - 1)")
    ap.add_argument("--seed", type=int, default=950000)
    ap.add_argument("--height", type=int, default=256, help="ERP height (width 2x; the smears are given at width 512)")
    ap.add_argument("--no_model", action="store_true", help="skip (b), the default model's predictions")
    ap.add_argument("--edge_window", type=float, default=None, help="flying_pixel_mask window_deg (default: its default)")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.num, args.height = 1, 64
    from pager.data.synthetic.raycast import render_scene
    from pager.export.pointcloud import DEFAULT_EDGE_WINDOW_DEG

    window = DEFAULT_EDGE_WINDOW_DEG if args.edge_window is None else args.edge_window

    scale = 2 * args.height / 512
    cases = [(k, w) for k in ("box", "gauss") for w in (4, 8)]
    rows = {f"{k} {w}px": np.zeros(7, np.int64) for k, w in cases}
    pipe = None
    if not args.no_model:
        from pager.pipeline import PagerPipeline

        pipe = PagerPipeline.from_pretrained("default", device="cpu")
        rows["default model"] = np.zeros(7, np.int64)
    t0 = time.perf_counter()
    kinds = []
    for i in range(args.num):
        pano = render_scene(args.seed + i, height=args.height)
        kinds.append(pano.kind)
        gt, valid = torch.from_numpy(pano.depth), torch.from_numpy(pano.mask)
        for kind, w in cases:
            pred = smear(gt, valid, kind, w * scale, pano.max_depth)
            rows[f"{kind} {w}px"] += score(pred, valid, gt, valid, max(1, int(round(w * scale))), window)
        if pipe is not None:
            out = pipe(pano.rgb, modalities=("depth",), show_progress=False)
            pred, pmask = torch.from_numpy(out.depth[0]), torch.from_numpy(out.depth_mask[0])
            both = valid & pmask
            shift = torch.median(torch.log(gt[both].double()) - torch.log(pred[both].double()))
            pred = (pred.double() * torch.exp(shift)).float()
            rows["default model"] += score(pred, pmask, gt, valid, max(1, int(round(8 * scale))), window)
    print(f"{args.num} procedural scenes (seeds {args.seed}..{args.seed + args.num - 1}: "
          f"{kinds.count('indoor')} indoor, {kinds.count('outdoor')} outdoor), {2 * args.height}x{args.height}, "
          f"window {window:.2f} deg; "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'prediction':<16} {'removed of on-edge >20% off':>28} {'removed of within-5%':>22} {'points':>10}"
          f" {'of the >20% off: between surfaces, removed':>44}")
    for name, (f_off, n_off, f_good, n_good, n_pts, f_btw, n_btw) in rows.items():
        print(f"{name:<16} {100 * f_off / max(n_off, 1):>20.1f} % of {n_off:<7d}"
              f"{100 * f_good / max(n_good, 1):>12.2f} % of {n_good:<8d}{n_pts:>8d}"
              f"{100 * n_btw / max(n_off, 1):>20.1f} %, {100 * f_btw / max(n_btw, 1):>5.1f} % of them")


if __name__ == "__main__":
    main()
