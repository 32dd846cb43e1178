"""Face-border seams by cube padding mode (prints a table; a measurement, not a test).

    python benchmarks/cube_padding_seams.py [--seeds 0 1 2] [--face_size 32]

Statistic (see tests/test_model_seams.py): median, over ERP neighbour pairs straddling a face border, of
|jump| / mean |jump| of the two pairs just before and after on the same row/column. ~1: no visible
border; > 1: a step along face borders. Rows:

- ``blur5``: a cube-padded 5x5 box blur of the cubemap of a smooth analytic field (pure geometry; its
  ``zero`` column is not meaningful: zero padding darkens both sides of a border alike, a valley rather
  than a step, which this statistic does not see);
- ``model raw``: a tiny random-weight PaGeR (VAE + UNet, float64) on smooth random panoramas;
- ``model sym``: the same with every conv kernel averaged over the 8 rotations/flips (random kernels are
  not rotation invariant, so faces seen in different orientations texture differently; this removes it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pager.geometry import convert_to_cube_padding, cube_pad, cubemap_directions, cubemap_to_erp, erp_to_cubemap  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--panoramas", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--face_size", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.panoramas, args.face_size = [0], [100], 16
    torch.set_num_threads(1)
    os.environ.setdefault("PAGER_CACHE_DIR", tempfile.mkdtemp())
    import test_model_seams as seams  # the smooth panoramas and kernel symmetrisation of the test
    from seam_measures import face_labels, local_border_jump_ratio  # the statistic

    from pager.model import Pager, build_tiny_checkpoint

    fs = seams.FS = args.face_size
    h = seams.H = 2 * fs
    labels = face_labels(fs, h)
    rows = []
    d = cubemap_directions(fs, dtype=torch.float64)
    x, y, z = d.unbind(1)
    cube = (torch.sin(2 * x + 1) * torch.cos(3 * y) + 0.5 * z + x * z)[:, None]
    w = torch.full((1, 1, 5, 5), 1 / 25, dtype=torch.float64)
    blur = {}
    for mode in ("reference", "geometric"):
        out = F.conv2d(cube_pad(cube, 2, mode=mode), w)
        blur[mode] = local_border_jump_ratio(cubemap_to_erp(out[None], h, 2 * h)[0, 0], labels)
    out = F.conv2d(F.pad(cube, (2, 2, 2, 2)), w)
    blur["zero"] = local_border_jump_ratio(cubemap_to_erp(out[None], h, 2 * h)[0, 0], labels)
    rows.append(("blur5", "-", "-", blur))
    root = Path(tempfile.mkdtemp())
    for seed in args.seeds:
        ck = build_tiny_checkpoint(root / f"ck{seed}", seed=seed, face_size=fs)
        for sym in (False, True):
            padded = Pager.from_pretrained(str(ck), device="cpu").to(torch.float64)
            zero = Pager.from_pretrained(str(ck), device="cpu", cube_padding=False).to(torch.float64)
            if sym:
                seams.symmetrise_kernels(padded)
                seams.symmetrise_kernels(zero)
            for pano in args.panoramas:
                faces = erp_to_cubemap(seams.smooth_panorama(pano), fs)
                res = {}
                for mode in ("reference", "geometric", "zero"):
                    model = zero if mode == "zero" else padded
                    if mode != "zero":
                        for net in [model.vae, *model.unets.values()]:
                            convert_to_cube_padding(net, mode=mode)
                    with torch.no_grad():
                        pred = model.forward_faces(faces, "depth").mean(2, keepdim=True)
                    res[mode] = local_border_jump_ratio(cubemap_to_erp(pred, h, 2 * h)[0, 0], labels)
                rows.append(("model sym" if sym else "model raw", seed, pano, res))
    print(f"face size {fs}, ERP {h}x{2 * h}; border/inside jump ratio (1 = no seam)")
    print(f"{'case':<10} {'seed':>4} {'pano':>4} {'reference':>10} {'geometric':>10} {'zero':>10}")
    for case, seed, pano, res in rows:
        print(f"{case:<10} {seed!s:>4} {pano!s:>4} {res['reference']:>10.2f} {res['geometric']:>10.2f} {res['zero']:>10.2f}")


if __name__ == "__main__":
    main()
