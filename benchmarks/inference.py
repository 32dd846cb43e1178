#!/usr/bin/env python
"""Inference cost of PaGeR per 1024x512 panorama: seconds and peak memory.

Models (random weights; speed does not depend on the values):
  tiny   the test checkpoint of ``pager.model.tiny`` (always run)
  full   the full-size SD-2 architecture: diffusers UNet2DConditionModel with the SD-2 config
         (in_channels 8) + the SD VAE, one depth modality, RoPE, panorama-wide layers (``--full``; slow on CPU)

Each configuration runs in a fresh subprocess so that the CPU peak memory (max RSS) is its own; on CUDA the
peak is ``torch.cuda.max_memory_allocated``. ``seconds`` is wall time, ``CPU s`` the process CPU time of the same
call (all threads; on a loaded machine with ``--threads 1`` it is the figure that load does not inflate). Examples::

    python benchmarks/inference.py                                  # tiny model, faces 256/512, fp32/bf16
    python benchmarks/inference.py --full --face_sizes 256 --dtypes fp32 --models full
    python benchmarks/inference.py --device cuda --full
    python benchmarks/inference.py --layers      # full-size, face 256: panorama-wide vs per-face layers
    python benchmarks/inference.py --seams       # tiny model: ERP jumps at face borders vs inside faces
    python benchmarks/inference.py --face_sizes 64 --dtypes fp32 --repeats 3 --compile   # torch.compile (tiny)
    python benchmarks/inference.py --compare_plain --face_sizes 256 --dtypes fp32 bf16 --repeats 2 --profile

``--compare_plain`` builds the full-size model twice in ONE process, sharing the weights: "ours" (cube padding,
panorama-wide GroupNorm / joint attention, sphere RoPE) and "plain" (the same diffusers networks on six
independent faces: zero padding, per-face GroupNorm and attention, no RoPE), runs the same ``predict`` on both
with the repetitions interleaved (ours, plain, ours, plain, ...) so that the ratio survives a loaded machine,
and prints the best seconds, ours/plain, and the peak memory each run added (resident memory sampled every
2 ms above its level before the run; on CUDA ``max_memory_allocated``). ``--profile`` runs the last
repetition under ``torch.profiler`` and adds a table by operator (self time, ours vs plain).
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
        model.enable_tiled_decoding(bool(spec.get("tiled_decoding") or spec.get("tiled_vae")))
        model.enable_tiled_encoding(bool(spec.get("tiled_vae")))
        model.optimize(channels_last=bool(spec.get("channels_last")), compile=bool(spec.get("compile")))
        build_s = time.perf_counter() - t0
        rss_model = rss_mb()
        x = torch.rand(1, 3, 512, 1024, device=device) * 2 - 1
        times: List[float] = []
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        cpu: List[float] = []
        for _ in range(spec["warmup"] + spec["repeats"]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            out = model.predict(x, face_size=spec["face_size"])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        first_s, times, cpu = times[0], times[spec["warmup"]:], cpu[spec["warmup"]:]
        res = dict(spec, seconds=min(times), cpu_s=min(cpu), first_s=first_s, build_s=build_s, rss_after_build_mb=rss_model, peak_rss_mb=rss_mb(),
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


class PeakRSS:
    """Context manager: peak resident memory (MB) above the level at entry, sampled by a thread every 2 ms."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = 0.0

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def __enter__(self) -> "PeakRSS":
        import threading

        self.base = self.peak = self._rss()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def added(self) -> float:
        return self.peak - self.base


# --smoke --compare_plain: the same block structure with few channels (checks that the mode runs, in seconds)
SMOKE_UNET = dict(SD2_UNET, block_out_channels=[32, 32, 64, 64], attention_head_dim=[2, 2, 4, 4])
SMOKE_VAE = dict(SD_VAE, block_out_channels=[32, 32, 64, 64])


def build_pair(dtype_name: str, device: str, smoke: bool = False):
    """Full-size "ours" and "plain" Pager models sharing one set of random weights (see the module docstring);
    ``smoke``: the same structure with few channels."""
    import copy

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pager.model import Pager
    from pager.model.loading import ModalityConfig
    from pager.model.pager_model import parse_dtype

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(SMOKE_UNET if smoke else SD2_UNET)).to(device=device, dtype=parse_dtype(dtype_name))
    vae = AutoencoderKL(**(SMOKE_VAE if smoke else SD_VAE)).to(device=device, dtype=parse_dtype(dtype_name))
    prompt = torch.randn(1, 77, 1024)
    cfg = ModalityConfig(modality="depth", positional_encoding="RoPE", face_size=768)
    models = {}
    for name, special in (("ours", True), ("plain", False)):
        shared = {id(p): p for p in list(unet.parameters()) + list(vae.parameters())}  # same Parameter objects
        u, v = copy.deepcopy(unet, memo=dict(shared)), copy.deepcopy(vae, memo=dict(shared))
        models[name] = Pager(v, {"depth": u}, {"depth": cfg}, prompt, alpha_prod=0.0, cube_padding=special,
                             panorama_layers=special).to(device)
    return models


