#!/usr/bin/env python
"""VAE decoding (or, ``--part encoder``, encoding) of one panorama, untiled vs tiled (``Pager.enable_tiled_decoding``
/ ``enable_tiled_encoding``): seconds and peak memory.

The full-size SD VAE (``benchmarks/inference.py``'s ``SD_VAE``, random weights: speed and memory do not depend on
the values) with reference cube padding and panorama-wide layers, as in the released checkpoints, decodes latents
``[6, 4, F/8, F/8]`` of one panorama (or encodes its RGB faces ``[6, 3, F, F]`` into the moments). Each (face size, mode) runs in a fresh subprocess; the peak is the highest
resident memory during the decode above the level before it (the kernel's peak counter, reset through
``/proc/self/clear_refs``; elsewhere the process's max RSS), and the total peak RSS of the process. The tiled
output is compared with the untiled one of the same size (max |difference| relative to max |untiled|).

    python benchmarks/tiled_decoding.py --face_sizes 256 512 768
    python benchmarks/tiled_decoding.py --face_sizes 768 --modes tiled --band_mb 32
    python benchmarks/tiled_decoding.py --part encoder --face_sizes 768
    python benchmarks/tiled_decoding.py --smoke        # a small VAE, face 32
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMOKE_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                 down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                 block_out_channels=[8, 16, 16])


def sd_vae_config() -> Dict[str, Any]:
    spec = importlib.util.spec_from_file_location("bench_inference", Path(__file__).with_name("inference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return dict(mod.SD_VAE)


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Decode once in this process; return seconds and memory."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

    from pager.geometry import convert_to_cube_padding
    from pager.model.panorama_layers import make_panorama_wide
    from pager.model.pager_model import parse_dtype
    from pager.model.tiled_decoding import TiledDecoding, tiled_decode, tiled_encode

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    vae = AutoencoderKL(**(SMOKE_VAE if spec["smoke"] else sd_vae_config())).eval()
    vae = make_panorama_wide(convert_to_cube_padding(vae, mode="reference")).to(parse_dtype(spec["dtype"]))
    latent = spec["face_size"] // 8 if not spec["smoke"] else spec["face_size"] // 4
    encoder = spec.get("part") == "encoder"
    if encoder:
        size = spec["face_size"]
        z = (torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(vae.dtype)
    else:
        z = torch.randn(6, 4, latent, latent, generator=torch.Generator().manual_seed(1)).to(vae.dtype)
    cfg = TiledDecoding(band_mb=spec["band_mb"])

    def run() -> torch.Tensor:
        with torch.inference_mode():
            if encoder:
                return tiled_encode(vae, z, cfg) if spec["mode"] == "tiled" else vae.encode(z).latent_dist.parameters
            if spec["mode"] == "tiled":
                return tiled_decode(vae, z, cfg)
            return vae.decode(z, return_dict=False)[0]

    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # peak resident size := current
    except OSError:
        reset = False
    base = _status("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(spec["out"], out.float().numpy())
    return dict(spec, seconds=seconds, added_mb=(peak - base) / 2**20, peak_rss_mb=peak / 2**20,
                peak_is_reset=reset, threads=torch.get_num_threads())


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--face_sizes", type=int, nargs="+", default=[256, 512], help="face sizes F (multiples of 8)")
    parser.add_argument("--modes", nargs="+", default=["untiled", "tiled"], choices=("untiled", "tiled"))
    parser.add_argument("--part", default="decoder", choices=("decoder", "encoder"), help="which half of the VAE")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--band_mb", type=float, default=64.0, help="tiled: target MiB of one band")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--smoke", action="store_true", help="smallest settings: a small VAE, face 32")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return 0
    sizes = [32] if args.smoke else args.face_sizes
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            outs = {}
            for mode in args.modes:
                out = str(Path(tmp) / f"{size}_{mode}.npy")
                spec = dict(face_size=size, mode=mode, part=args.part, dtype=args.dtype, band_mb=args.band_mb,
                            threads=args.threads, smoke=args.smoke, out=out)
                try:
                    proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], capture_output=True,
                                          text=True, timeout=args.timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
                except subprocess.TimeoutExpired:
                    proc = None
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")] if proc is not None else []
                if proc is None:
                    row = dict(spec, error=f"timeout after {args.timeout} s (--timeout)")
                elif proc.returncode or not lines:
                    row = dict(spec, error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
                else:
                    row = json.loads(lines[-1])
                    outs[mode] = out
                rows.append(row)
                print(json.dumps(row), flush=True)
            if len(outs) == 2:
                import numpy as np

                a, b = np.load(outs["untiled"]), np.load(outs["tiled"])
                rel = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
                rows[-1]["rel_diff_vs_untiled"] = rel
    print(f"\nVAE {'encode' if args.part == 'encoder' else 'decode'} of one panorama ({'small VAE' if args.smoke else 'SD VAE'}, {args.dtype}, "
          f"reference cube padding, panorama-wide layers; load {os.getloadavg()[0]:.2f})")
    print(f"{'F':>5} {'mode':>8} {'seconds':>9} {'added MB':>9} {'peak RSS MB':>12} {'rel diff':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['face_size']:>5} {r['mode']:>8}  error: {r['error']}")
            continue
        diff = f"{r['rel_diff_vs_untiled']:.1e}" if "rel_diff_vs_untiled" in r else ""
        print(f"{r['face_size']:>5} {r['mode']:>8} {r['seconds']:>9.2f} {r['added_mb']:>9.0f} {r['peak_rss_mb']:>12.0f} "
              f"{diff:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
