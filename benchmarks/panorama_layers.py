"""Cost of the panorama-wide layers against plain per-face layers, full-size SD-2 architecture.

For the Stable Diffusion 2 UNet (random weights, ``block_out_channels (320, 640, 1280, 1280)``, 5/10/20/20 heads
of 64 channels, cross-attention dim 1024, linear projections) and the SD VAE, on one panorama (6 faces of
``--face`` pixels, latent ``face/8``), one forward each:

- ``plain``: diffusers as is (per-face GroupNorm and attention, ``AttnProcessor2_0``);
- ``panorama``: :func:`pager.model.panorama_layers.make_panorama_wide` (six-face GroupNorm + joint attention);
- ``panorama+rope``: the same with sphere RoPE (UNet self-attention; VAE in the reference pairing).

Every measurement runs in a fresh subprocess so that the peak resident memory (``ru_maxrss``) belongs to it alone.
Columns: seconds of the forward (UNet: one call; VAE: encode + decode), of it the seconds spent inside GroupNorm
modules and inside attention modules (forward hooks; the VAE attention's own GroupNorm counts in both), resident
memory after building the model, peak resident memory, and the peak's growth over the built model (activations).
On a shared machine the total seconds are noisy; the per-layer columns show the cost of the layers themselves.

    python benchmarks/panorama_layers.py                   # UNet and VAE, face 256, fp32, CPU
    python benchmarks/panorama_layers.py --models unet --face 512 --dtype bf16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SD2_UNET = dict(
    sample_size=96,
    in_channels=8,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    attention_head_dim=[5, 10, 20, 20],  # diffusers' legacy name: heads per level (64 channels each)
    cross_attention_dim=1024,
    use_linear_projection=True,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
)
#: --smoke: the SD VAE's block structure with few channels (checks that the script runs, in seconds)
SMOKE_VAE = dict(SD_VAE, block_out_channels=[32, 32, 64, 64])
VARIANTS = ("plain", "panorama", "panorama+rope")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pager.model.panorama_layers import make_panorama_wide

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    device = torch.device(args.device)
    torch.manual_seed(0)
    latent = args.face // 8
    if args.model == "unet":
        model = UNet2DConditionModel(**{**SD2_UNET, "in_channels": args.in_channels, "sample_size": latent})
    else:
        model = AutoencoderKL(**(SMOKE_VAE if args.smoke else SD_VAE))
    model = model.to(device=device, dtype=dtype).eval()
    if args.variant != "plain":
        rope = args.variant == "panorama+rope"
        order = "reference_vae" if args.model == "vae" else "face_row_col"
        make_panorama_wide(model, rope=rope, rope_token_order=order)
    n = 6 * args.panoramas
    gen = torch.Generator().manual_seed(1)
    if args.model == "unet":
        inputs = (
            torch.randn(n, args.in_channels, latent, latent, generator=gen).to(device, dtype),
            torch.randn(n, 77, 1024, generator=gen).to(device, dtype),
        )
    else:
        inputs = (torch.randn(n, 3, args.face, args.face, generator=gen).to(device, dtype),)

    def run() -> None:
        if args.model == "unet":
            model(inputs[0], 999, inputs[1])
        else:
            model.decode(model.encode(inputs[0]).latent_dist.mode())

    # time spent inside GroupNorm modules and attention modules (an attention's own GroupNorm counts in both)
    from diffusers.models.attention_processor import Attention

    spent = {"groupnorm": 0.0, "attention": 0.0}
    starts: dict[int, float] = {}

    def _pre(module, _inputs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        starts[id(module)] = time.perf_counter()

    def _post(kind):
        def hook(module, _inputs, _output):
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent[kind] += time.perf_counter() - starts.pop(id(module))

        return hook

    for module in model.modules():
        kind = "groupnorm" if isinstance(module, torch.nn.GroupNorm) else "attention" if isinstance(module, Attention) else None
        if kind:
            module.register_forward_pre_hook(_pre)
            module.register_forward_hook(_post(kind))

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_built = _rss_mib()
    times = []
    layer_times = []
    with torch.inference_mode():
        for _ in range(args.repeats):
            spent.update(groupnorm=0.0, attention=0.0)
            t0 = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            layer_times.append(dict(spent))
    best = min(range(len(times)), key=times.__getitem__)
    out = {
        "model": args.model,
        "variant": args.variant,
        "seconds": times[best],
        "groupnorm_seconds": layer_times[best]["groupnorm"],
        "attention_seconds": layer_times[best]["attention"],
        "rss_built_mib": rss_built,
        "peak_rss_mib": _peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("unet", "vae"), default=["unet", "vae"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--face", type=int, default=256, help="face size in pixels (multiple of 64)")
    parser.add_argument("--panoramas", type=int, default=1)
    parser.add_argument("--in-channels", type=int, default=8, choices=(8, 10))
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="forwards per measurement (the fastest is kept)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="smallest settings: checks that the script runs (the numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke and not args.worker:
        args.models, args.variants, args.face, args.threads = ["vae"], ["panorama"], 64, 1
    if args.face % 64:
        parser.error(f"--face must be a multiple of 64, got {args.face}")

    if args.worker:
        args.model, args.variant = args.worker
        print(json.dumps(worker(args)))
        return 0

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    failed = 0
    print(
        f"panorama-wide layers vs per-face layers: face {args.face} px, {args.panoramas} panorama(s) "
        f"({6 * args.panoramas} faces), {args.dtype}, {args.device}"
    )
    header = (f"{'model':<5} {'variant':<14} {'seconds':>8} {'GroupNorm s':>12} {'attention s':>12} "
              f"{'RSS built MiB':>14} {'peak RSS MiB':>13} {'activ. MiB':>11}")
    if args.device.startswith("cuda"):
        header += f" {'peak CUDA MiB':>14}"
    print(header)
    for model in args.models:
        for variant in args.variants:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", model, variant, "--face", str(args.face),
                   "--panoramas", str(args.panoramas), "--in-channels", str(args.in_channels), "--dtype", args.dtype,
                   "--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
            cmd += ["--smoke"] if args.smoke else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"{model:<5} {variant:<14} FAILED: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                failed += 1
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            line = (f"{model:<5} {variant:<14} {row['seconds']:>8.2f} {row['groupnorm_seconds']:>12.2f} "
                    f"{row['attention_seconds']:>12.2f} {row['rss_built_mib']:>14.0f} "
                    f"{row['peak_rss_mib']:>13.0f} {row['peak_rss_mib'] - row['rss_built_mib']:>11.0f}")
            if "peak_cuda_mib" in row:
                line += f" {row['peak_cuda_mib']:>14.0f}"
            print(line, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