def profile_table(tables: Dict[str, Any], top: int = 25) -> str:
    """Side-by-side table of self time per operator (ms) from ``torch.profiler`` key averages."""
    rows: Dict[str, Dict[str, float]] = {}
    for name, events in tables.items():
        for ev in events:
            r = rows.setdefault(ev.key, {})
            r[name] = r.get(name, 0.0) + ev.self_cpu_time_total / 1e3
            r[name + "_n"] = r.get(name + "_n", 0) + ev.count
    total = {n: sum(r.get(n, 0.0) for r in rows.values()) for n in tables}
    order = sorted(rows, key=lambda k: -max(rows[k].get("ours", 0.0), rows[k].get("plain", 0.0)))[:top]
    out = [f"{'operator':<44} {'ours ms':>10} {'calls':>6} {'plain ms':>10} {'calls':>6} {'ours-plain':>11}"]
    for k in order:
        r = rows[k]
        out.append(f"{k[:44]:<44} {r.get('ours', 0.0):>10.1f} {int(r.get('ours_n', 0)):>6} {r.get('plain', 0.0):>10.1f} "
                   f"{int(r.get('plain_n', 0)):>6} {r.get('ours', 0.0) - r.get('plain', 0.0):>+11.1f}")
    out.append(f"{'total (self time, all operators)':<44} {total.get('ours', 0.0):>10.1f} {'':>6} "
               f"{total.get('plain', 0.0):>10.1f} {'':>6} {total.get('ours', 0.0) - total.get('plain', 0.0):>+11.1f}")
    return "\n".join(out)


