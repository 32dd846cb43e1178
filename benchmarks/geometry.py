"""Geometry benchmark: ERP<->cubemap and cube-padded convolutions (prints a table).

    python benchmarks/geometry.py                 # CPU, 2 threads
    python benchmarks/geometry.py --device cuda   # GPU (py360convert rows are CPU/numpy only)

Rows: our e2c / c2e against pytorch360convert and py360convert on a 2048x1024 float32 panorama with
512-pixel faces (targets: e2c >= 3x, c2e >= 8x faster than pytorch360convert), and a 3x3 convolution
on cube faces with our cube padding against the same convolution on an input zero-padded with F.pad
(target: <= 1.10x) and against a naive padding with a Python loop over faces, on a large map
(6, 128, 64, 64) and a small one (6, 320, 8, 8). Timings are the best of --repeat interleaved runs after warm-up
(grids and index tables are cached, as in real use). On a shared machine expect noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pager.geometry import cube_pad, cubemap_to_erp, erp_to_cubemap  # noqa: E402
from pager.geometry.cube_padding import _pad_table  # noqa: E402


CLOCK = time.perf_counter


def timeit_many(fns: Dict[str, Callable[[], object]], device: torch.device, repeat: int, warmup: int = 2) -> Dict[str, float]:
    """Best-of-``repeat`` wall time of each function, runs interleaved (A, B, C, A, B, C, ...) so that
    a shared machine's load hits all candidates alike; the minimum is the least noisy estimator."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = CLOCK()
            fn()
            sync()
            times[k].append(CLOCK() - t0)
    return {k: min(v) for k, v in times.items()}


def naive_loop_pad(x: torch.Tensor) -> torch.Tensor:
    """1-pixel cube padding with a Python loop over faces and sides (for contrast, same result)."""
    fs = x.shape[-1]
    (df, dp, sf, sp), corners = _pad_table(fs, (1, 1, 1, 1))
    n = x.shape[0] // 6
    y = x.new_empty(x.shape[0], x.shape[1], fs + 2, fs + 2)
    y[:, :, 1:-1, 1:-1] = x
    xv = x.view(n, 6, x.shape[1], fs * fs)
    yv = y.view(n, 6, x.shape[1], (fs + 2) ** 2)
    for f in range(6):
        sel = df == f
        for g in range(6):  # one copy per (face, neighbour) pair: 4 per face
            part = sel & (sf == g)
            if part.any():
                yv[:, f, :, dp[part]] = xv[:, g, :, sp[part]]
        for cf, cp, fa, pa, fb, pb in zip(*corners):
            if cf == f:
                yv[:, f, :, cp] = 0.5 * (xv[:, fa, :, pa] + xv[:, fb, :, pb])
    return y


def fmt(t: Optional[float]) -> str:
    return "n/a" if t is None else f"{t * 1e3:9.2f} ms"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--face", type=int, default=512)
    ap.add_argument("--skip-peers", action="store_true", help="skip pytorch360convert / py360convert")
    ap.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed time; cpu: CPU time of this process (all threads), less sensitive to other load",
    )
    ap.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.height, args.face, args.repeat, args.skip_peers, args.threads = 64, 32, 1, True, 1
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    h, w, fs = args.height, 2 * args.height, args.face
    rows = []

    erp = torch.rand(1, 3, h, w, device=device)
    cube = erp_to_cubemap(erp, fs)
    e2c_fns: Dict[str, Callable[[], object]] = {"ours": lambda: erp_to_cubemap(erp, fs)}
    c2e_fns: Dict[str, Callable[[], object]] = {"ours": lambda: cubemap_to_erp(cube, h, w)}
    if not args.skip_peers:
        try:
            from pytorch360convert import c2e as p360_c2e, e2c as p360_e2c

            e2c_fns["p360"] = lambda: p360_e2c(erp[0], fs, cube_format="stack")
            c2e_fns["p360"] = lambda: p360_c2e(cube[0], h, w, cube_format="stack")
        except ImportError:
            pass
        try:
            import py360convert

            e_np = erp[0].permute(1, 2, 0).cpu().numpy()
            c_np = [f.permute(1, 2, 0).cpu().numpy() for f in cube[0]]
            e2c_fns["py360"] = lambda: py360convert.e2c(e_np, fs, cube_format="list")
            c2e_fns["py360"] = lambda: py360convert.c2e(c_np, h, w, cube_format="list")
        except ImportError:
            pass
    te = timeit_many(e2c_fns, device, args.repeat, warmup=1)
    tc = timeit_many(c2e_fns, device, args.repeat, warmup=1)
    t_e2c, p_e2c, n_e2c = te["ours"], te.get("p360"), te.get("py360")
    t_c2e, p_c2e, n_c2e = tc["ours"], tc.get("p360"), tc.get("py360")

    def speed(ref: Optional[float], ours: float) -> str:
        return "" if ref is None else f"{ref / ours:6.1f}x"

    rows.append(("e2c %dx%d -> 6x%d" % (w, h, fs), fmt(t_e2c), fmt(p_e2c), speed(p_e2c, t_e2c), fmt(n_e2c), speed(n_e2c, t_e2c)))
    rows.append(("c2e 6x%d -> %dx%d" % (fs, w, h), fmt(t_c2e), fmt(p_c2e), speed(p_c2e, t_c2e), fmt(n_c2e), speed(n_c2e, t_c2e)))
    print(f"\ndevice={device} threads={torch.get_num_threads()} torch={torch.__version__} clock={args.clock} (float32, best of {args.repeat} interleaved runs; conv rows best of {4 * args.repeat})")
    print(f"{'ERP <-> cube':28s} {'ours':>12s} {'pytorch360':>12s} {'speed-up':>8s} {'py360convert':>12s} {'speed-up':>8s}")
    for r in rows:
        print(f"{r[0]:28s} {r[1]:>12s} {r[2]:>12s} {r[3]:>8s} {r[4]:>12s} {r[5]:>8s}")

    print(f"\n{'3x3 conv on cube faces':28s} {'F.pad+conv':>12s} {'cube pad':>12s} {'ratio':>8s} {'loop pad':>12s} {'ratio':>8s} {'pad only':>12s}")
    for shape in ((6, 128, 64, 64), (6, 320, 8, 8)):
        n, c, hh, ww = shape
        x = torch.randn(shape, device=device)
        weight = torch.randn(c, c, 3, 3, device=device) * 0.01
        bias = torch.randn(c, device=device)
        assert torch.allclose(naive_loop_pad(x), cube_pad(x, 1))
        t = timeit_many(
            {
                "zero": lambda: F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, bias),
                "cube": lambda: F.conv2d(cube_pad(x, 1), weight, bias),
                "loop": lambda: F.conv2d(naive_loop_pad(x), weight, bias),
                "pad": lambda: cube_pad(x, 1),
            },
            device,
            args.repeat * 4,
        )
        t_zero, t_cube, t_loop, t_pad = t["zero"], t["cube"], t["loop"], t["pad"]
        label = "x".join(str(s) for s in shape)
        print(f"{label:28s} {fmt(t_zero):>12s} {fmt(t_cube):>12s} {t_cube / t_zero:7.2f}x {fmt(t_loop):>12s} {t_loop / t_zero:7.2f}x {fmt(t_pad):>12s}")


if __name__ == "__main__":
    main()
