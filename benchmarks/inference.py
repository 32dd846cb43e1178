#!/usr/bin/env python
"""Inference cost of PaGeR per 1024x512 panorama: seconds and peak memory.

Models (random weights; speed does not depend on the values):
  tiny   the test checkpoint of ``pager.model.tiny`` (always run)
  full   the full-size SD-2 architecture: diffusers UNet2DConditionModel with the SD-2 config
         (in_channels 8) + the SD VAE, one depth modality, RoPE, panorama-wide layers (``--full``; slow on CPU)

Each configuration runs in a fresh subprocess so that the CPU peak memory (max RSS) is its own; on CUDA the
peak is ``torch.cuda.max_memory_allocated``. Examples::

    python benchmarks/inference.py                                  # tiny model, faces 256/512, fp32/bf16
    python benchmarks/inference.py --full --face_sizes 256 --dtypes fp32 --models full
    python benchmarks/inference.py --device cuda --full
    python benchmarks/inference.py --layers      # full-size, face 256: panorama-wide vs per-face layers
    python benchmarks/inference.py --seams       # tiny model: ERP jumps at face borders vs inside faces
"""
from __future__ import annotations

import argparse
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

SD2_UNET = dict(
    sample_size=96, in_channels=8, out_channels=4, layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
    use_linear_projection=True, norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=768,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], scaling_factor=0.18215,
)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_model(kind: str, tmp: str, panorama_layers: bool = True):
    import torch

    from pager.model import Pager
    from pager.model.loading import ModalityConfig

    if kind == "tiny":
        from pager.model.tiny import build_tiny_checkpoint

        os.environ.setdefault("PAGER_CACHE_DIR", str(Path(tmp) / "cache"))
        ck = build_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        return Pager.from_pretrained(str(ck), device="cpu", panorama_layers=panorama_layers)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD2_UNET)
    vae = AutoencoderKL(**SD_VAE)
    cfg = ModalityConfig(modality="depth", positional_encoding="RoPE", face_size=768)
    return Pager(vae, {"depth": unet}, {"depth": cfg}, torch.randn(1, 77, 1024), alpha_prod=0.0,
                 panorama_layers=panorama_layers)


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one configuration in this process and return its measurements."""
    import torch

    from pager.model.pager_model import parse_dtype

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    dtype = parse_dtype(spec["dtype"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = build_model(spec["model"], tmp, spec.get("panorama_layers", True)).to(device=device, dtype=dtype)
        build_s = time.perf_counter() - t0
        rss_model = rss_mb()
        x = torch.rand(1, 3, 512, 1024, device=device) * 2 - 1
        times: List[float] = []
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(spec["warmup"] + spec["repeats"]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.predict(x, face_size=spec["face_size"])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        times = times[spec["warmup"]:]
        res = dict(spec, seconds=min(times), build_s=build_s, rss_after_build_mb=rss_model, peak_rss_mb=rss_mb(),
                   finite=bool(torch.isfinite(out["depth"]).all()))
        if device.type == "cuda":
            res["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return res


def run_spec(spec: Dict[str, Any], timeout: int) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--_worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timeout after {timeout}s")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        return dict(spec, error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(lines[-1])


def seams(face_size: int = 32, seeds=(0, 1, 2)) -> None:
    """Tiny random models on a smooth panorama: mean ERP jump across face borders / inside faces."""
    import torch
    import torch.nn.functional as F

    from pager.geometry.cubemap import cubemap_to_erp
    from pager.model import Pager
    from pager.model.tiny import build_tiny_checkpoint

    torch.set_num_threads(1)
    h = 2 * face_size
    lab = cubemap_to_erp(torch.arange(6.0).view(1, 6, 1, 1, 1).expand(1, 6, 1, face_size, face_size).contiguous(),
                         h, 2 * h, mode="nearest")[0, 0]
    lh, lv = lab[:, 1:] != lab[:, :-1], lab[1:] != lab[:-1]
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(1, 3, 8, 16, generator=g), size=(h, 2 * h), mode="bicubic", align_corners=False)
    x = (x * 2 - 1).clamp(-1, 1)
    print(f"\nseams: smooth random panorama {2 * h}x{h}, face {face_size}; mean |ERP jump| across borders / inside faces")
    print(f"{'seed':>4} {'cube pad: border':>17} {'inside':>8} {'ratio':>6} | {'zero pad: border':>17} {'inside':>8} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PAGER_CACHE_DIR", str(Path(tmp) / "cache"))
        for seed in seeds:
            ck = build_tiny_checkpoint(Path(tmp) / f"s{seed}", seed=seed)
            row = []
            for cp in (True, False):
                out = Pager.from_pretrained(str(ck), cube_padding=cp, device="cpu").predict(x, face_size=face_size)
                v = out["depth_values"][0]
                dh, dv = (v[:, 1:] - v[:, :-1]).abs(), (v[1:] - v[:-1]).abs()
                b = torch.cat([dh[lh], dv[lv]]).mean().item()
                i = torch.cat([dh[~lh], dv[~lv]]).mean().item()
                row += [b, i, b / i]
            print(f"{seed:>4} {row[0]:>17.4f} {row[1]:>8.4f} {row[2]:>6.2f} | {row[3]:>17.4f} {row[4]:>8.4f} {row[5]:>6.2f}")
    print("(random 3x3 kernels are not rotation invariant, so faces seen in different orientations differ even with\n"
          " perfect padding; the exact oracle is a uniform panorama, see tests/test_model_seams.py)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--full", action="store_true", help="also run the full-size SD-2 architecture (slow on CPU)")
    parser.add_argument("--models", nargs="+", default=None, choices=("tiny", "full"))
    parser.add_argument("--face_sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    parser.add_argument("--layers", action="store_true",
                        help="full-size model, face 256: panorama-wide (joint attention, panorama GroupNorm, RoPE) vs per-face layers")
    parser.add_argument("--seams", action="store_true", help="tiny models: face-border jumps with and without cube padding")
    parser.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.face_sizes, args.dtypes, args.repeats, args.warmup, args.threads = ["tiny"], [32], ["fp32"], 1, 0, 1
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return 0
    if args.seams:
        seams()
        return 0
    specs = []
    if args.layers:
        for pl in (True, False):
            specs.append(dict(model="full", face_size=256, dtype="fp32", device=args.device, panorama_layers=pl,
                              repeats=args.repeats, warmup=args.warmup, threads=args.threads))
    else:
        models = args.models or (["tiny", "full"] if args.full else ["tiny"])
        for model in models:
            for fs in args.face_sizes:
                for dt in args.dtypes:
                    specs.append(dict(model=model, face_size=fs, dtype=dt, device=args.device, repeats=args.repeats,
                                      warmup=args.warmup, threads=args.threads))
    import platform

    print(f"PaGeR inference, one 1024x512 panorama, device={args.device}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats} after {args.warmup} warm-up")
    head = f"{'model':<6} {'layers':<9} {'face':>5} {'dtype':<5} {'seconds':>9} {'peak RSS MB':>12} {'RSS model MB':>13}"
    if args.device.startswith("cuda"):
        head += f" {'peak CUDA MB':>13}"
    print(head)
    failed = 0
    for spec in specs:
        r = run_spec(spec, args.timeout)
        layers = "panorama" if spec.get("panorama_layers", True) else "per-face"
        if "error" in r:
            print(f"{spec['model']:<6} {layers:<9} {spec['face_size']:>5} {spec['dtype']:<5} error: {r['error']}")
            failed += 1
            continue
        line = (f"{r['model']:<6} {layers:<9} {r['face_size']:>5} {r['dtype']:<5} {r['seconds']:>9.3f} "
                f"{r['peak_rss_mb']:>12.0f} {r['rss_after_build_mb']:>13.0f}")
        if "peak_cuda_mb" in r:
            line += f" {r['peak_cuda_mb']:>13.0f}"
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