def compare_plain(args: argparse.Namespace) -> int:
    """ours vs plain in one process, interleaved (see the module docstring)."""
    import platform

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    arch = "SD-2 structure with few channels (--smoke)" if args.smoke else "full-size SD-2 UNet + SD VAE"
    print(f"ours vs plain, {arch} (random weights), one {2 * max(args.face_sizes)}x"
          f"{max(args.face_sizes)}-px-face panorama per run; device={args.device}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}, torch {torch.__version__}; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {args.repeats} interleaved after {args.warmup} warm-up",
          flush=True)
    head = f"{'face':>5} {'dtype':<5} {'ours s':>8} {'plain s':>8} {'ours/plain':>10} {'ours peak MB':>13} {'plain peak MB':>14}"
    results = []
    for dtype_name in args.dtypes:
        models = build_pair(dtype_name, args.device, smoke=args.smoke)
        for name, m in models.items():
            if args.channels_last or args.compile:
                m.optimize(channels_last=args.channels_last, compile=args.compile)
            m.enable_tiled_decoding(args.tiled_decoding or args.tiled_vae)
            m.enable_tiled_encoding(args.tiled_vae)
        for fs in args.face_sizes:
            x = torch.rand(1, 3, fs * 2, fs * 4, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
            times: Dict[str, List[float]] = {"ours": [], "plain": []}
            cpu_times: Dict[str, List[float]] = {"ours": [], "plain": []}
            peaks: Dict[str, float] = {"ours": 0.0, "plain": 0.0}
            tables: Dict[str, Any] = {}
            for rep in range(args.warmup + args.repeats):
                for name, m in models.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    prof = None
                    if args.profile and rep == args.warmup + args.repeats - 1:  # profile the last repetition
                        from torch.profiler import ProfilerActivity, profile

                        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                        prof = profile(activities=acts)
                        prof.__enter__()
                    with PeakRSS() as mem:
                        t, cpu0 = time.perf_counter(), time.process_time()
                        out = m.predict(x, face_size=fs)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        dt = time.perf_counter() - t
                        dcpu = time.process_time() - cpu0
                    if prof is not None:
                        prof.__exit__(None, None, None)
                        tables[name] = prof.key_averages()
                    assert torch.isfinite(out["depth_values"]).all(), f"{name}: non-finite output"
                    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else mem.added
                    if rep >= args.warmup:
                        times[name].append(dt)
                        cpu_times[name].append(dcpu)
                        peaks[name] = max(peaks[name], peak)
                    print(f"  run {rep} {name:<5} face {fs} {dtype_name}: {dt:.2f} s (CPU {dcpu:.2f} s), peak +{peak:.0f} MB, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
            best = {k: min(v) for k, v in times.items()}
            best_cpu = {k: min(v) for k, v in cpu_times.items()}
            results.append((fs, dtype_name, best, peaks, tables))
            print(f"  face {fs} {dtype_name}: ours/plain {best['ours'] / best['plain']:.3f} (wall), "
                  f"{best_cpu['ours'] / best_cpu['plain']:.3f} (process CPU time: ours {best_cpu['ours']:.1f} s, plain "
                  f"{best_cpu['plain']:.1f} s; with --threads 1 the figure least sensitive to other jobs)", flush=True)
            if tables:  # printed as soon as measured (a long run may be stopped before its end)
                print(f"\nprofile, face {fs}, {dtype_name} (self time by operator, one run each)")
                print(profile_table(tables), flush=True)
        del models
    print("\n" + head)
    for fs, dtype_name, best, peaks, _ in results:
        print(f"{fs:>5} {dtype_name:<5} {best['ours']:>8.2f} {best['plain']:>8.2f} {best['ours'] / best['plain']:>10.3f} "
              f"{peaks['ours']:>13.0f} {peaks['plain']:>14.0f}")
    fp32 = {fs: best["plain"] for fs, d, best, _, _ in results if d == "fp32"}
    for fs, dtype_name, best, _, _ in results:
        if dtype_name != "fp32" and fs in fp32:
            print(f"face {fs}: ours {dtype_name} / plain fp32 = {best['ours'] / fp32[fs]:.3f}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (absolute seconds are inflated by "
          f"other jobs on a shared machine; the interleaved ratios are the figures to compare)")
    return 0


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
    parser.add_argument("--compare_plain", action="store_true",
                        help="full-size model: ours vs plain diffusers in one process, interleaved (ratios, peak memory)")
    parser.add_argument("--profile", action="store_true", help="with --compare_plain: torch.profiler table by operator")
    parser.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (the first call compiles: its seconds are printed apart)")
    parser.add_argument("--tiled_decoding", action="store_true",
                        help="exact low-memory VAE decoding in bands of rows (Pager.enable_tiled_decoding; with "
                             "--compare_plain for both models)")
    parser.add_argument("--tiled_vae", action="store_true",
                        help="exact low-memory VAE encoding and decoding in bands of rows (Pager.enable_tiled_vae: "
                             "what --tiled_vae of the commands does; with --compare_plain for both models)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.face_sizes, args.dtypes, args.repeats, args.warmup, args.threads = ["tiny"], [32], ["fp32"], 1, 0, 1
        if args.compare_plain:
            args.face_sizes = [64]  # the SD-2 structure needs multiples of 64
    if args.compile and args.warmup < 1 and not args._worker:
        parser.error("--compile needs --warmup >= 1 (the first call compiles)")
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return 0
    if args.seams:
        seams()
        return 0
    if args.compare_plain:
        return compare_plain(args)
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
                                      warmup=args.warmup, threads=args.threads, tiled_decoding=args.tiled_decoding,
                                      tiled_vae=args.tiled_vae,
                                      channels_last=args.channels_last, compile=args.compile))
    import platform

    print(f"PaGeR inference, one 1024x512 panorama, device={args.device}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats} after {args.warmup} warm-up")
    flags = [f for f in ("channels_last", "compile", "tiled_decoding", "tiled_vae") if getattr(args, f)]
    if flags:
        print("fast path: " + ", ".join(flags))
    head = (f"{'model':<6} {'layers':<9} {'face':>5} {'dtype':<5} {'seconds':>9} {'CPU s':>9} {'first call s':>12} {'peak RSS MB':>12} "
            f"{'RSS model MB':>13}")
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
        line = (f"{r['model']:<6} {layers:<9} {r['face_size']:>5} {r['dtype']:<5} {r['seconds']:>9.3f} {r['cpu_s']:>9.3f} {r['first_s']:>12.3f} "
                f"{r['peak_rss_mb']:>12.0f} {r['rss_after_build_mb']:>13.0f}")
        if "peak_cuda_mb" in r:
            line += f" {r['peak_cuda_mb']:>13.0f}"
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
