"""Cube seams with and without ``seam_blend`` (prints a table; a measurement, not a test).

    python benchmarks/seam_blend.py [--num 8] [--seed 900000] [--height 256] [--pitch 45] [--no_default] [--smoke]

Rows, each over the same panoramas:

- ``default <padding>``: the embedded default model on procedural scenes (``render_scene``, seeds from
  ``--seed``: the held-out seeds of ``scripts/train_default.sh``), its VAE and UNets converted to the cube
  padding named (``geometric`` is how the default model v2 was trained and ships; ``reference`` is an inference-time
  override, the padding v1 was trained with);
- ``tiny <padding>``: tiny random checkpoints (``build_tiny_checkpoint`` seeds 0-2, faces of 32 px) on smooth
  random panoramas (64x128);
- ``truth``: the ground-truth depth of the same scenes.

Columns: ``sgr`` = ``seam_gradient_ratio`` of ``pager.evaluation.metrics.seam_metrics`` (mean jump across the
upright cube's face borders / mean jump inside faces; ~1 without seams); ``edge1`` / ``edge2`` = median, over
ERP neighbour pairs that straddle a face border of the first / the second (turned) cube, of the border jump in
units of the mean of the in-face jumps just before and after it on the same line (``tests/seam_measures.py``;
~1: no step at the border); ``AbsRel`` against the truth after median log alignment; seconds per panorama.
``blend`` is ``seam_blend=True`` with the shipped rotation (45 deg yaw), ``blend+tilt`` the same with the
cube also tilted by ``--pitch`` degrees, ``blend p=..`` with other exponents of the weights (``--powers``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def labels(fs: int, h: int, rotation=None) -> torch.Tensor:
    from pager.geometry import cubemap_to_erp

    cube = torch.arange(6.0, dtype=torch.float64).view(1, 6, 1, 1, 1).expand(1, 6, 1, fs, fs).contiguous()
    return cubemap_to_erp(cube, h, 2 * h, mode="nearest", rotation=rotation)[0, 0]


def measure(depth: torch.Tensor, fs: int, gt=None, gt_mask=None) -> dict:
    from seam_measures import local_border_jump_ratio

    from pager.evaluation.metrics import seam_metrics
    from pager.geometry.seam_blend import SEAM_BLEND_ROTATION

    h = depth.shape[-2]
    ld = depth.double().log()
    out = {"sgr": float(seam_metrics(depth[None].double())["seam_gradient_ratio"][0]),
           "edge1": local_border_jump_ratio(ld, labels(fs, h)),
           "edge2": local_border_jump_ratio(ld, labels(fs, h, SEAM_BLEND_ROTATION))}
    if gt is not None:
        m = gt_mask & (gt > 0)
        p = depth.double() * torch.exp(torch.median(gt[m].double().log() - depth.double()[m].log()))
        out["absrel"] = float(((p[m] - gt[m]).abs() / gt[m]).mean())
    return out


def set_padding(model, mode: str) -> None:
    from pager.geometry import convert_to_cube_padding

    for net in [model.vae, *model.unets.values()]:
        convert_to_cube_padding(net, mode=mode)


def run(model, rgb: torch.Tensor, fs: int, blend: bool, rotation=None, power=None):
    import pager.geometry.seam_blend as sb

    keep = sb.SEAM_BLEND_ROTATION, sb.SEAM_BLEND_POWER
    if rotation is not None:
        sb.SEAM_BLEND_ROTATION = rotation
    if power is not None:
        sb.SEAM_BLEND_POWER = power
    try:
        t0 = time.perf_counter()
        out = model.predict(rgb, modalities=["depth"], face_size=fs, seam_blend=blend)
        return out["depth"][0].float(), time.perf_counter() - t0
    finally:
        sb.SEAM_BLEND_ROTATION, sb.SEAM_BLEND_POWER = keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--seed", type=int, default=900000)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--pitch", type=float, default=45.0, help="tilt of the 'blend+tilt' variant (degrees)")
    ap.add_argument("--no_default", action="store_true", help="skip the default model (tiny checkpoints only)")
    ap.add_argument("--no_tiny", action="store_true")
    ap.add_argument("--powers", type=float, nargs="*", default=[], help="also blend with these weight exponents")
    ap.add_argument("--smoke", action="store_true", help="smallest settings: one tiny checkpoint, one panorama")
    args = ap.parse_args()
    tiny_seeds, tiny_panoramas = (range(1), (100,)) if args.smoke else (range(3), (100, 101))
    if args.smoke:
        args.no_default = True
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("PAGER_CACHE_DIR", tempfile.mkdtemp())
    from pager.geometry.seam_blend import SEAM_BLEND_YAW_DEG, rotation_matrix
    from pager.model import Pager

    tilt = rotation_matrix(SEAM_BLEND_YAW_DEG, args.pitch)
    variants = [("plain", False, None, None), ("blend", True, None, None),
                (f"blend+tilt{args.pitch:g}", True, tilt, None)]
    variants += [(f"blend p={p:g}", True, None, p) for p in args.powers]
    rows = {}

    def add(name, res, seconds=None):
        r = rows.setdefault(name, {"n": 0, "t": 0.0})
        r["n"] += 1
        for k, v in res.items():
            r[k] = r.get(k, 0.0) + v
        if seconds is not None:
            r["t"] += seconds

    if not args.no_default:
        from pager.data.synthetic.raycast import render_scene

        model = Pager.from_pretrained("default", device="cpu")
        fs = model.default_face_size
        scenes = [render_scene(args.seed + i, height=args.height) for i in range(args.num)]
        for mode in ("reference", "geometric"):
            set_padding(model, mode)
            for pano in scenes:
                rgb = torch.from_numpy(pano.rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                gt, gm = torch.from_numpy(pano.depth), torch.from_numpy(pano.mask)
                for name, blend, rot, power in variants:
                    depth, sec = run(model, rgb, fs, blend, rot, power)
                    add(f"default {mode} {name}", measure(depth, fs, gt, gm), sec)
        for pano in scenes:
            gt = torch.from_numpy(pano.depth)
            gm = torch.from_numpy(pano.mask)
            filled = torch.where(gm, gt, torch.full_like(gt, float(pano.max_depth)))
            add("truth", measure(filled, fs))
    if not args.no_tiny:
        from test_model_seams import smooth_panorama  # the smooth random panoramas of the seam test

        from pager.model import build_tiny_checkpoint

        root = Path(tempfile.mkdtemp())
        for seed in tiny_seeds:
            ck = build_tiny_checkpoint(root / f"ck{seed}", seed=seed, face_size=32)
            model = Pager.from_pretrained(str(ck), device="cpu").to(torch.float64)
            for mode in ("reference", "geometric"):
                set_padding(model, mode)
                for pano in tiny_panoramas:
                    rgb = smooth_panorama(pano)
                    for name, blend, rot, power in variants:
                        depth, sec = run(model, rgb, 32, blend, rot, power)
                        add(f"tiny {mode} {name}", measure(depth, 32), sec)
    print(f"{'case':<34} {'n':>3} {'sgr':>6} {'edge1':>6} {'edge2':>6} {'AbsRel':>7} {'s/pano':>7}")
    for name, r in rows.items():
        n = r["n"]
        absrel = f"{r['absrel'] / n:7.3f}" if "absrel" in r else f"{'-':>7}"
        t = f"{r['t'] / n:7.2f}" if r["t"] else f"{'-':>7}"
        print(f"{name:<34} {n:>3} {r['sgr'] / n:6.2f} {r['edge1'] / n:6.2f} {r['edge2'] / n:6.2f} {absrel} {t}")


if __name__ == "__main__":
    main()
