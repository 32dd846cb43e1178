"""How far the original's resampling (``stitching="reference"``) is from ours (``"exact"``), on smooth content.

    python benchmarks/stitching.py                       # released size: 1024x2048 ERP, 768-pixel faces
    python benchmarks/stitching.py --height 256 --face 192

Content: a smooth, non-symmetric function of the viewing direction with values in [-1, 1] (the same kind of
field as the geometry tests), evaluated analytically at ERP pixel centres and at cube face pixels (float64).
Printed rows (max / mean absolute difference, in the units of the content):

- ``c2e exact vs truth`` / ``c2e reference vs truth``: cube->ERP of the analytic cubemap against the analytic ERP;
- ``c2e exact vs reference``: what changes in a prediction's ERP output when only the stitching changes;
- ``e2c exact vs reference``: ERP->cube (they differ only next to the +-180 degree seam);
- ``round trip``: ERP -> cube -> ERP with each mode (our exact pair, and the original's pair, also computed
  with pytorch360convert itself when it is installed, as a cross-check).
Float64 throughout, so the numbers are resampling error, not rounding.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pager.geometry import cubemap_directions, cubemap_to_erp, erp_directions, erp_to_cubemap  # noqa: E402


def field(d: torch.Tensor, freq: float = 1.0) -> torch.Tensor:
    """Smooth function of unit directions ``[3, ...]`` (x forward, y up, z right) -> ``[1, ...]`` in [-1, 1];
    ``freq`` scales the angular frequency of its oscillating term."""
    x, y, z = d[0], d[1], d[2]
    return (0.5 * x + 0.3 * y * z + 0.4 * torch.sin(2.0 * freq * z + 1.0) * torch.cos(freq * y)).clamp(-1, 1).unsqueeze(0) * 0.9


def stats(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a - b).abs()
    return f"max {d.max().item():.3g}  mean {d.mean().item():.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=1024, help="ERP height (width = 2x); default 1024")
    ap.add_argument("--face", type=int, default=768, help="cube face size; default 768 (the released models)")
    ap.add_argument("--freq", type=float, default=1.0, help="angular frequency of the field's oscillating term (default 1)")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.height, args.face = 64, 32
    h, w, fs = args.height, 2 * args.height, args.face
    torch.set_grad_enabled(False)
    erp = field(erp_directions(h, w, dtype=torch.float64), args.freq)[None]  # [1, 1, H, W]
    cube = field(cubemap_directions(fs, dtype=torch.float64).permute(1, 0, 2, 3), args.freq).permute(1, 0, 2, 3)[None]
    print(f"ERP {h}x{w}, faces {fs} px, smooth field in [-1, 1] (freq {args.freq:g}), float64")
    c2e_exact = cubemap_to_erp(cube, h, w, stitching="exact")
    c2e_ref = cubemap_to_erp(cube, h, w, stitching="reference")
    print(f"c2e exact vs truth      : {stats(c2e_exact, erp)}")
    print(f"c2e reference vs truth  : {stats(c2e_ref, erp)}")
    print(f"c2e exact vs reference  : {stats(c2e_exact, c2e_ref)}")
    d = (c2e_exact - c2e_ref).abs()[0, 0]
    print(f"   pixels differing by > 1e-2: {int((d > 1e-2).sum())} of {d.numel()}; by > 0.1: {int((d > 0.1).sum())}")
    e2c_exact = erp_to_cubemap(erp, fs, stitching="exact")
    e2c_ref = erp_to_cubemap(erp, fs, stitching="reference")
    print(f"e2c exact vs reference  : {stats(e2c_exact, e2c_ref)}")
    print(f"e2c exact vs truth      : {stats(e2c_exact, cube)}")
    print(f"e2c reference vs truth  : {stats(e2c_ref, cube)}")
    rt_exact = cubemap_to_erp(e2c_exact, h, w, stitching="exact")
    rt_ref = cubemap_to_erp(e2c_ref, h, w, stitching="reference")
    print(f"round trip, exact       : {stats(rt_exact, erp)}")
    print(f"round trip, reference   : {stats(rt_ref, erp)}")
    try:
        import pytorch360convert as p360
    except ImportError:
        return
    faces = p360.e2c(erp[0], face_w=fs, cube_format="stack")
    back = p360.c2e(faces, h, w, cube_format="stack")
    print(f"round trip, pytorch360convert 0.2.3 e2c+c2e: {stats(back[None], erp)}")
    print(f"   ours (reference) vs pytorch360convert: {stats(rt_ref, back[None])}")


if __name__ == "__main__":
    main()
