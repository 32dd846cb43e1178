#!/usr/bin/env python
"""GPU check of PaGeR (issue 17); run through ``benchmarks/gpu_check.sh``, which prepares the interpreter.

Steps (each row of the final table):

1. ``fidelity``: every golden case of ``tests/data/reference_fidelity`` on the device: float64 networks fed the
   reference's float64 faces and empty-prompt embedding (decoded faces within 1e-10 of the golden float64 run),
   and a float32 ``predict`` (TF32 off) against the golden float32 cube output within 4x the larger float32
   rounding error (ours against our float64 run, the reference's against its float64 run), as in
   ``tests/test_reference_fidelity.py``.
2. ``infer``: the released size (faces of 768 px, 2048x1024 output) of the full SD-2 architecture with random
   weights (speed does not depend on the values), fp32 / fp16 / bf16, eager and ``torch.compile``: seconds per
   panorama (median of ``--repeats`` after warm-up; compile time reported separately) and peak memory; eager
   also with the exact tiled VAE encoder and decoder (``Pager.enable_tiled_vae``, "tiled").
3. ``attention``: the bf16 eager run with the xformers backend, when xformers imports.
4. ``train``: seconds per training step (forward through VAE encoder, UNet and decoder, loss, backward into the
   UNet, AdamW) at ``--train_face`` px, bf16 autocast, and its peak memory.
5. ``video``: ``pager video``'s loop (:func:`pager.video.process_video`) over ``--video_frames`` synthetic frames
   at the released size (bf16), batches of ``--video_batch``: frames/s and peak memory.

``--cpu-smoke`` runs every step on the CPU with the tiny test model (faces of 32 px), to test this script
without a GPU. A time budget (``--budget_s``, default 420 s after start-up) skips the remaining configurations
with a note rather than overrunning.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

ROWS: List[Dict[str, Any]] = []
T0 = time.perf_counter()


def row(step: str, config: str, seconds: Optional[float] = None, peak_mb: Optional[float] = None, note: str = "") -> None:
    r = dict(step=step, config=config, seconds=seconds, peak_mb=peak_mb, note=note)
    ROWS.append(r)
    s = f"{seconds:.4f}" if seconds is not None else "-"
    p = f"{peak_mb:.0f}" if peak_mb is not None else "-"
    print(f"[{time.perf_counter() - T0:6.1f}s] {step:<10} {config:<28} {s:>10} {p:>10}  {note}", flush=True)


class Memory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` or CPU resident memory above its start (MB)."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def __enter__(self) -> "Memory":
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            from inference import PeakRSS

            self._rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._rss.__exit__(*exc)
            self.peak = self._rss.added


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------
def fidelity(device: Any, max_cases: Optional[int] = None) -> None:
    import torch
    from safetensors.torch import load_file

    from pager.model import Pager

    data = REPO / "tests" / "data" / "reference_fidelity"
    if not (data / "cases.json").is_file():
        row("fidelity", "golden set", note=f"skipped: {data} not found")
        return
    cases = sorted(json.loads((data / "cases.json").read_text()))
    if max_cases:  # spread over the list (RoPE / uv / normals / reference-written cases)
        cases = [cases[round(i * (len(cases) - 1) / max(max_cases - 1, 1))] for i in range(min(max_cases, len(cases)))]
    g = load_file(str(data / "reference_outputs.safetensors"))
    idx = g["meta/face_pixel_index"].to(device)
    eps32 = torch.finfo(torch.float32).eps

    def sub(x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-2, idx).index_select(-1, idx)

    def cube(x: torch.Tensor, modality: str) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) if modality == "depth" else x

    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    failures = []
    worst64 = worst32 = 0.0
    t = time.perf_counter()
    try:
        for case in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m32 = Pager.from_pretrained(str(data / f"ck_{case}"), device=device)
                m64 = Pager.from_pretrained(str(data / f"ck_{case}"), device=device).to(torch.float64)
            modality = m32.modalities[0]
            rec: Dict[str, torch.Tensor] = {}
            decode = m32.decode
            m32.decode = lambda z: rec.setdefault("decoded", decode(z))  # type: ignore[method-assign]
            with torch.no_grad():
                m32.predict(g["input/erp"].to(device), face_size=64)
                m64.empty_prompt_embedding = g["empty_encoding/fp64"].to(device)
                if f"{case}/fp32/pe_cubemap" in g:
                    m64._uv_cache[(8, str(device), torch.float64)] = g[f"{case}/fp32/pe_cubemap"].double().to(device)
                dec64 = m64.decode(m64.predict_latent(modality, m64.encode_rgb(g["input/faces_fp64"].to(device))))
            err64 = (sub(dec64).cpu() - g[f"{case}/fp64/decoded_subsampled"]).abs().max().item()
            c32 = sub(cube(rec["decoded"].double(), modality)).cpu()
            ref32 = g[f"{case}/fp32/cube_out_subsampled"].double()
            ref64 = cube(g[f"{case}/fp64/decoded_subsampled"], modality)
            own = (c32 - sub(cube(dec64, modality)).cpu()).abs().max().item()  # our float32 vs our float64 run
            tol = 4.0 * max(own, (ref32 - ref64).abs().max().item(), eps32 * ref32.abs().max().item())
            err32 = (c32 - ref32).abs().max().item()
            worst64, worst32 = max(worst64, err64), max(worst32, err32 / tol)
            if err64 > 1e-10 or err32 > tol:
                failures.append(f"{case}: fp64 {err64:.2g}, fp32 {err32:.2g} (tol {tol:.2g})")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    note = (f"{len(cases)} cases ({', '.join(cases)}): {'PASS' if not failures else 'FAIL ' + '; '.join(failures)}; worst fp64 |err| "
            f"{worst64:.2g} (bound 1e-10), worst fp32 err/tol {worst32:.2f}")
    row("fidelity", f"golden set on {device.type}", time.perf_counter() - t, None, note)


# ---------------------------------------------------------------------------------------------------------
def build(args: argparse.Namespace, device: Any):
    import torch

    if args.cpu_smoke:
        from pager.model import Pager
        from pager.model.tiny import build_tiny_checkpoint

        tmp = tempfile.mkdtemp(prefix="pager_gpu_check_")
        os.environ.setdefault("PAGER_CACHE_DIR", str(Path(tmp) / "cache"))
        ck = build_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        return Pager.from_pretrained(str(ck), device=device)
    from inference import build_model

    with tempfile.TemporaryDirectory() as tmp:
        return build_model("full", tmp).to(device)


def uncompile(model: Any) -> None:
    for mod in [model.vae.encoder, model.vae.decoder, *model.unets.values()]:
        if getattr(mod, "_compiled_call_impl", None) is not None:
            mod._compiled_call_impl = None
    model.compiled = False


def timed(fn: Callable[[], Any], device: Any, repeats: int) -> List[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def inference(args: argparse.Namespace, device: Any) -> None:
    import torch

    from pager.model.panorama_layers import set_attention_backend
    from pager.model.pager_model import xformers_available

    fs = args.face
    x = torch.rand(1, 3, args.out_h, args.out_h * 2, generator=torch.Generator().manual_seed(0))
    x = (x * 2 - 1).to(device)
    t = time.perf_counter()
    model = build(args, device)
    row("build", "model", time.perf_counter() - t, None, "full-size SD-2 UNet + SD VAE" if not args.cpu_smoke else "tiny model")
    for dtype_name in args.dtypes:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
        model.to(dtype=dtype)
        variants = [(False, False), (False, True)] + ([(True, False)] if dtype_name in args.compile_dtypes else [])
        for comp, tiled in variants:
            cfg = f"face {fs} {dtype_name}{' compile' if comp else ''}{' tiled' if tiled else ''}"
            if time.perf_counter() - T0 > args.budget_s:
                row("infer", cfg, note="skipped: time budget spent")
                continue
            try:
                extra = ""
                model.enable_tiled_vae(tiled)
                if comp:
                    model.optimize(compile=True)
                    t = time.perf_counter()
                    with torch.no_grad():
                        model.predict(x, face_size=fs)
                    sync(device)
                    extra = f"first call (compiling) {time.perf_counter() - t:.1f} s"
                else:
                    with torch.no_grad():
                        model.predict(x, face_size=fs)  # warm-up
                with Memory(device) as mem, torch.no_grad():
                    times = timed(lambda: model.predict(x, face_size=fs), device, args.repeats)
                row("infer", cfg, statistics.median(times), mem.peak, extra)
            except Exception as exc:  # report and go on: one failing configuration must not hide the others
                row("infer", cfg, note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            finally:
                model.enable_tiled_vae(False)
                if comp:
                    uncompile(model)
                    torch._dynamo.reset()
    # attention backends, bf16 (fp32 on the CPU smoke run) eager
    dtype_name = "bf16" if "bf16" in args.dtypes else args.dtypes[0]
    model.to(dtype={"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name])
    for backend in ("sdpa", "xformers"):
        cfg = f"face {fs} {dtype_name} {backend}"
        if backend == "xformers" and (not xformers_available() or device.type != "cuda"):
            row("attention", cfg, note="skipped: xformers not importable" if not xformers_available() else "skipped: needs CUDA")
            continue
        if time.perf_counter() - T0 > args.budget_s:
            row("attention", cfg, note="skipped: time budget spent")
            continue
        for net in [model.vae, *model.unets.values()]:
            set_attention_backend(net, backend)
        with torch.no_grad():
            model.predict(x, face_size=fs)
            with Memory(device) as mem:
                times = timed(lambda: model.predict(x, face_size=fs), device, args.repeats)
        row("attention", cfg, statistics.median(times), mem.peak)
    for net in [model.vae, *model.unets.values()]:
        set_attention_backend(net, "sdpa")
    del model


def training(args: argparse.Namespace, device: Any) -> None:
    import torch

    if time.perf_counter() - T0 > args.budget_s:
        row("train", f"face {args.train_face}", note="skipped: time budget spent")
        return
    model = build(args, device).float()
    unet = next(iter(model.unets.values()))
    unet.train()
    unet.requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    modality = model.modalities[0]
    fs = args.train_face
    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(1, 6, 3, fs, fs, generator=g) * 2 - 1).to(device)
    target = (torch.rand(1, 6, 3, fs, fs, generator=g) * 2 - 1).to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            pred = model.forward_faces(rgb, modality)
        loss = (pred.float() - target).square().mean()
        loss.backward()
        opt.step()

    try:
        step()
        with Memory(device) as mem:
            times = timed(step, device, args.train_steps)
        row("train", f"face {fs} bf16 autocast", statistics.median(times), mem.peak,
            f"{1.0 / statistics.median(times):.2f} steps/s (UNet AdamW, grads through the decoder)")
    except Exception as exc:
        row("train", f"face {fs}", note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")


def video(args: argparse.Namespace, device: Any) -> None:
    """``pager video``'s loop (pager.video.process_video: batches through PagerPipeline, alignment, arrays) on a
    folder of synthetic frames at the released size; frames/s of the prediction loop."""
    import numpy as np
    import torch
    from PIL import Image

    from pager.pipeline import PagerPipeline
    from pager.video import VideoOptions, open_source, process_video

    dtype_name = "bf16" if "bf16" in args.dtypes else args.dtypes[0]
    cfg = f"{args.video_frames} frames {args.out_h * 2}x{args.out_h} {dtype_name}"
    if time.perf_counter() - T0 > args.budget_s:
        row("video", cfg, note="skipped: time budget spent")
        return
    try:
        model = build(args, device).to(dtype={"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name])
        with tempfile.TemporaryDirectory() as tmp:
            frames = Path(tmp) / "frames"
            frames.mkdir()
            rng = np.random.default_rng(0)
            base = rng.integers(0, 256, (args.out_h, args.out_h * 2, 3), dtype=np.uint8)
            for i in range(args.video_frames):  # a yaw turn: the panorama rolled a little per frame
                Image.fromarray(np.roll(base, 8 * i, axis=1)).save(frames / f"{i:04d}.png")
            opts = VideoOptions(modalities=tuple(model.modalities), batch_size=args.video_batch, face_size=args.face,
                                videos=False)
            with Memory(device) as mem:
                info = process_video(PagerPipeline(model), open_source(str(frames)), Path(tmp) / "out", opts, progress=False)
        fps = float(info["frames_per_second"])
        row("video", cfg, 1.0 / fps, mem.peak, f"{fps:.2f} frames/s (batch {args.video_batch}, aligned, arrays written)")
    except Exception as exc:
        row("video", cfg, note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", "--smoke", dest="cpu_smoke", action="store_true",
                        help="tiny model on the CPU (tests this script; --smoke as every benchmark)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --cpu-smoke)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--compile_dtypes", nargs="*", default=None, choices=("fp32", "fp16", "bf16"),
                        help="dtypes also run with torch.compile (default: bf16 fp16 on the GPU, none in the smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--train_face", type=int, default=None)
    parser.add_argument("--train_steps", type=int, default=None)
    parser.add_argument("--budget_s", type=float, default=None,
                        help="skip what remains after this many seconds (default 420 on the GPU, none with --cpu-smoke)")
    parser.add_argument("--cases", type=int, default=None,
                        help="golden cases to check (default: all on the GPU, 2 with --cpu-smoke)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("fidelity", "infer", "train", "video"))
    parser.add_argument("--video_frames", type=int, default=None, help="frames of the video step (default 8; 3 smoke)")
    parser.add_argument("--video_batch", type=int, default=None, help="frames per batch of the video step (default 4; 2 smoke)")
    parser.add_argument("--json", default=None, help="also write the table rows to this JSON file")
    args = parser.parse_args(argv)

    import torch

    smoke = args.cpu_smoke
    device = torch.device(args.device or ("cpu" if smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run with --cpu-smoke to test the script on the CPU", file=sys.stderr)
        return 2
    if args.budget_s is None:
        args.budget_s = float("inf") if smoke else 420.0
    args.face = 32 if smoke else 768
    args.out_h = 64 if smoke else 1024
    args.dtypes = args.dtypes or (["fp32", "bf16"] if smoke else ["fp32", "fp16", "bf16"])
    if args.compile_dtypes is None:
        args.compile_dtypes = [] if smoke else ["bf16", "fp16"]
    args.repeats = args.repeats or (2 if smoke else 5)
    args.train_face = args.train_face or (32 if smoke else 384)
    args.train_steps = args.train_steps or (2 if smoke else 5)
    args.video_frames = args.video_frames or (3 if smoke else 8)
    args.video_batch = args.video_batch or (2 if smoke else 4)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"PaGeR gpu_check on {name}: torch {torch.__version__}, python {sys.version.split()[0]}; "
          f"{'SMOKE (tiny model)' if smoke else 'released size'}", flush=True)
    print(f"{'':9}{'step':<10} {'configuration':<28} {'seconds':>10} {'peak MB':>10}  note", flush=True)
    if "fidelity" not in args.skip:
        fidelity(device, args.cases or (2 if smoke else None))
    if "infer" not in args.skip:
        inference(args, device)
    if "train" not in args.skip:
        training(args, device)
    if "video" not in args.skip:
        video(args, device)
    print(f"\nPaGeR gpu_check summary ({name}; total {time.perf_counter() - T0:.0f} s)")
    print(f"{'step':<10} {'configuration':<28} {'seconds':>10} {'peak MB':>10}  note")
    for r in ROWS:
        s = f"{r['seconds']:.4f}" if r["seconds"] is not None else "-"
        p = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        print(f"{r['step']:<10} {r['config']:<28} {s:>10} {p:>10}  {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=name, rows=ROWS), indent=1))
    failed = any("FAIL" in r["note"] for r in ROWS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
